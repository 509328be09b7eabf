"""SDES (RFC 4568): a=crypto lines, key generation, the answerer's choice and the srtp policy."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipd.errors import SdpNegotiationError, SipdError, SipdValueError
from sipd.sdp import PCMU, build_offer, parse_sdp
from sipd.sdp.crypto import (
    RTP_AVP,
    RTP_SAVP,
    CryptoAttribute,
    NegotiatedSrtp,
    SrtpAction,
    SrtpKeys,
    SrtpNegotiationError,
    SrtpPolicy,
    SrtpSuite,
    UnusableCrypto,
    answer_srtp,
    crypto_attributes,
    offer_srtp,
    parse_crypto,
    process_srtp_answer,
    select_crypto,
)
from sipd.sdp.model import Attribute, MediaDescription

S80 = SrtpSuite.AES_CM_128_HMAC_SHA1_80
S32 = SrtpSuite.AES_CM_128_HMAC_SHA1_32
# The keys of RFC 4568's offer (§3 / §8) and answer examples: 40 base64 chars each.
RFC_OFFER_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
RFC_ANSWER_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
KEY_A = base64.b64encode(bytes(range(30))).decode()
KEY_B = base64.b64encode(bytes(range(100, 130))).decode()


def line(tag: int, suite: str, key: str, tail: str = "") -> str:
    return f"{tag} {suite} inline:{key}{tail}"


def audio(proto: str, *crypto: str) -> MediaDescription:
    """An offered audio m= line with the given a=crypto values."""
    media = MediaDescription("audio", 49170, proto, ["0"])
    media.attributes = [Attribute("crypto", value) for value in crypto]
    return media


# --- parsing and formatting ------------------------------------------------------------


def test_rfc_4568_example_key_is_30_bytes_and_its_mki_is_refused() -> None:
    """The RFC's example line has a valid 30-byte key (16 key + 14 salt, 40 base64 chars),
    a 2^20 lifetime and an MKI; the MKI is what makes it unusable, and the reason says so."""
    assert len(RFC_ANSWER_KEY) == 40 and len(base64.b64decode(RFC_ANSWER_KEY)) == 30
    parsed = parse_crypto(line(1, S80, RFC_ANSWER_KEY, "|2^20|1:4"))
    assert isinstance(parsed, UnusableCrypto)
    assert (parsed.tag, parsed.suite) == (1, S80)
    assert "MKI" in parsed.reason
    assert "bytes" not in parsed.reason  # the length check passed
    without_mki = parse_crypto(line(1, S80, RFC_ANSWER_KEY, "|2^20"))
    assert isinstance(without_mki, CryptoAttribute)
    assert without_mki.keys.key_salt == base64.b64decode(RFC_ANSWER_KEY)
    assert len(without_mki.keys.master_key) == 16 and len(without_mki.keys.master_salt) == 14
    assert without_mki.lifetime == 1 << 20


def test_rfc_4568_offer_example_parses_without_its_mki() -> None:
    parsed = parse_crypto(line(1, S80, RFC_OFFER_KEY))
    assert isinstance(parsed, CryptoAttribute)
    assert (parsed.tag, parsed.suite, parsed.lifetime) == (1, S80, None)
    assert parsed.keys.to_base64() == RFC_OFFER_KEY


def test_formats_a_known_key_exactly() -> None:
    attr = CryptoAttribute(1, SrtpKeys(S80, bytes(range(30))))
    assert (
        attr.to_value()
        == "1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
    )
    assert attr.to_attribute() == Attribute("crypto", attr.to_value())
    assert CryptoAttribute(7, SrtpKeys(S32, bytes(30)), 1 << 31).to_value().endswith("|2^31")
    assert CryptoAttribute(7, SrtpKeys(S32, bytes(30)), 1000).to_value().endswith("|1000")


@pytest.mark.parametrize("suite", list(SrtpSuite))
@pytest.mark.parametrize("lifetime", [None, 1 << 31, 1 << 48, 1000])
def test_parse_and_format_round_trip(suite: SrtpSuite, lifetime: int | None) -> None:
    attr = CryptoAttribute(12, SrtpKeys.generate(suite), lifetime)
    text = attr.to_value()
    assert len(attr.keys.to_base64()) == 40
    parsed = parse_crypto(text)
    assert parsed == attr
    assert isinstance(parsed, CryptoAttribute) and parsed.to_value() == text


def test_fields_may_be_separated_by_any_whitespace() -> None:
    """RFC 4568 §9.1: 1*WSP between the fields."""
    assert parse_crypto(f"  1 \t{S80}   inline:{KEY_A}  ") == parse_crypto(line(1, S80, KEY_A))


def test_lifetime_may_be_decimal_or_a_power_of_two() -> None:
    decimal = parse_crypto(line(1, S80, KEY_A, "|1048576"))
    power = parse_crypto(line(1, S80, KEY_A, "|2^20"))
    assert isinstance(decimal, CryptoAttribute) and isinstance(power, CryptoAttribute)
    assert decimal.lifetime == power.lifetime == 1 << 20


def test_optional_and_hint_session_parameters_are_ignored() -> None:
    """RFC 4568 §6.3.6: WSH is a hint; §6.3.7: a '-' parameter may be ignored."""
    parsed = parse_crypto(line(3, S32, KEY_A) + " WSH=128 -X_VENDOR=1")
    assert isinstance(parsed, CryptoAttribute) and parsed.suite is S32


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "no value"),
        ("", "no value"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A, "tag"),
        ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_A, "tag"),
        ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag"),
        (line(1, "AES_256_CM_HMAC_SHA1_80", KEY_A), "AES_256_CM_HMAC_SHA1_80 is not supported"),
        (line(1, "F8_128_HMAC_SHA1_80", KEY_A), "F8_128_HMAC_SHA1_80 is not supported"),
        (line(1, "aes_cm_128_hmac_sha1_80", KEY_A), "not supported"),
        ("1 AES_CM_128_HMAC_SHA1_80 uri:http://example.com/key", "not inline"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + KEY_A, "not inline"),
        (line(1, S80, "not*base64*at*all!!!!!!!!!!!!!!!!!!!!!!"), "base64"),
        (line(1, S80, KEY_A[:-1]), "base64"),
        (line(1, S80, base64.b64encode(bytes(29)).decode()), "29 bytes"),
        (line(1, S80, base64.b64encode(bytes(31)).decode()), "31 bytes"),
        (line(1, S80, base64.b64encode(bytes(46)).decode()), "46 bytes"),
        (line(1, S80, KEY_A, "|2^49"), "2^48"),
        (line(1, S80, KEY_A, "|2^9999999999"), "2^48"),
        (line(1, S80, KEY_A, "|9" * 1 + "9" * 19), "2^48"),
        (line(1, S80, KEY_A, "|0"), "outside 1..2^48"),
        (line(1, S80, KEY_A, "|2^x"), "lifetime"),
        (line(1, S80, KEY_A, "|1:4"), "MKI"),
        (line(1, S80, KEY_A, "|2^31|1:4"), "MKI"),
        (line(1, S80, KEY_A, "|1:0"), "malformed"),
        (line(1, S80, KEY_A, "|1:129"), "malformed"),
        (line(1, S80, KEY_A, "|1:0128"), "malformed"),
        (line(1, S80, KEY_A, "|1:128"), "MKI (master key identifier) is not supported"),
        (line(1, S80, KEY_A, "|1:4|2^20"), "MKI must come last"),
        (line(1, S80, KEY_A, "|2^20|2^20"), "lifetime must come before"),
        (line(1, S80, KEY_A, "|2^20|1:4|x"), "too many"),
        (line(1, S80, KEY_A, "|2^20|1:4;inline:" + KEY_B + "|2^20|2:4"), "several keys"),
        (line(1, S80, KEY_A) + " KDR=1", "KDR"),
        (line(1, S80, KEY_A) + " UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
        (line(1, S80, KEY_A) + " UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTCP"),
        (line(1, S80, KEY_A) + " UNAUTHENTICATED_SRTP", "UNAUTHENTICATED_SRTP"),
        (line(1, S80, KEY_A) + " FEC_ORDER=FEC_SRTP", "FEC_ORDER"),
        (line(1, S80, KEY_A) + " FEC_KEY=inline:" + KEY_B, "FEC_KEY"),
        (line(1, S80, KEY_A) + " NEW_PARAM=1", "unknown session parameter NEW_PARAM"),
        (line(1, S80, KEY_A) + " WSH=32", "WSH"),
        (line(1, S80, KEY_A) + " WSH", "WSH"),
        (line(1, S80, KEY_A) + " inline:" + KEY_B, "malformed"),
    ],
)
def test_unusable_lines_give_a_reason_and_no_key(value: str | None, fragment: str) -> None:
    parsed = parse_crypto(value)
    assert isinstance(parsed, UnusableCrypto), parsed
    assert fragment in parsed.reason
    shown = f"{parsed!r} {parsed}"
    for key in (KEY_A, KEY_B, KEY_A[:-1], "not*base64"):
        assert key not in shown


def test_a_key_where_the_suite_should_be_is_not_quoted() -> None:
    """A misplaced key would look like an unknown suite name; it must not reach the log."""
    parsed = parse_crypto(f"1 {RFC_ANSWER_KEY} inline:{KEY_A}")
    assert isinstance(parsed, UnusableCrypto)
    assert parsed.suite is None and RFC_ANSWER_KEY not in parsed.reason


@given(st.text(max_size=200))
def test_parsing_never_raises_on_any_text(text: str) -> None:
    assert isinstance(parse_crypto(text), CryptoAttribute | UnusableCrypto)


@given(
    tag=st.text("0123456789x", min_size=0, max_size=11),
    suite=st.sampled_from([str(S80), str(S32), "AES_256_CM_HMAC_SHA1_80", "?"]),
    key=st.text("ABCDEFabcdef0123456789+/=", max_size=48),
    tail=st.lists(st.text("0123456789^:|;x=-WSHKDR", max_size=12), max_size=4),
)
def test_parsing_never_raises_on_near_miss_lines(
    tag: str, suite: str, key: str, tail: list[str]
) -> None:
    parsed = parse_crypto(f"{tag} {suite} inline:{key}{'|'.join(tail)}")
    assert isinstance(parsed, CryptoAttribute | UnusableCrypto)


def test_crypto_attributes_reads_a_parsed_sdp_in_order_and_flags_repeated_tags() -> None:
    body = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/SAVP 0\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_ANSWER_KEY}|2^20|1:4\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}\r\n"
        "a=crypto\r\na=sendrecv\r\n"
    )
    media = parse_sdp(body).media[0]
    found = crypto_attributes(media)
    assert [type(f) for f in found] == [
        UnusableCrypto,
        CryptoAttribute,
        UnusableCrypto,
        UnusableCrypto,
    ]
    assert isinstance(found[1], CryptoAttribute) and found[1].suite is S32
    assert isinstance(found[2], UnusableCrypto) and "repeated" in found[2].reason


# --- keys and their privacy ------------------------------------------------------------


def test_generated_keys_are_fresh_and_of_the_suite_length() -> None:
    keys = {SrtpKeys.generate(S80).key_salt for _ in range(50)}
    assert len(keys) == 50 and {len(k) for k in keys} == {30}


def test_keys_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(SipdValueError, match="30 bytes"):
        SrtpKeys(S80, bytes(16))
    with pytest.raises(SipdValueError):
        CryptoAttribute(10**9, SrtpKeys.generate())
    with pytest.raises(SipdValueError, match="one suite"):
        NegotiatedSrtp(1, SrtpKeys.generate(S80), SrtpKeys.generate(S32))


def test_repr_and_str_never_show_key_material() -> None:
    offer = offer_srtp("required")
    decision = answer_srtp("required", audio(RTP_SAVP, *(c.to_value() for c in offer.crypto)))
    assert decision.keys is not None and decision.crypto is not None
    objects: list[object] = [offer, decision, decision.keys, decision.crypto, *offer.crypto]
    secrets = [k.keys for k in offer.crypto] + [decision.keys.local, decision.keys.remote]
    for obj in objects:
        for shown in (repr(obj), str(obj), f"{obj}"):
            for keys in secrets:
                assert keys.to_base64() not in shown
                assert keys.key_salt.hex() not in shown
                assert repr(keys.key_salt) not in shown
    assert "hidden" in repr(secrets[0])


# --- the answerer's choice (RFC 4568 §7.1.2) -------------------------------------------


def test_answerer_takes_the_first_usable_line_with_its_tag_and_suite_and_a_new_key() -> None:
    offered = [
        parse_crypto(line(1, "AES_256_CM_HMAC_SHA1_80", KEY_A)),
        parse_crypto(line(2, S32, KEY_A, "|1:4")),
        parse_crypto(line(3, S32, KEY_B)),
        parse_crypto(line(4, S80, KEY_A)),
    ]
    chosen = select_crypto(offered)
    assert chosen is not None
    ours, keys = chosen
    assert (ours.tag, ours.suite) == (3, S32)
    assert keys.remote.to_base64() == KEY_B
    assert keys.local == ours.keys and keys.local != keys.remote
    again = select_crypto(offered)
    assert again is not None and again[0].keys != ours.keys  # fresh every time


def test_answerer_honours_its_own_suite_list_and_can_keep_its_key() -> None:
    offered = [parse_crypto(line(1, S80, KEY_A)), parse_crypto(line(2, S32, KEY_B))]
    only_32 = select_crypto(offered, [S32])
    assert only_32 is not None and only_32[0].tag == 2
    assert select_crypto(offered, []) is None
    assert select_crypto([]) is None
    first = select_crypto(offered)
    assert first is not None
    kept = select_crypto(offered, previous=first[1])
    assert kept is not None and kept[1].local == first[1].local
    other_tag = select_crypto(offered, [S32], previous=first[1])
    assert other_tag is not None and other_tag[1].local != first[1].local


# --- the policy: what we offer ----------------------------------------------------------


def test_offer_off_is_plain_avp_without_crypto() -> None:
    offer = offer_srtp("off")
    assert (offer.proto, offer.crypto, offer.attributes()) == (RTP_AVP, (), [])


@pytest.mark.parametrize(("policy", "proto"), [("optional", RTP_AVP), ("required", RTP_SAVP)])
def test_offer_with_srtp_lists_each_suite_with_its_own_key(policy: str, proto: str) -> None:
    offer = offer_srtp(policy)
    assert offer.proto == proto
    assert [(c.tag, c.suite) for c in offer.crypto] == [(1, S80), (2, S32)]
    assert len({c.keys for c in offer.crypto}) == 2
    assert offer_srtp(policy).crypto[0].keys != offer.crypto[0].keys
    media = MediaDescription("audio", 4000, RTP_AVP, ["0"], attributes=[Attribute("crypto", "x")])
    offer.apply(media)
    assert media.proto == proto
    assert [a.value for a in media.attributes] == [c.to_value() for c in offer.crypto]


def test_policy_names_are_checked() -> None:
    assert SrtpPolicy.parse(" Optional ") is SrtpPolicy.OPTIONAL
    assert SrtpPolicy.parse(SrtpPolicy.REQUIRED) is SrtpPolicy.REQUIRED
    with pytest.raises(SipdValueError, match="'off', 'optional' or 'required'"):
        SrtpPolicy.parse("yes")
    with pytest.raises(SipdValueError):
        offer_srtp("sometimes")


# --- the policy: answering an offer ----------------------------------------------------

GOOD = line(5, S80, KEY_A)
BAD = line(5, S80, KEY_A, "|1:4")


@pytest.mark.parametrize(
    ("policy", "proto", "crypto", "action", "answer_proto"),
    [
        ("off", RTP_AVP, [], SrtpAction.PLAIN, RTP_AVP),
        ("off", RTP_AVP, [GOOD], SrtpAction.PLAIN, RTP_AVP),
        ("off", RTP_SAVP, [GOOD], SrtpAction.REFUSE, None),
        ("off", RTP_SAVP, [], SrtpAction.REFUSE, None),
        ("optional", RTP_AVP, [], SrtpAction.PLAIN, RTP_AVP),
        ("optional", RTP_AVP, [BAD], SrtpAction.PLAIN, RTP_AVP),
        ("optional", RTP_AVP, [GOOD], SrtpAction.SRTP, RTP_AVP),
        ("optional", RTP_SAVP, [GOOD], SrtpAction.SRTP, RTP_SAVP),
        ("optional", RTP_SAVP, [BAD], SrtpAction.REFUSE, None),
        ("optional", RTP_SAVP, [], SrtpAction.REFUSE, None),
        ("required", RTP_AVP, [], SrtpAction.REFUSE, None),
        ("required", RTP_AVP, [BAD], SrtpAction.REFUSE, None),
        ("required", RTP_AVP, [GOOD], SrtpAction.SRTP, RTP_AVP),
        ("required", RTP_SAVP, [GOOD], SrtpAction.SRTP, RTP_SAVP),
        ("required", RTP_SAVP, [BAD, GOOD.replace("5 ", "6 ", 1)], SrtpAction.SRTP, RTP_SAVP),
        ("required", RTP_SAVP, [BAD], SrtpAction.REFUSE, None),
        ("required", RTP_SAVP, [], SrtpAction.REFUSE, None),
    ],
)
def test_answer_decision_per_policy(
    policy: str, proto: str, crypto: list[str], action: SrtpAction, answer_proto: str | None
) -> None:
    decision = answer_srtp(policy, audio(proto, *crypto))
    assert decision.action is action, decision.reason
    assert decision.proto == answer_proto
    assert decision.reason
    if action is SrtpAction.SRTP:
        assert decision.secure and decision.keys is not None and decision.crypto is not None
        assert decision.crypto.tag == decision.keys.tag
        assert decision.keys.remote.to_base64() == KEY_A
        assert decision.crypto.keys == decision.keys.local
        assert decision.attributes() == [decision.crypto.to_attribute()]
    else:
        assert (decision.keys, decision.crypto, decision.attributes()) == (None, None, [])
    if action is SrtpAction.REFUSE:
        error = decision.error()
        assert decision.refused and isinstance(error, SrtpNegotiationError)
        assert isinstance(error, SdpNegotiationError)
        assert isinstance(error, SipdError) and error.status == 488
        assert str(error) == decision.reason


def test_a_refusal_says_why_the_key_was_unusable() -> None:
    decision = answer_srtp("required", audio(RTP_SAVP, BAD))
    assert "MKI" in decision.reason and "crypto line 5" in decision.reason
    assert "'required'" in answer_srtp("required", audio(RTP_AVP)).reason


@pytest.mark.parametrize("proto", ["RTP/SAVPF", "UDP/TLS/RTP/SAVP", "RTP/AVPF"])
@pytest.mark.parametrize("policy", ["off", "optional", "required"])
def test_other_transports_are_refused(proto: str, policy: str) -> None:
    decision = answer_srtp(policy, audio(proto, GOOD))
    assert decision.refused and proto in decision.reason


def test_answer_sdp_carries_the_decision() -> None:
    media = MediaDescription("audio", 5000, RTP_AVP, ["0"])
    decision = answer_srtp("optional", audio(RTP_SAVP, GOOD))
    decision.apply(media)
    assert media.proto == RTP_SAVP
    assert [a.name for a in media.attributes] == ["crypto"]
    assert media.attributes[0].value is not None
    assert media.attributes[0].value.startswith("5 AES_CM_128_HMAC_SHA1_80 inline:")


# --- the policy: reading the answer to our offer (RFC 4568 §7.1.3) -----------------------


@pytest.mark.parametrize(
    ("policy", "proto", "crypto", "action"),
    [
        ("off", RTP_AVP, [], SrtpAction.PLAIN),
        ("off", RTP_AVP, [line(1, S80, KEY_B)], SrtpAction.PLAIN),
        ("off", RTP_SAVP, [line(1, S80, KEY_B)], SrtpAction.REFUSE),
        ("optional", RTP_AVP, [], SrtpAction.PLAIN),
        ("optional", RTP_AVP, [line(1, S80, KEY_B)], SrtpAction.SRTP),
        ("optional", RTP_SAVP, [line(2, S32, KEY_B)], SrtpAction.SRTP),
        ("optional", RTP_SAVP, [], SrtpAction.REFUSE),
        ("required", RTP_SAVP, [line(1, S80, KEY_B)], SrtpAction.SRTP),
        ("required", RTP_SAVP, [], SrtpAction.REFUSE),
        ("required", RTP_AVP, [], SrtpAction.REFUSE),
        ("required", RTP_SAVP, [line(9, S80, KEY_B)], SrtpAction.REFUSE),
        ("required", RTP_SAVP, [line(1, S32, KEY_B)], SrtpAction.REFUSE),
        ("required", RTP_SAVP, [line(1, S80, KEY_B, "|1:4")], SrtpAction.REFUSE),
        ("optional", RTP_AVP, [line(1, S80, KEY_B, "|1:4")], SrtpAction.REFUSE),
        ("required", "RTP/SAVPF", [line(1, S80, KEY_B)], SrtpAction.REFUSE),
    ],
)
def test_answer_to_our_offer_per_policy(
    policy: str, proto: str, crypto: list[str], action: SrtpAction
) -> None:
    offer = offer_srtp(policy)
    decision = process_srtp_answer(offer, audio(proto, *crypto))
    assert decision.action is action, decision.reason
    assert decision.proto is None and decision.crypto is None
    if action is SrtpAction.SRTP:
        assert decision.keys is not None
        ours = next(c for c in offer.crypto if c.tag == decision.keys.tag)
        assert decision.keys.local == ours.keys
        assert decision.keys.remote.to_base64() == KEY_B
    else:
        assert decision.keys is None


def test_answer_refusals_cite_the_rule() -> None:
    offer = offer_srtp("required")
    unknown_tag = process_srtp_answer(offer, audio(RTP_SAVP, line(9, S80, KEY_B)))
    assert "tag 9" in unknown_tag.reason and "§7.1.3" in unknown_tag.reason
    wrong_suite = process_srtp_answer(offer, audio(RTP_SAVP, line(1, S32, KEY_B)))
    assert S32 in wrong_suite.reason and S80 in wrong_suite.reason


def test_offer_and_answer_through_sdp_text_give_mirrored_keys() -> None:
    """Our offer, serialised and parsed by the peer, answered, and read back: each side
    sends with its own key and receives with the other's."""
    for policy in ("optional", "required"):
        offer = offer_srtp(policy)
        offer_sdp = build_offer("192.0.2.1", 4000, [PCMU], session_id=1, session_version=1)
        offer.apply(offer_sdp.media[0])
        received = parse_sdp(offer_sdp.to_bytes())
        decision = answer_srtp(policy, received.media[0])
        assert decision.secure and decision.keys is not None
        answer_sdp = build_offer("192.0.2.2", 5000, [PCMU], session_id=2, session_version=1)
        decision.apply(answer_sdp.media[0])
        back = process_srtp_answer(offer, parse_sdp(answer_sdp.to_bytes()).media[0])
        assert back.secure and back.keys is not None
        assert back.keys.local == decision.keys.remote
        assert back.keys.remote == decision.keys.local
        assert (back.keys.tag, back.keys.suite) == (1, S80)
        assert answer_sdp.media[0].proto == offer.proto
