"""Whole messages: start lines, header block, body, serialisation (RFC 3261 §7, §8.2.6, §18.3).

Messages are written here with ``\\n`` and turned into CRLF by :func:`wire`;
several follow cases from the RFC 4475 torture tests.
"""

from __future__ import annotations

import pytest

from sipd.sip.errors import BadRequest, SipParseError, UnsupportedUriScheme, VersionNotSupported
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response, make_response, parse_message
from sipd.sip.uri import parse_uri

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
    b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)
TOP_VIA = b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n"
VIA_A = b"SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
VIA_B = b"SIP/2.0/UDP b.example.com;branch=z9hG4bK2"


def wire(text: str, body: bytes = b"") -> bytes:
    return text.replace("\n", "\r\n").encode() + body


HEADERS = (
    "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\n"
    "Max-Forwards: 70\n"
    'From: "Alice" <sip:alice@atlanta.com>;tag=1928301774\n'
    "To: Bob <sip:bob@biloxi.com>\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.com\n"
)


def invite(body: bytes = SDP, extra: str = "", length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return wire(
        "INVITE sip:bob@biloxi.com SIP/2.0\n"
        + HEADERS
        + "CSeq: 314159 INVITE\n"
        + "Contact: <sip:alice@pc33.atlanta.com>\n"
        + extra
        + f"Content-Type: application/sdp\nContent-Length: {n}\n\n",
        body,
    )


def parse_request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def parse_response(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


# -- start lines ------------------------------------------------------------------


def test_request_line_and_common_headers() -> None:
    req = parse_request(invite())
    assert req.method == "INVITE"
    assert req.uri == parse_uri("sip:bob@biloxi.com")
    assert req.version == "SIP/2.0"
    assert req.top_via.branch == "z9hG4bK776asdhds"
    assert req.cseq.number == 314159
    assert req.cseq.method == "INVITE"
    assert req.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert req.from_.display_name == "Alice"
    assert req.from_.tag == "1928301774"
    assert req.to.tag is None
    assert req.max_forwards == 70
    assert [str(c.uri) for c in req.contacts] == ["sip:alice@pc33.atlanta.com"]
    assert req.content_type == "application/sdp"
    assert req.body == SDP


def test_status_line() -> None:
    resp = parse_response(
        wire("SIP/2.0 180 Ringing\n" + HEADERS + "CSeq: 314159 INVITE\nContent-Length: 0\n\n")
    )
    assert resp.status == 180
    assert resp.reason == "Ringing"
    assert resp.is_provisional
    assert not resp.is_success


def test_reason_phrase_may_hold_spaces_and_be_empty() -> None:
    tail = HEADERS + "CSeq: 1 INVITE\n\n"
    assert parse_response(wire("SIP/2.0 486 Busy  Here now\n" + tail)).reason == "Busy  Here now"
    assert parse_response(wire("SIP/2.0 200 \n" + tail)).reason == "OK"


@pytest.mark.parametrize(
    "start",
    ["INVITE sip:bob@biloxi.com SIP/7.0", "INVITE sip:bob@biloxi.com SIP/1.0", "SIP/3.0 200 OK"],
)
def test_other_sip_version_is_505(start: str) -> None:
    """RFC 4475 §3.3.14: an unknown protocol version earns 505."""
    data = wire(start + "\n" + HEADERS + "CSeq: 1 INVITE\n\n")
    with pytest.raises(VersionNotSupported) as info:
        parse_message(data)
    assert info.value.status == 505
    assert "version" in info.value.reason.lower()


def test_unsupported_request_uri_scheme_is_416() -> None:
    """RFC 4475 §3.3.2: ``OPTIONS soap.beep://...`` / an http: Request-URI → 416."""
    data = wire("INVITE http://example.com/bob SIP/2.0\n" + HEADERS + "CSeq: 1 INVITE\n\n")
    with pytest.raises(UnsupportedUriScheme) as info:
        parse_message(data)
    assert info.value.status == 416


@pytest.mark.parametrize(
    ("start", "word"),
    [
        ("INVITE  sip:bob@biloxi.com SIP/2.0", "request line"),
        ("INVITE sip:bob@biloxi.com", "request line"),
        ("INVITE sip:bob@biloxi.com SIP/2.0 extra", "request line"),
        ("IN<VITE sip:bob@biloxi.com SIP/2.0", "method"),
        ("INVITE sip:bob@bil oxi.com SIP/2.0", "request line"),
        ("SIP/2.0 20 OK", "status code"),
        ("SIP/2.0 2000 OK", "status code"),
        ("SIP/2.0 099 Low", "status code"),
        ("SIP/2.0 abc OK", "status code"),
        ("SIP/2.0", "status line"),
    ],
)
def test_malformed_start_line_is_400_naming_the_problem(start: str, word: str) -> None:
    data = wire(start + "\n" + HEADERS + "CSeq: 1 INVITE\n\n")
    with pytest.raises(BadRequest) as info:
        parse_message(data)
    assert info.value.status == 400
    assert word in info.value.reason


def test_leading_blank_lines_are_ignored() -> None:
    """RFC 3261 §7.5: CRLFs before the start line are skipped."""
    assert parse_request(b"\r\n\r\n" + invite()).method == "INVITE"


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"INVITE sip:a@b SIP/2.0"])
def test_empty_or_headless_data_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_message(data)


# -- header block -----------------------------------------------------------------


def test_compact_forms_parse_like_full_names() -> None:
    """RFC 4475 §3.1.1.1 uses compact forms; they mean the full headers."""
    data = wire(
        "INVITE sip:bob@biloxi.com SIP/2.0\n"
        "v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKcompact\n"
        "f: <sip:alice@atlanta.com>;tag=1\n"
        "t: sip:bob@biloxi.com\n"
        "i: compact@host\n"
        "CSeq: 8 INVITE\n"
        "m: <sip:alice@pc33.atlanta.com>\n"
        "k: timer\n"
        "s: lunch\n"
        "o: refer\n"
        "u: refer\n"
        "r: <sip:carol@chicago.com>\n"
        "b: <sip:alice@atlanta.com>\n"
        "x: 1800\n"
        "y: abc\n"
        "e: gzip\n"
        "c: application/sdp\n"
        f"l: {len(SDP)}\n\n",
        SDP,
    )
    req = parse_request(data)
    assert req.top_via.branch == "z9hG4bKcompact"
    assert req.from_.tag == "1"
    assert req.to.uri.user == "bob"
    assert req.call_id == "compact@host"
    assert req.contacts[0].uri.host == "pc33.atlanta.com"
    h = req.headers
    for name, value in [
        ("Supported", "timer"),
        ("Subject", "lunch"),
        ("Event", "refer"),
        ("Allow-Events", "refer"),
        ("Refer-To", "<sip:carol@chicago.com>"),
        ("Referred-By", "<sip:alice@atlanta.com>"),
        ("Session-Expires", "1800"),
        ("Identity", "abc"),
        ("Content-Encoding", "gzip"),
        ("Content-Type", "application/sdp"),
        ("Content-Length", str(len(SDP))),
    ]:
        assert h.get(name) == value, name
    assert req.content_type == "application/sdp"
    assert req.body == SDP


def test_header_names_are_case_insensitive() -> None:
    data = invite().replace(b"Call-ID:", b"cALL-iD:").replace(b"CSeq:", b"CSEQ:")
    req = parse_request(data)
    assert req.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert req.cseq.number == 314159


def test_blanks_around_the_colon_are_allowed() -> None:
    """RFC 3261 §7.3.1: ``Subject:lunch`` and ``Subject   :  lunch`` are the same."""
    req = parse_request(invite(extra="Subject   :   lunch  \nX-Tight:value\n"))
    assert req.headers.get("Subject") == "lunch"
    assert req.headers.get("X-Tight") == "value"


def test_folded_header_lines_are_joined() -> None:
    """RFC 3261 §7.3.1 / RFC 4475 §3.1.1.1: continuation lines fold into one value."""
    data = wire(
        "OPTIONS sip:bob@biloxi.com SIP/2.0\n"
        "Via: SIP/2.0/UDP pc33.atlanta.com\n"
        "  ;branch=z9hG4bKfold\n"
        "From: <sip:alice@atlanta.com>\n"
        "\t;tag=abc\n"
        "To: <sip:bob@biloxi.com>\n"
        "Call-ID: fold@host\n"
        "CSeq: 1 OPTIONS\n"
        "Subject: I know you're there,\n"
        "         pick up the phone\n"
        "         and talk to me!\n"
        "Content-Length: 0\n\n"
    )
    req = parse_request(data)
    assert req.top_via.branch == "z9hG4bKfold"
    assert req.from_.tag == "abc"
    assert req.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert req.to_bytes() == data


def test_continuation_before_any_header_is_400() -> None:
    data = wire("OPTIONS sip:b@c SIP/2.0\n  folded\n" + HEADERS + "CSeq: 1 OPTIONS\n\n")
    with pytest.raises(BadRequest, match="continuation"):
        parse_message(data)


def test_header_line_without_colon_is_400() -> None:
    with pytest.raises(BadRequest, match="header line"):
        parse_message(invite(extra="NoColonHere\n"))


def test_bad_header_name_is_400() -> None:
    with pytest.raises(BadRequest, match="header name"):
        parse_message(invite(extra="Bad Name: x\n"))


def test_repeated_and_comma_separated_vias_are_equivalent() -> None:
    folded = invite().replace(TOP_VIA, b"Via: " + VIA_A + b", " + VIA_B + b"\r\n")
    repeated = invite().replace(TOP_VIA, b"Via: " + VIA_A + b"\r\nv: " + VIA_B + b"\r\n")
    one, two = parse_request(folded), parse_request(repeated)
    assert one.headers.values("Via") == two.headers.values("Via")
    assert (
        [v.host for v in one.vias]
        == [v.host for v in two.vias]
        == [
            "a.example.com",
            "b.example.com",
        ]
    )
    assert one.top_via.branch == two.top_via.branch == "z9hG4bK1"


def test_escaped_quotes_in_display_name() -> None:
    """RFC 4475 §3.1.1.1-style display names with ``\\"`` survive parsing."""
    data = invite().replace(
        b'From: "Alice" <sip:alice@atlanta.com>',
        b'From: "J Rosenberg \\\\\\"Jdrosen\\"" <sip:jdrosen@example.com>',
    )
    req = parse_request(data)
    assert req.from_.display_name == 'J Rosenberg \\"Jdrosen"'
    assert req.from_.tag == "1928301774"


def test_unbracketed_addr_spec_params_are_header_params() -> None:
    data = invite().replace(
        b"To: Bob <sip:bob@biloxi.com>", b"To: sip:bob@biloxi.com;tag=xyz;transport=tcp"
    )
    req = parse_request(data)
    assert req.to.tag == "xyz"
    assert req.to.uri.params == ()


def test_contact_star_yields_no_contacts() -> None:
    data = wire(
        "REGISTER sip:registrar.biloxi.com SIP/2.0\n" + HEADERS + "CSeq: 2 REGISTER\n"
        "Contact: *\nExpires: 0\nContent-Length: 0\n\n"
    )
    assert parse_request(data).contacts == []


def test_several_contacts_in_one_line() -> None:
    req = parse_request(
        invite().replace(
            b"Contact: <sip:alice@pc33.atlanta.com>",
            b'Contact: "Mr. Watson" <sip:watson@worcester.bell-telephone.com>;q=0.7; expires=3600,'
            b' "Mr. Watson" <mailto:watson@bell-telephone.com> ;q=0.1',
        )
    )
    with pytest.raises(SipParseError):
        req.contacts  # noqa: B018 - the mailto: contact is not a SIP URI
    first = parse_request(
        invite().replace(
            b"Contact: <sip:alice@pc33.atlanta.com>",
            b"Contact: <sip:a@x>;q=0.7, <sip:b@y>;expires=60",
        )
    ).contacts
    assert [(c.uri.user, c.param("q"), c.param("expires")) for c in first] == [
        ("a", "0.7", None),
        ("b", None, "60"),
    ]


def test_unknown_headers_are_kept_verbatim() -> None:
    req = parse_request(invite(extra='X-WeIrD-Name:  some ;value,, with "quotes"  \n'))
    assert ("X-WeIrD-Name", 'some ;value,, with "quotes"') in list(req.headers)
    # and a modified message re-emits them with the same spelling
    req.headers.add("X-Other", "1")
    assert b'\r\nX-WeIrD-Name: some ;value,, with "quotes"\r\n' in req.to_bytes()


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_is_400_naming_it(name: str) -> None:
    lines = [
        line
        for line in invite().split(b"\r\n")
        if not line.lower().startswith(name.lower().encode() + b":")
    ]
    data = b"\r\n".join(lines)
    with pytest.raises(BadRequest) as info:
        parse_message(data)
    assert name in info.value.reason


def test_cseq_method_mismatch_is_400() -> None:
    """RFC 4475 §3.1.2.3 (mismatch01): request method and CSeq method differ."""
    data = invite().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 OPTIONS")
    with pytest.raises(BadRequest, match="CSeq method"):
        parse_message(data)


def test_cseq_number_too_large_is_400() -> None:
    """RFC 4475 §3.1.2.1 (scalar02): CSeq 2**31 is out of range."""
    data = invite().replace(b"CSeq: 314159", b"CSeq: 2147483648")
    with pytest.raises(BadRequest, match="CSeq"):
        parse_message(data)


def test_response_cseq_method_may_differ_from_nothing() -> None:
    """A response has no method to match: only the CSeq syntax is checked."""
    resp = parse_response(wire("SIP/2.0 200 OK\n" + HEADERS + "CSeq: 7 BYE\n\n"))
    assert resp.cseq.method == "BYE"


@pytest.mark.parametrize(("value", "ok"), [("0", 0), ("255", 255), (" 12 ", 12)])
def test_max_forwards_values(value: str, ok: int) -> None:
    req = parse_request(invite().replace(b"Max-Forwards: 70", f"Max-Forwards: {value}".encode()))
    assert req.max_forwards == ok


@pytest.mark.parametrize("value", ["-1", "256", "abc", "300000000000000000000"])
def test_bad_max_forwards_is_400_when_read(value: str) -> None:
    """RFC 4475 §3.1.2.1: a Max-Forwards over 255 is invalid."""
    req = parse_request(invite().replace(b"Max-Forwards: 70", f"Max-Forwards: {value}".encode()))
    with pytest.raises(BadRequest, match="Max-Forwards"):
        req.max_forwards  # noqa: B018


def test_missing_max_forwards_defaults_to_70() -> None:
    req = parse_request(invite().replace(b"Max-Forwards: 70\r\n", b""))
    assert req.max_forwards == 70


def test_body_shorter_than_content_length_is_400() -> None:
    """RFC 4475 §3.1.2.6 (clerr): Content-Length larger than the body."""
    with pytest.raises(BadRequest, match="Content-Length"):
        parse_message(invite(length=len(SDP) + 10))


def test_octets_past_content_length_are_discarded() -> None:
    """RFC 3261 §18.3: extra bytes in a datagram are dropped."""
    req = parse_request(invite(body=SDP + b"GARBAGE", length=len(SDP)))
    assert req.body == SDP
    again = parse_request(req.to_bytes())
    assert again.body == SDP
    assert b"GARBAGE" not in req.to_bytes()


@pytest.mark.parametrize("value", ["-5", "abc", "1.0", ""])
def test_malformed_content_length_is_400(value: str) -> None:
    data = invite().replace(
        f"Content-Length: {len(SDP)}".encode(), f"Content-Length: {value}".encode()
    )
    with pytest.raises(BadRequest, match="Content-Length"):
        parse_message(data)


def test_missing_content_length_takes_the_rest_of_the_datagram() -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert parse_request(data).body == SDP


def test_content_type_is_lowercased_without_parameters() -> None:
    req = parse_request(invite().replace(b"application/sdp", b"Application/SDP ; charset=utf-8"))
    assert req.content_type == "application/sdp"
    assert req.headers.get("Content-Type") == "Application/SDP ; charset=utf-8"


def test_non_utf8_header_block_is_400() -> None:
    with pytest.raises(BadRequest, match="UTF-8"):
        parse_message(invite(extra="X-Bin: \xff\n").replace(b"\xc3\xbf", b"\xff"))


def test_lf_only_message_parses() -> None:
    """Bare LF line ends are tolerated."""
    full = invite()
    head = full[: -len(SDP)]
    req = parse_request(head.replace(b"\r\n", b"\n") + SDP)
    assert req.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert req.body == SDP


# -- serialisation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        invite(),
        invite(extra="Subject   :lunch\nX-Odd:   spacing   \n"),
        wire(
            "SIP/2.0 200 OK\n"
            "v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\n"
            "f: <sip:alice@atlanta.com>;tag=1\n"
            "t: <sip:bob@biloxi.com>;tag=2\n"
            "i: x@y\n"
            "cseq:   1    INVITE\n"
            "l: 0\n\n"
        ),
    ],
)
def test_unmodified_message_re_emits_its_exact_bytes(data: bytes) -> None:
    msg = parse_message(data)
    assert msg.to_bytes() == data
    assert bytes(msg) == data


def test_modified_message_serialises_canonically() -> None:
    data = wire(
        "OPTIONS sip:bob@biloxi.com SIP/2.0\n"
        "v:   SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKx\n"
        "f:<sip:alice@atlanta.com>;tag=1\n"
        "t : <sip:bob@biloxi.com>\n"
        "i: x@y\n"
        "cseq: 1 OPTIONS\n"
        "l: 0\n\n"
    )
    req = parse_request(data)
    req.body = b"hello"
    out = req.to_bytes()
    assert out == wire(
        "OPTIONS sip:bob@biloxi.com SIP/2.0\n"
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKx\n"
        "From: <sip:alice@atlanta.com>;tag=1\n"
        "To: <sip:bob@biloxi.com>\n"
        "Call-ID: x@y\n"
        "CSeq: 1 OPTIONS\n"
        "Content-Length: 5\n\n",
        b"hello",
    )


def test_header_change_invalidates_the_original_bytes() -> None:
    req = parse_request(invite())
    req.headers.prepend("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
    out = req.to_bytes()
    assert out != invite()
    again = parse_request(out)
    assert [v.host for v in again.vias] == ["proxy.example.com", "pc33.atlanta.com"]
    assert again.body == SDP


def test_uri_change_invalidates_the_original_bytes() -> None:
    req = parse_request(invite())
    req.uri = parse_uri("sip:bob@192.0.2.4")
    assert req.to_bytes().startswith(b"INVITE sip:bob@192.0.2.4 SIP/2.0\r\n")


def test_built_request_gets_content_length() -> None:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
            ("From", "<sip:a@b>;tag=1"),
            ("To", "<sip:c@d>"),
            ("Call-ID", "c"),
            ("CSeq", "1 MESSAGE"),
        ]
    )
    req = Request("MESSAGE", parse_uri("sip:c@d"), h, b"hi")
    out = req.to_bytes()
    assert out.endswith(b"Content-Length: 2\r\n\r\nhi")
    assert out.count(b"Content-Length") == 1


def test_duplicate_content_length_is_written_once() -> None:
    h = Headers([("Content-Length", "99"), ("l", "3")])
    h.add("Via", "SIP/2.0/UDP h")
    resp = Response(200, headers=h, body=b"abc")
    assert resp.to_bytes().count(b"Content-Length") == 1
    assert b"Content-Length: 3\r\n" in resp.to_bytes()


@pytest.mark.parametrize(
    "data",
    [
        invite(),
        invite(body=b"", length=0),
        wire("SIP/2.0 100 Trying\n" + HEADERS + "CSeq: 1 INVITE\nl: 0\n\n"),
        wire(
            "BYE sip:alice@pc33.atlanta.com SIP/2.0\n"
            "Via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKb;rport\n"
            'From: sip:bob@biloxi.com;tag=2\nTo: "A \\"q\\"" <sip:alice@atlanta.com>;tag=1\n'
            "Call-ID: b@y\nCSeq: 2 BYE\nContent-Length: 0\n\n"
        ),
    ],
)
def test_parse_serialise_parse_is_stable(data: bytes) -> None:
    first = parse_message(data)
    first.headers.add("X-Touch", "1")  # force the canonical path
    canonical = first.to_bytes()
    second = parse_message(canonical)
    assert second.to_bytes() == canonical
    second.headers.add("X-Touch2", "2")
    third = parse_message(second.to_bytes())
    assert list(third.headers)[:-1] == list(second.headers)[:-1] == list(first.headers)
    assert third.body == first.body


# -- make_response --------------------------------------------------------------------


def two_via_request() -> Request:
    return parse_request(
        invite()
        .replace(
            TOP_VIA,
            b"Via: SIP/2.0/UDP proxy.atlanta.com;branch=z9hG4bKp1, "
            b"SIP/2.0/UDP a.example;branch=z9hG4bKp2\r\n"
            b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n",
        )
        .replace(b"CSeq: 314159 INVITE\r\n", b"CSeq: 314159 INVITE\r\nTimestamp: 54\r\n")
    )


def test_make_response_copies_vias_in_order_and_dialog_headers() -> None:
    """RFC 3261 §8.2.6.2."""
    req = two_via_request()
    resp = make_response(req, 180, to_tag="b0b")
    assert resp.status == 180
    assert resp.reason == "Ringing"
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert [v.branch for v in resp.vias] == ["z9hG4bKp1", "z9hG4bKp2", "z9hG4bK776asdhds"]
    assert resp.from_ == req.from_
    assert resp.call_id == req.call_id
    assert resp.cseq == req.cseq
    assert resp.to.tag == "b0b"
    assert resp.to.uri == req.to.uri
    assert "Timestamp" not in resp.headers
    again = parse_response(resp.to_bytes())
    assert again.to.tag == "b0b"
    assert again.headers.get_all("Via") == req.headers.get_all("Via")


def test_100_trying_gets_no_to_tag_but_keeps_timestamp() -> None:
    """RFC 3261 §8.2.6.1: 100 copies Timestamp; no tag on a 100."""
    resp = make_response(two_via_request(), 100, to_tag="b0b")
    assert resp.to.tag is None
    assert resp.headers.get("Timestamp") == "54"


def test_existing_to_tag_is_kept() -> None:
    req = parse_request(
        invite().replace(b"To: Bob <sip:bob@biloxi.com>", b"To: <sip:bob@biloxi.com>;tag=old")
    )
    assert make_response(req, 200, to_tag="new").to.tag == "old"


def test_make_response_body_and_content_type() -> None:
    resp = make_response(
        parse_request(invite()), 200, to_tag="t", body=SDP, content_type="application/sdp"
    )
    again = parse_response(resp.to_bytes())
    assert again.body == SDP
    assert again.content_type == "application/sdp"
    assert again.headers.get("Content-Length") == str(len(SDP))


def test_make_response_custom_reason() -> None:
    resp = make_response(parse_request(invite()), 486, "Busy Here Today")
    assert resp.start_line == "SIP/2.0 486 Busy Here Today"


@pytest.mark.parametrize("digit", ["\u00b2", "\u0663", "\uff11"])
@pytest.mark.parametrize(
    ("old", "new", "attr"),
    [
        ("Content-Length: {n}", "Content-Length: {d}", None),
        ("CSeq: 314159", "CSeq: {d}", None),
        ("SIP/2.0\r\nVia", "SIP/2.0\r\nVia", "max_forwards"),
        ("pc33.atlanta.com;branch", "pc33.atlanta.com:{d};branch", "top_via"),
        ("pc33.atlanta.com;branch", "[::1]:{d};branch", "top_via"),
        ("z9hG4bK776asdhds", "z9hG4bK1;rport={d}", "rport"),
        ("z9hG4bK776asdhds", "z9hG4bK1;ttl={d}", "ttl"),
        ("sip:bob@biloxi.com SIP", "sip:bob@biloxi.com:{d} SIP", None),
        ("<sip:alice@pc33.atlanta.com>", "<sip:alice@pc33.atlanta.com:{d}>", "contacts"),
    ],
)
def test_non_ascii_digits_are_400_not_a_crash(
    digit: str, old: str, new: str, attr: str | None
) -> None:
    """``str.isdigit`` accepts ``²`` and ``٣``; SIP numbers are ASCII DIGITs only (§25.1)."""
    data = invite().decode().replace("Max-Forwards: 70", f"Max-Forwards: {digit}")
    if attr != "max_forwards":
        data = invite().decode()
    data = data.replace(old.format(n=len(SDP)), new.format(d=digit))
    with pytest.raises(BadRequest):
        msg = parse_message(data.encode())
        if attr == "rport":
            msg.top_via.rport  # noqa: B018
        elif attr == "ttl":
            msg.top_via.ttl  # noqa: B018
        elif attr is not None:
            getattr(msg, attr)


def test_non_ascii_digit_status_code_is_400() -> None:
    data = wire("SIP/2.0 \u00b200 OK\n" + HEADERS + "CSeq: 1 INVITE\n\n")
    with pytest.raises(BadRequest, match="status code"):
        parse_message(data)
