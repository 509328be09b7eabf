"""Tests of sipd.sdp: SDP parse/serialise (RFC 8866) and offer/answer (RFC 3264)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipd.errors import SdpError, SdpNegotiationError, SipdError
from sipd.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Connection,
    Direction,
    NegotiationResult,
    SessionDescription,
    build_offer,
    is_remote_hold,
    negotiate_answer,
    parse_sdp,
    process_answer,
    reoffer,
)


def crlf(text: str) -> bytes:
    """Write a fixture one line per line and send it with CRLF, as peers do."""
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines()).encode()


# RFC 4566 §5 (and RFC 8866 §5) example session description.
RFC4566_EXAMPLE = crlf("""
    v=0
    o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
    s=SDP Seminar
    i=A Seminar on the session description protocol
    u=http://www.example.com/seminars/sdp.pdf
    e=j.doe@example.com (Jane Doe)
    c=IN IP4 224.2.17.12/127
    t=2873397496 2873404696
    a=recvonly
    m=audio 49170 RTP/AVP 0
    m=video 51372 RTP/AVP 99
    a=rtpmap:99 h263-1998/90000
""")

# RFC 3264 §10.1 offer from Alice (audio + video).
RFC3264_OFFER = crlf("""
    v=0
    o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
    s=
    c=IN IP4 host.atlanta.example.com
    t=0 0
    m=audio 49170 RTP/AVP 0 8 97
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:97 iLBC/8000
    m=video 51372 RTP/AVP 31 32
    a=rtpmap:31 H261/90000
    a=rtpmap:32 MPV/90000
""")

# Shaped like a baresip offer: opus first, many codecs, rtcp-mux, a video stream.
BARESIP_OFFER = crlf("""
    v=0
    o=- 1638223581 2785734190 IN IP4 192.168.1.23
    s=-
    c=IN IP4 192.168.1.23
    t=0 0
    a=tool:baresip 3.10.1
    m=audio 10028 RTP/AVP 96 97 9 0 8 101
    b=AS:128
    a=rtpmap:96 opus/48000/2
    a=fmtp:96 stereo=1;sprop-stereo=1
    a=rtpmap:97 G7221/16000
    a=fmtp:97 bitrate=32000
    a=rtpmap:9 G722/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=rtcp-mux
    a=ssrc:3116462125 cname:e1d0b1b5-6b47-4a2c-93b8-7f9f0c2d9a11
    a=sendrecv
    a=label:1
    m=video 10030 RTP/AVP 100
    a=rtpmap:100 H264/90000
    a=fmtp:100 packetization-mode=0
    a=sendrecv
""")

# Shaped like an Asterisk (chan_pjsip) offer: static G.711 first, ptime and maxptime.
ASTERISK_OFFER = crlf("""
    v=0
    o=- 1739279434 1739279436 IN IP4 203.0.113.10
    s=Asterisk
    c=IN IP4 203.0.113.10
    t=0 0
    m=audio 16390 RTP/AVP 8 0 3 101
    a=rtpmap:8 PCMA/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:3 GSM/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-16
    a=ptime:20
    a=maxptime:150
    a=sendrecv
""")

# Shaped like the sipp built-in uac scenario: one static codec, no rtpmap for it.
SIPP_OFFER = crlf("""
    v=0
    o=user1 53655765 2353687637 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 6000 RTP/AVP 0
""")


# --- parsing ----------------------------------------------------------------------------


def test_rfc4566_example_parses_into_its_fields() -> None:
    sdp = parse_sdp(RFC4566_EXAMPLE)
    assert sdp.origin.username == "jdoe"
    assert sdp.origin.session_id == 2890844526
    assert sdp.origin.session_version == 2890842807
    assert sdp.origin.address == "10.47.16.5"
    assert sdp.session_name == "SDP Seminar"
    assert sdp.connection == Connection("IN", "IP4", "224.2.17.12/127")
    assert (sdp.timing.start, sdp.timing.stop) == (2873397496, 2873404696)
    assert sdp.direction is Direction.RECVONLY
    assert [(m.media, m.port, m.formats) for m in sdp.media] == [
        ("audio", 49170, ["0"]),
        ("video", 51372, ["99"]),
    ]
    assert [str(c) for c in sdp.media[1].codecs] == ["h263-1998/90000"]


@pytest.mark.parametrize("body", [RFC4566_EXAMPLE, RFC3264_OFFER, ASTERISK_OFFER, SIPP_OFFER])
def test_canonical_sdp_reserialises_byte_for_byte(body: bytes) -> None:
    """SDP already in RFC order comes back identical, unknown lines included."""
    assert parse_sdp(body).to_bytes() == body


@pytest.mark.parametrize("body", [RFC4566_EXAMPLE, RFC3264_OFFER, BARESIP_OFFER, ASTERISK_OFFER])
def test_parse_serialise_parse_is_stable(body: bytes) -> None:
    first = parse_sdp(body)
    again = parse_sdp(first.to_bytes())
    assert again == first
    assert again.to_bytes() == first.to_bytes()


def test_baresip_offer_keeps_codec_order_fmtp_and_unknown_attributes() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    audio = sdp.audio
    assert audio is not None
    assert [str(c) for c in audio.codecs] == [
        "opus/48000",
        "G7221/16000",
        "G722/8000",
        "PCMU/8000",
        "PCMA/8000",
        "telephone-event/8000",
    ]
    assert audio.codecs[0] == Codec(96, "opus", 48000, 2, "stereo=1;sprop-stereo=1")
    assert audio.fmtps[101] == "0-15"
    assert Attribute("rtcp-mux") in audio.attributes
    assert Attribute("label", "1") in audio.attributes
    assert audio.extra_lines == [("b", "AS:128")]
    assert sdp.attributes == [Attribute("tool", "baresip 3.10.1")]
    reserialised = parse_sdp(BARESIP_OFFER).to_bytes().decode()
    for kept in ("a=rtcp-mux\r\n", "a=ssrc:3116462125 cname:e1d0b1b5", "b=AS:128\r\n"):
        assert kept in reserialised
    assert sdp.media[1].media == "video"


def test_asterisk_offer_has_ptime_and_keeps_maxptime() -> None:
    sdp = parse_sdp(ASTERISK_OFFER)
    audio = sdp.audio
    assert audio is not None
    assert audio.ptime == 20
    assert Attribute("maxptime", "150") in audio.attributes
    assert [c.payload_type for c in audio.codecs] == [8, 0, 3, 101]
    assert sdp.direction_of(audio) is Direction.SENDRECV


def test_static_payload_types_are_known_without_rtpmap() -> None:
    sdp = parse_sdp(SIPP_OFFER.replace(b"RTP/AVP 0", b"RTP/AVP 0 8"))
    assert sdp.audio is not None
    assert sdp.audio.codecs == [PCMU, PCMA]
    assert sdp.audio.rtpmaps == {}


def test_unknown_dynamic_payload_type_without_rtpmap_is_skipped() -> None:
    sdp = parse_sdp(SIPP_OFFER.replace(b"RTP/AVP 0", b"RTP/AVP 96 0"))
    assert sdp.audio is not None
    assert sdp.audio.codecs == [PCMU]


def test_lf_only_line_ends_and_blank_lines_are_accepted() -> None:
    lf = ASTERISK_OFFER.replace(b"\r\n", b"\n") + b"\n\n"
    assert parse_sdp(lf) == parse_sdp(ASTERISK_OFFER)
    assert parse_sdp(lf.decode()) == parse_sdp(ASTERISK_OFFER)


def test_media_level_connection_and_direction_override_session_level() -> None:
    body = crlf("""
        v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=-
        c=IN IP4 192.0.2.1
        t=0 0
        a=sendonly
        m=audio 4000 RTP/AVP 0
        c=IN IP6 2001:db8::7
        a=recvonly
    """)
    sdp = parse_sdp(body)
    audio = sdp.audio
    assert audio is not None
    assert sdp.connection_of(audio) == Connection("IN", "IP6", "2001:db8::7")
    assert sdp.direction_of(audio) is Direction.RECVONLY
    assert sdp.direction is Direction.SENDONLY
    assert parse_sdp(sdp.to_bytes()) == sdp


def test_serialisation_puts_lines_in_rfc_order() -> None:
    """Lines given out of order come back in the v o s i u e p c b t r z k a m order."""
    body = (
        "v=0\no=- 5 6 IN IP4 192.0.2.9\nt=0 0\nc=IN IP4 192.0.2.9\ns=call\na=x-foo:bar\n"
        "b=CT:64\nr=604800 3600 0\nk=prompt\ni=info\n"
        "m=audio 5000 RTP/AVP 8\na=sendonly\na=ptime:30\nc=IN IP4 192.0.2.10\ni=voice\n"
    )
    assert parse_sdp(body).to_bytes().decode().split("\r\n") == [
        "v=0",
        "o=- 5 6 IN IP4 192.0.2.9",
        "s=call",
        "i=info",
        "c=IN IP4 192.0.2.9",
        "b=CT:64",
        "t=0 0",
        "r=604800 3600 0",
        "k=prompt",
        "a=x-foo:bar",
        "m=audio 5000 RTP/AVP 8",
        "i=voice",
        "c=IN IP4 192.0.2.10",
        "a=ptime:30",
        "a=sendonly",
        "",
    ]


def test_port_count_and_fractional_ptime_are_read() -> None:
    sdp = parse_sdp(SIPP_OFFER.replace(b"6000 RTP", b"6000/2 RTP") + b"a=ptime:30.0\r\n")
    assert sdp.audio is not None
    assert (sdp.audio.port, sdp.audio.port_count, sdp.audio.ptime) == (6000, 2, 30)
    assert b"m=audio 6000/2 RTP/AVP 0\r\n" in sdp.to_bytes()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("o=- 1 1 IN IP4 1.2.3.4\ns=-\n", "missing v= line"),
        ("v=1\no=- 1 1 IN IP4 1.2.3.4\n", "v=1"),
        ("", "missing v= line"),
        ("v=0\ns=-\n", "missing o= line"),
        ("v=0\no=- x 1 IN IP4 1.2.3.4\n", "'o=- x 1 IN IP4 1.2.3.4'"),
        ("v=0\no=- 1 1 IN IP4\n", "'o=- 1 1 IN IP4'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 5000 RTP/AVP\n", "'m=audio 5000 RTP/AVP'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio five RTP/AVP 0\n", "'m=audio five RTP/AVP 0'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 70000 RTP/AVP 0\n", "line 4 'm=audio 70000"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 5000 RTP/AVP 0 abc\n", "payload type 'abc'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 5000 RTP/AVP 200\n", "payload type 200"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4\n", "'c=IN IP4'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nt=now\n", "'t=now'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nthis is not sdp\n", "line 4 'this is not sdp'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nx=unknown\n", "'x=unknown'"),
        ("v=0\no=- 1 1 IN IP4 h\no=- 1 1 IN IP4 h\n", "duplicate o= line"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\nt=0 0\n", "in a media section"),
        ("v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 97\na=rtpmap:97 opus\n", "'a=rtpmap:97 opus'"),
        ("v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0\na=ptime:fast\n", "'a=ptime:fast'"),
    ],
)
def test_malformed_sdp_raises_sdp_error_naming_the_line(body: str, named: str) -> None:
    with pytest.raises(SdpError) as caught:
        parse_sdp(body)
    assert named in str(caught.value)
    assert caught.value.status == 400
    assert isinstance(caught.value, SipdError)


def test_non_utf8_body_raises_sdp_error() -> None:
    with pytest.raises(SdpError, match="not UTF-8"):
        parse_sdp(b"v=0\r\no=\xff 1 1 IN IP4 h\r\n")


# --- offers ---------------------------------------------------------------------------


def test_build_offer_writes_the_expected_sdp() -> None:
    offer = build_offer(
        "192.0.2.5", 40000, [PCMU, PCMA, TELEPHONE_EVENT], session_id=42, session_version=7
    )
    assert offer.to_bytes() == crlf("""
        v=0
        o=sipd 42 7 IN IP4 192.0.2.5
        s=-
        c=IN IP4 192.0.2.5
        t=0 0
        m=audio 40000 RTP/AVP 0 8 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=ptime:20
        a=sendrecv
    """)


def test_build_offer_uses_ip6_for_an_ipv6_address() -> None:
    offer = build_offer("::1", 5004, [PCMA], session_id=1, session_version=1, direction="recvonly")
    text = offer.to_bytes().decode()
    assert "o=sipd 1 1 IN IP6 ::1\r\n" in text
    assert "c=IN IP6 ::1\r\n" in text
    assert "a=recvonly\r\n" in text


@pytest.mark.parametrize(
    ("port", "codecs"), [(-1, [PCMU]), (65536, [PCMU]), (5000, []), (5000, [PCMU, PCMU])]
)
def test_build_offer_refuses_impossible_offers(port: int, codecs: list[Codec]) -> None:
    with pytest.raises(SdpError):
        build_offer("192.0.2.1", port, codecs, session_id=1, session_version=1)


codec_pool = [
    PCMU,
    PCMA,
    TELEPHONE_EVENT,
    Codec(9, "G722", 8000),
    Codec(96, "opus", 48000, 2, "useinbandfec=1"),
    Codec(97, "L16", 16000),
    Codec(110, "telephone-event", 48000, fmtp="0-15"),
]


@given(
    address=st.ip_addresses().map(str),
    port=st.integers(0, 65535),
    codecs=st.lists(st.sampled_from(codec_pool), min_size=1, unique_by=lambda c: c.payload_type),
    direction=st.sampled_from(list(Direction)),
    session_id=st.integers(0, 2**64),
    session_version=st.integers(0, 2**32),
    ptime=st.one_of(st.none(), st.integers(10, 120)),
)
def test_built_offer_round_trips_through_bytes(
    address: str,
    port: int,
    codecs: list[Codec],
    direction: Direction,
    session_id: int,
    session_version: int,
    ptime: int | None,
) -> None:
    offer = build_offer(
        address,
        port,
        codecs,
        direction=direction,
        session_id=session_id,
        session_version=session_version,
        ptime=ptime,
    )
    parsed = parse_sdp(offer.to_bytes())
    assert parsed == offer
    assert parsed.audio is not None
    assert parsed.audio.codecs == codecs
    assert parsed.audio.port == port
    assert parsed.audio.ptime == ptime
    assert parsed.direction_of(parsed.audio) is direction
    connection = parsed.connection_of(parsed.audio)
    assert connection is not None
    assert ipaddress.ip_address(connection.address) == ipaddress.ip_address(address)
    assert connection.addrtype == f"IP{ipaddress.ip_address(address).version}"
    assert (parsed.origin.session_id, parsed.origin.session_version) == (
        session_id,
        session_version,
    )


# --- answering (UAS) --------------------------------------------------------------------


def answer(
    offer: bytes | SessionDescription, supported: list[Codec], direction: str = "sendrecv"
) -> NegotiationResult:
    """Answer as 198.51.100.2:30000, the way the UAS side of sipd does."""
    sdp = offer if isinstance(offer, SessionDescription) else parse_sdp(offer)
    return negotiate_answer(
        sdp, "198.51.100.2", 30000, supported, direction=direction, session_id=9, session_version=1
    )


def test_rfc3264_example_answer_picks_pcmu_and_rejects_video() -> None:
    result = answer(RFC3264_OFFER, [PCMA, PCMU])
    assert result.codec == PCMU
    assert (result.remote_address, result.remote_port) == ("host.atlanta.example.com", 49170)
    assert [(m.media, m.port, m.formats) for m in result.answer.media] == [
        ("audio", 30000, ["0"]),
        ("video", 0, ["31", "32"]),
    ]
    assert result.answer.to_bytes() == crlf("""
        v=0
        o=sipd 9 1 IN IP4 198.51.100.2
        s=-
        c=IN IP4 198.51.100.2
        t=0 0
        m=audio 30000 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
        a=ptime:20
        a=sendrecv
        m=video 0 RTP/AVP 31 32
    """)


def test_offerer_order_wins_over_ours() -> None:
    """Asterisk prefers PCMA; we list PCMU first; the offerer's first shared codec wins."""
    result = answer(ASTERISK_OFFER, [PCMU, PCMA, TELEPHONE_EVENT])
    assert result.codec == PCMA
    assert result.remote_ptime == 20
    assert result.telephone_event_pt == 101


def test_dynamic_payload_types_are_matched_by_name_and_answered_with_offer_numbers() -> None:
    body = crlf("""
        v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=-
        c=IN IP4 192.0.2.1
        t=0 0
        m=audio 7078 RTP/AVP 101 112 96
        a=rtpmap:101 opus/48000/2
        a=rtpmap:112 pcma/8000
        a=rtpmap:96 Telephone-Event/8000
        a=fmtp:96 0-11
    """)
    result = answer(body, [PCMU, PCMA, TELEPHONE_EVENT])
    assert result.codec == Codec(112, "pcma", 8000)
    assert result.telephone_event_pt == 96
    audio = result.answer.audio
    assert audio is not None
    assert audio.formats == ["112", "96"]
    assert audio.fmtps == {96: "0-11"}
    assert process_answer(parse_sdp(body), result.answer).codec == result.codec


def test_telephone_event_is_not_negotiated_when_we_do_not_support_it() -> None:
    result = answer(ASTERISK_OFFER, [PCMA])
    assert result.telephone_event_pt is None
    assert not result.telephone_event
    assert result.answer.audio is not None
    assert result.answer.audio.formats == ["8"]


def test_telephone_event_at_another_clock_rate_is_not_chosen() -> None:
    result = answer(BARESIP_OFFER, [PCMU, TELEPHONE_EVENT])
    assert result.codec == PCMU
    assert result.telephone_event_pt == 101
    offer = build_offer(
        "192.0.2.1",
        5000,
        [PCMU, Codec(110, "telephone-event", 48000)],
        session_id=1,
        session_version=1,
    )
    assert answer(offer, [PCMU, TELEPHONE_EVENT]).telephone_event_pt is None


def test_no_common_codec_raises_488_listing_both_sides() -> None:
    with pytest.raises(SdpNegotiationError) as caught:
        answer(SIPP_OFFER, [PCMA, Codec(9, "G722", 8000)])
    assert caught.value.status == 488
    assert str(caught.value) == "no common codec: offered PCMU/8000, supported PCMA/8000, G722/8000"


def test_telephone_event_alone_is_not_a_common_codec() -> None:
    offer = build_offer("192.0.2.1", 5000, [PCMA, TELEPHONE_EVENT], session_id=1, session_version=1)
    with pytest.raises(SdpNegotiationError, match="no common codec"):
        answer(offer, [PCMU, TELEPHONE_EVENT])


@pytest.mark.parametrize(
    ("offered", "ours", "expected"),
    [
        ("sendonly", "sendrecv", "recvonly"),
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendrecv", "inactive", "inactive"),
        ("sendonly", "sendonly", "inactive"),
    ],
)
def test_answer_direction_follows_rfc3264_section_6_1(
    offered: str, ours: str, expected: str
) -> None:
    offer = build_offer(
        "192.0.2.1", 5000, [PCMU], direction=offered, session_id=1, session_version=1
    )
    result = answer(offer, [PCMU], direction=ours)
    assert result.direction is Direction(expected)
    assert result.answer.audio is not None
    assert result.answer.audio.direction is Direction(expected)


def test_old_style_hold_address_means_we_do_not_send() -> None:
    body = SIPP_OFFER.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0")
    result = answer(body, [PCMU])
    assert result.direction is Direction.RECVONLY
    assert is_remote_hold(parse_sdp(body))


def test_session_level_direction_applies_when_media_has_none() -> None:
    body = SIPP_OFFER.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    assert answer(body, [PCMU]).direction is Direction.RECVONLY


def test_offer_with_disabled_audio_is_answered_with_port_zero() -> None:
    offer = parse_sdp(RFC3264_OFFER.replace(b"m=audio 49170", b"m=audio 0"))
    result = answer(offer, [PCMU])
    assert result.codec is None
    assert not result.audio_active
    assert result.remote_port == 0
    assert result.direction is Direction.INACTIVE
    assert [m.port for m in result.answer.media] == [0, 0]
    assert len(result.answer.media) == len(offer.media)


def test_only_the_first_enabled_audio_stream_is_accepted() -> None:
    body = RFC3264_OFFER.replace(b"m=video 51372 RTP/AVP 31 32", b"m=audio 51372 RTP/AVP 8")
    result = answer(body, [PCMA])
    assert (result.codec, result.remote_port) == (PCMA, 49170)
    assert [m.port for m in result.answer.media] == [30000, 0]
    disabled_first = body.replace(b"m=audio 49170", b"m=audio 0")
    result = answer(disabled_first, [PCMA])
    assert (result.codec, result.remote_port) == (PCMA, 51372)
    assert [m.port for m in result.answer.media] == [0, 30000]


def test_ipv6_offer_gives_ipv6_remote_address() -> None:
    offer = build_offer("2001:db8::1", 6000, [PCMU], session_id=3, session_version=3)
    result = negotiate_answer(offer, "2001:db8::2", 7000, [PCMU], session_id=1, session_version=1)
    assert (result.remote_address, result.remote_port) == ("2001:db8::1", 6000)
    assert result.answer.connection == Connection("IN", "IP6", "2001:db8::2")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (SIPP_OFFER.replace(b"m=audio", b"m=video"), "no audio stream"),
        (SIPP_OFFER.replace(b"RTP/AVP", b"RTP/SAVP"), "RTP/SAVP"),
        (SIPP_OFFER.replace(b"c=IN IP4 127.0.0.1\r\n", b""), "no c= line"),
    ],
)
def test_unusable_offers_raise_488(body: bytes, reason: str) -> None:
    with pytest.raises(SdpNegotiationError, match=reason) as caught:
        answer(body, [PCMU])
    assert caught.value.status == 488


# --- answers (UAC) ----------------------------------------------------------------------


def our_offer(direction: str = "sendrecv") -> SessionDescription:
    return build_offer(
        "192.0.2.5",
        40000,
        [PCMU, PCMA, TELEPHONE_EVENT],
        direction=direction,
        session_id=5,
        session_version=5,
    )


def test_process_answer_takes_the_answers_first_codec_that_we_offered() -> None:
    body = crlf("""
        v=0
        o=- 8 8 IN IP4 203.0.113.10
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        m=audio 16390 RTP/AVP 3 8 0 100
        c=IN IP4 203.0.113.11
        a=rtpmap:100 telephone-event/8000
        a=ptime:30
        a=recvonly
    """)
    result = process_answer(our_offer(), parse_sdp(body))
    assert result.codec == PCMA
    assert result.telephone_event_pt == 100
    assert (result.remote_address, result.remote_port) == ("203.0.113.11", 16390)
    assert result.remote_ptime == 30
    assert result.direction is Direction.SENDONLY


def test_process_answer_of_our_own_negotiation_agrees_with_the_answerer() -> None:
    offer = our_offer()
    uas = negotiate_answer(
        offer, "198.51.100.2", 30000, [PCMA, TELEPHONE_EVENT], session_id=1, session_version=1
    )
    uac = process_answer(offer, parse_sdp(uas.answer.to_bytes()))
    assert uac.codec == uas.codec == PCMA
    assert uac.telephone_event_pt == uas.telephone_event_pt == 101
    assert (uac.remote_address, uac.remote_port) == ("198.51.100.2", 30000)
    assert (uas.remote_address, uas.remote_port) == ("192.0.2.5", 40000)


@pytest.mark.parametrize(
    ("answer_media", "reason"),
    [
        ("m=audio 16390 RTP/AVP 9\r\n", "no common codec: offered PCMU/8000"),
        ("m=audio 0 RTP/AVP 0\r\n", "rejected the audio stream"),
        ("m=audio 1 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n", "2 m= lines"),
    ],
)
def test_unusable_answer_raises_488(answer_media: str, reason: str) -> None:
    body = "v=0\r\no=- 8 8 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\n" + answer_media
    with pytest.raises(SdpNegotiationError, match=reason) as caught:
        process_answer(our_offer(), parse_sdp(body))
    assert caught.value.status == 488


# --- hold -------------------------------------------------------------------------------


def test_reoffer_for_hold_bumps_version_by_one_and_sets_direction() -> None:
    first = our_offer()
    held = reoffer(first, direction="sendonly")
    assert held.origin.session_version == first.origin.session_version + 1
    assert held.origin.session_id == first.origin.session_id
    assert held.audio is not None
    assert held.audio.direction is Direction.SENDONLY
    assert first.audio is not None
    assert first.audio.direction is Direction.SENDRECV
    resumed = reoffer(held, direction=Direction.SENDRECV)
    assert resumed.origin.session_version == first.origin.session_version + 2
    assert parse_sdp(resumed.to_bytes()) == resumed


def test_reoffer_replaces_session_level_direction_and_leaves_rejected_streams() -> None:
    previous = parse_sdp(RFC4566_EXAMPLE)
    previous.media[1].port = 0
    held = reoffer(previous, direction=Direction.INACTIVE)
    assert held.direction is None
    assert [m.direction for m in held.media] == [Direction.INACTIVE, None]


def test_remote_hold_is_recognised_from_the_peers_reoffer() -> None:
    peer = build_offer("192.0.2.1", 5000, [PCMU], session_id=1, session_version=1)
    assert not is_remote_hold(peer)
    assert is_remote_hold(reoffer(peer, direction="sendonly"))
    assert is_remote_hold(reoffer(peer, direction="inactive"))
    assert not is_remote_hold(reoffer(peer, direction="recvonly"))
    result = answer(reoffer(peer, direction="sendonly"), [PCMU])
    assert result.direction is Direction.RECVONLY
