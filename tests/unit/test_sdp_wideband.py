"""SDP offer/answer with G.722 and Opus: rtpmap, fmtp, payload types, the clock-rate quirk,
telephone-event at each codec's clock rate (RFC 3551 §4.5.2, RFC 7587, RFC 4733 §2.1)."""

from __future__ import annotations

import pytest

from sipd.errors import MediaValueError, SdpNegotiationError
from sipd.sdp import Codec, build_offer, negotiate_answer, parse_sdp, process_answer
from sipd.session.negotiation import codecs_for


def crlf(text: str) -> bytes:
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines()).encode()


#: What baresip 3.x offers with its opus, g722 and g711 modules loaded.
BARESIP = crlf("""
    v=0
    o=- 1 2 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 4000 RTP/AVP 96 9 0 8 101
    a=rtpmap:96 opus/48000/2
    a=fmtp:96 stereo=1;sprop-stereo=1
    a=rtpmap:9 G722/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=ptime:20
    a=sendrecv
    """)


def offer_text(names: list[str], dtmf: bool = True) -> str:
    sdp = build_offer(
        "127.0.0.1", 30000, list(codecs_for(names, dtmf)), session_id=1, session_version=1
    )
    return sdp.to_bytes().decode()


def answer_to(offer: bytes, names: list[str]):  # type: ignore[no-untyped-def]
    return negotiate_answer(
        parse_sdp(offer),
        "127.0.0.1",
        30002,
        list(codecs_for(names, True)),
        session_id=2,
        session_version=1,
    )


def test_our_offer_lists_opus_g722_and_telephone_event_at_both_clocks() -> None:
    text = offer_text(["opus", "G722", "PCMU"])
    assert "m=audio 30000 RTP/AVP 111 9 0 110 101\r\n" in text
    for line in (
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 maxplaybackrate=48000;sprop-maxcapturerate=48000;stereo=0;"
        "sprop-stereo=0;useinbandfec=1",
        "a=rtpmap:9 G722/8000",  # 16 kHz audio, written as 8000 (RFC 3551 §4.5.2)
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:101 telephone-event/8000",
        "a=ptime:20",
    ):
        assert line + "\r\n" in text


def test_names_are_case_insensitive_and_telephone_event_follows_the_clocks() -> None:
    assert "telephone-event/48000" not in offer_text(["g722", "pcma"])
    assert "telephone-event/8000" not in offer_text(["OPUS"])
    assert "telephone-event" not in offer_text(["Opus", "G722"], dtmf=False)
    assert [c.name for c in codecs_for(["PCMU", "pcmu"], False)] == ["PCMU"]
    with pytest.raises(MediaValueError, match="G729"):
        codecs_for(["G729"], True)


def test_baresip_opus_offer_is_answered_with_its_payload_type_and_our_fmtp() -> None:
    result = answer_to(BARESIP, ["opus", "G722", "PCMU"])
    assert result.codec is not None
    assert (result.codec.name, result.codec.payload_type, result.codec.clock_rate) == (
        "opus",
        96,
        48000,
    )
    text = result.answer.to_bytes().decode()
    assert "m=audio 30002 RTP/AVP 96\r\n" in text  # no telephone-event/48000 offered
    assert "a=rtpmap:96 opus/48000/2\r\n" in text
    assert "useinbandfec=1" in text and "stereo=0" in text
    assert result.telephone_event_pt is None  # RFC 4733: only at the codec's clock rate


def test_g722_is_matched_at_8000_and_keeps_telephone_event_8000() -> None:
    result = answer_to(BARESIP, ["G722", "PCMU"])
    assert result.codec == Codec(9, "G722", 8000)
    assert result.telephone_event_pt == 101
    text = result.answer.to_bytes().decode()
    assert "m=audio 30002 RTP/AVP 9 101\r\n" in text
    assert "a=rtpmap:9 G722/8000\r\n" in text


def test_offerer_order_wins_but_only_among_our_codecs() -> None:
    result = answer_to(BARESIP, ["PCMA", "G722"])
    assert result.codec is not None and result.codec.name == "G722"  # baresip lists it first


def test_g722_at_16000_is_not_g722() -> None:
    """Some phones wrongly write G722/16000: it is a different clock, not our codec."""
    offer = BARESIP.replace(b"a=rtpmap:9 G722/8000", b"a=rtpmap:9 G722/16000")
    offer = offer.replace(b"96 9 0 8 101", b"9 101")
    with pytest.raises(SdpNegotiationError, match="no common codec"):
        answer_to(offer, ["G722"])


def test_opus_without_its_channel_count_is_still_opus_answered_with_2() -> None:
    offer = BARESIP.replace(b"a=rtpmap:96 opus/48000/2", b"a=rtpmap:96 opus/48000")
    result = answer_to(offer, ["opus"])
    assert result.codec is not None and result.codec.channels == 2
    assert b"a=rtpmap:96 opus/48000/2\r\n" in result.answer.to_bytes()


def test_other_channel_counts_must_match() -> None:
    assert not Codec(96, "L16", 16000, 2).matches(Codec(97, "L16", 16000, 1))
    assert Codec(96, "opus", 48000, 1).matches(Codec(111, "opus", 48000, 2))


def test_uac_reads_an_opus_answer_with_telephone_event_48000() -> None:
    offer = build_offer(
        "127.0.0.1",
        30000,
        list(codecs_for(["opus", "PCMU"], True)),
        session_id=1,
        session_version=1,
    )
    answer = parse_sdp(
        crlf("""
        v=0
        o=- 5 5 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        m=audio 5000 RTP/AVP 111 110
        a=rtpmap:111 opus/48000/2
        a=fmtp:111 useinbandfec=1
        a=rtpmap:110 telephone-event/48000
        a=fmtp:110 0-16
        """)
    )
    result = process_answer(offer, answer)
    assert result.codec is not None and result.codec.name == "opus"
    assert result.codec.clock_rate == 48000 and result.telephone_event_pt == 110
