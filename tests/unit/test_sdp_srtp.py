"""SRTP inside the offer/answer exchange (sipd.sdp.offer_answer with sipd.sdp.crypto).

The policy decides the offer's proto and crypto lines; the answerer's choice
ends up in ``NegotiationResult.srtp``; the offerer reads the policy and its
own keys back from its offer; a re-answer keeps our key.
"""

from __future__ import annotations

import pytest

from sipd.errors import SdpNegotiationError
from sipd.sdp import PCMU, build_offer, negotiate_answer, parse_sdp, process_answer, reoffer
from sipd.sdp.crypto import CryptoAttribute, SrtpSuite, crypto_attributes


def _offer(policy: str) -> bytes:
    return build_offer("127.0.0.1", 4000, [PCMU], session_id=1, session_version=1, srtp=policy)


def _answer(offer: bytes, policy: str, previous=None):  # type: ignore[no-untyped-def]
    return negotiate_answer(
        parse_sdp(offer),
        "127.0.0.1",
        5000,
        [PCMU],
        session_id=2,
        session_version=1,
        srtp=policy,
        previous_srtp=previous,
    )


def test_each_policy_shapes_the_offer() -> None:
    off, optional, required = (
        parse_sdp(_offer(p).to_bytes()) for p in ("off", "optional", "required")
    )
    assert off.audio is not None and off.audio.proto == "RTP/AVP"
    assert not crypto_attributes(off.audio)
    assert optional.audio is not None and optional.audio.proto == "RTP/AVP"
    assert optional.audio is not None and required.audio is not None
    suites = [line.suite for line in crypto_attributes(optional.audio)]  # type: ignore[union-attr]
    assert suites == [SrtpSuite.AES_CM_128_HMAC_SHA1_80, SrtpSuite.AES_CM_128_HMAC_SHA1_32]
    assert required.audio.proto == "RTP/SAVP" and len(crypto_attributes(required.audio)) == 2


def test_both_sides_end_with_mirrored_keys() -> None:
    offer = _offer("required")
    answered = _answer(offer.to_bytes(), "optional")
    assert answered.srtp is not None
    read = process_answer(offer, parse_sdp(answered.answer.to_bytes()))
    assert read.srtp is not None
    assert read.srtp.local == answered.srtp.remote and read.srtp.remote == answered.srtp.local
    assert read.srtp.tag == answered.srtp.tag == 1


def test_a_plain_answer_to_an_optional_offer_is_plain_rtp() -> None:
    offer = _offer("optional")
    answered = _answer(offer.to_bytes(), "off")
    assert answered.srtp is None
    assert process_answer(offer, parse_sdp(answered.answer.to_bytes())).srtp is None


def test_a_plain_answer_to_a_required_offer_is_refused() -> None:
    offer = _offer("required")
    answer = parse_sdp(_offer("off").to_bytes())  # RTP/AVP, no crypto, as a careless peer
    with pytest.raises(SdpNegotiationError, match="no a=crypto line"):
        process_answer(offer, answer)


def test_an_answer_with_a_tag_we_did_not_offer_is_refused() -> None:
    offer = _offer("required")
    answered = _answer(offer.to_bytes(), "required")
    text = answered.answer.to_bytes().replace(b"a=crypto:1 ", b"a=crypto:7 ")
    with pytest.raises(SdpNegotiationError, match="tag 7 is not one we offered"):
        process_answer(offer, parse_sdp(text))


def test_srtp_off_refuses_an_savp_offer_and_says_how_to_take_it() -> None:
    with pytest.raises(SdpNegotiationError, match="needs srtp='optional' or 'required'"):
        _answer(_offer("required").to_bytes(), "off")


def test_a_savp_stream_without_keys_is_rejected_and_the_next_stream_is_used() -> None:
    plain = _offer("off").to_bytes().decode()
    audio = plain[plain.index("m=audio") :]
    text = plain.replace("m=audio 4000 RTP/AVP", "m=audio 4000 RTP/SAVP", 1) + audio
    answered = _answer(text.encode(), "optional")
    assert [m.port for m in answered.answer.media] == [0, 5000]
    assert answered.srtp is None


def test_a_re_answer_keeps_our_key_and_a_reoffer_keeps_the_offers() -> None:
    offer = _offer("required")
    first = _answer(offer.to_bytes(), "required")
    again = _answer(reoffer(offer, direction="sendonly").to_bytes(), "required", first.srtp)
    assert again.srtp == first.srtp
    held = reoffer(offer, direction="sendonly")
    assert held.audio is not None and offer.audio is not None
    ours = [line for line in crypto_attributes(held.audio) if isinstance(line, CryptoAttribute)]
    assert ours == crypto_attributes(offer.audio)
