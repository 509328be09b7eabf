"""Replies are valid SIP, whatever the request they answer (RFC 3261 §7.3.1, §8.2.6, §18.2.2;
RFC 4475 §3.1.2, §3.3.8, §3.3.9).

Requests with two Call-IDs, empty Via or Contact elements, control
characters, blank Call-IDs, broken Vias or out-of-range numbers get a 400
that is itself valid SIP, sent where any response goes, or nothing when no
valid response can be formed. A table and a property test mutate valid
requests with such bytes and check every datagram the UA sends back,
responses and the BYE of a call it then ends, with sipd's own parser.
"""

from __future__ import annotations

import re

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipd.sip.errors import BadRequest
from sipd.sip.message import Request, Response, parse_message
from sipd.sip.validate import check_syntax, empty_element, quoted_text, strict_via
from sipd.transport.salvage import sanitised_cseq
from sipd.transport.udp import check_headers, error_response_bytes
from tests.conftest import PeerFactory, RawUA, is_response
from tests.unit.test_transport_properties import SDP
from tests.unit.test_transport_udp import REMOTE, Stack, sip_request

INVITE = sip_request("INVITE", extra=("Content-Type: application/sdp",), body=SDP)


def assert_valid_sip(data: bytes) -> Request | Response:
    """``data`` parses with sipd's own parser and carries nothing a reply may not echo.

    A 400 refusing a broken From or To necessarily echoes it (the request
    has no other), so only those two are exempt, and only there.
    """
    message = parse_message(data)
    assert b"\x00" not in data.split(b"\r\n\r\n", 1)[0]
    check_syntax(message)
    for value in message.headers.values("Via"):
        strict_via(value)
    refused_address = isinstance(message, Response) and any(
        f"bad {name} header" in message.reason for name in ("From", "To")
    )
    if not refused_address:
        check_headers(message)
    return message


def exchange(stack: Stack, data: bytes, source: tuple[str, int] = REMOTE) -> list[bytes]:
    """Deliver ``data``; if a call is answered, ACK it; close the UA (BYE); return all sent."""
    start = len(stack.wire.sent)
    stack.receive(data, source)
    stack.reactor.advance(0.1)
    for raw, _ in stack.wire.sent[start:]:
        reply = parse_message(raw)
        if isinstance(reply, Response) and reply.status == 200 and reply.cseq.method == "INVITE":
            ack = sip_request(
                "ACK",
                to=reply.headers.get("To") or "",
                call_id=reply.call_id,
                via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKackv;rport",
            )
            stack.receive(ack, source)
    stack.close()
    return [raw for raw, _ in stack.wire.sent[start:]]


def replies(data: bytes) -> list[Request | Response]:
    stack = Stack()
    return [assert_valid_sip(raw) for raw in exchange(stack, data)]


def only_400(data: bytes) -> Response:
    [reply] = replies(data)
    assert isinstance(reply, Response)
    assert reply.status == 400, reply.reason
    return reply


# -- RFC 4475 §3.3.8, §3.3.9, RFC 3261 §7.3.1: single-valued headers --------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("Call-ID: other@127.0.0.1", "Call-ID"),
        ("i: other@127.0.0.1", "Call-ID"),
        ("CSeq: 1 INVITE", "CSeq"),
        ("To: <sip:other@127.0.0.1>", "To"),
        ("From: <sip:other@127.0.0.1>;tag=x", "From"),
        ("l: 0", "Content-Length"),
        ("Max-Forwards: 60", "Max-Forwards"),
    ],
)
def test_rfc4475_3_3_8_two_single_valued_headers_get_400_naming_it(extra: str, named: str) -> None:
    reply = only_400(sip_request("INVITE", extra=(extra,)))
    assert named in reply.reason and "more than one" in reply.reason


def test_rfc4475_3_3_9_multiple_content_length_values_get_400() -> None:
    data = sip_request("OPTIONS", extra=("Content-Length: 5", "Content-Type: text/plain"))
    assert "Content-Length" in only_400(data).reason


# -- RFC 4475 §3.1.2.1: empty Via / Contact elements ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "empty"),
    [
        ("SIP/2.0/UDP 192.0.2.15;;,;,,", True),
        ('"Joe" <sip:joe@example.org>;;;;', True),
        ("<sip:a@h>,,<sip:b@h>", True),
        ("<sip:a@h>;", True),
        ("SIP/2.0/UDP h;branch=z9hG4bKx", False),
        ('"a;,b" <sip:a@h;lr>;q=0.5, <sip:b@h>', False),
        ("*", False),
    ],
)
def test_rfc4475_3_1_2_1_empty_elements_are_found(value: str, empty: bool) -> None:
    assert empty_element(value) is empty


def test_rfc4475_3_1_2_1_badinv01_gets_a_valid_400() -> None:
    """The torture test's extraneous separators: 400, with a Via the reply can carry."""
    data = sip_request(
        "INVITE", via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKbad01;;,;,,"
    ).replace(b"Contact: <sip:alice@127.0.0.1:40000>", b'Contact: "Joe" <sip:joe@example.org>;;;;')
    reply = only_400(data)
    assert "Via" in reply.reason
    assert [v.branch for v in reply.vias] == ["z9hG4bKbad01"]


@pytest.mark.parametrize("contact", ['"Joe" <sip:joe@example.org>;;;;', "<sip:a@h>,,<sip:b@h>"])
def test_rfc4475_3_1_2_1_contact_with_empty_elements_gets_400(contact: str) -> None:
    data = INVITE.replace(b"Contact: <sip:alice@127.0.0.1:40000>", f"Contact: {contact}".encode())
    assert "Contact" in only_400(data).reason


# -- RFC 3261 §8.1.1.5 / §20.16: CSeq out of range still gets its 400 ----------------------------


@pytest.mark.parametrize(
    ("value", "echoed"),
    [
        ("-1 OPTIONS", "0 OPTIONS"),
        ("2147483648 OPTIONS", "2147483647 OPTIONS"),
        ("9" * 5000 + " OPTIONS", "2147483647 OPTIONS"),
        ("1 OPTIONS extra", "1 OPTIONS"),
    ],
)
def test_rfc3261_8_1_1_5_out_of_range_cseq_gets_a_400_that_parses(value: str, echoed: str) -> None:
    reply = only_400(sip_request(cseq=value))
    assert reply.headers.get("CSeq") == echoed
    assert reply.cseq.method == "OPTIONS"


def test_rfc3261_8_1_1_5_sanitised_cseq_keeps_valid_values_and_refuses_words() -> None:
    assert sanitised_cseq("1 INVITE", "OPTIONS") == "1 INVITE"
    assert sanitised_cseq("one OPTIONS", "OPTIONS") is None
    assert sanitised_cseq("", "OPTIONS") is None
    assert sanitised_cseq("+7 X", "INVITE") == "7 INVITE"


# -- RFC 3261 §18.2.2: a 400 goes where any response goes ----------------------------------------


@pytest.mark.parametrize(
    ("via", "dest"),
    [
        ("SIP/2.0/UDP 192.0.2.99:5999;branch=z9hG4bKr1;rport", ("127.0.0.1", 61000)),
        ("SIP/2.0/UDP 192.0.2.99:5999;branch=z9hG4bKr1;rport=x", ("127.0.0.1", 61000)),
        ("SIP/2.0/UDP 192.0.2.99:5999;branch=z9hG4bKr1", ("127.0.0.1", 5999)),
        ("SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKr1;maddr=192.0.2.7", ("127.0.0.1", 5060)),
    ],
)
def test_rfc3261_18_2_2_error_response_goes_to_the_source_not_the_via_host(
    via: str, dest: tuple[str, int]
) -> None:
    stack = Stack()
    sent = stack.receive(sip_request(via=via, content_length="x"), ("127.0.0.1", 61000))
    [(response, addr)] = stack.responses(sent)
    stack.close()
    assert response.status == 400
    assert addr == dest
    assert response.top_via.received == "127.0.0.1"
    if "rport" in via:
        assert response.top_via.rport == 61000


def test_rfc3261_18_2_2_error_response_bytes_without_a_source_names_no_address() -> None:
    salvaged = error_response_bytes(sip_request(content_length="x"), BadRequest("bad"))
    assert salvaged is not None and salvaged[1] is None


@pytest_twisted.ensureDeferred
async def test_rfc3261_18_2_2_400_reaches_the_sender_over_udp(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """Over real sockets: the Via names a host that is not the sender; the 400 still arrives."""
    bob = await peers("bob")
    sender = raw_ua()
    got = sender.expect(is_response(400))
    data = sip_request(
        uri=f"sip:bob@127.0.0.1:{bob.port}",
        via="SIP/2.0/UDP 192.0.2.99:5999;branch=z9hG4bKudp400;rport",
        content_length="x",
    )
    sender.send(data, ("127.0.0.1", bob.port))
    reply = await got
    assert isinstance(reply, Response)
    assert (reply.top_via.received, reply.top_via.rport) == ("127.0.0.1", sender.port)
    assert "Content-Length" in reply.reason


# -- RFC 3261 §25: nothing invalid is echoed ------------------------------------------------------


def test_rfc3261_20_22_max_forwards_of_4300_digits_gets_400_not_500() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: " + b"7" * 4300)
    assert "Max-Forwards" in only_400(data).reason


@pytest.mark.parametrize(
    "data",
    [
        sip_request(content_length="9" * 5000),
        sip_request(via="SIP/2.0/UDP 127.0.0.1:" + "5" * 5000 + ";branch=z9hG4bKp"),
        sip_request(uri="sip:bob@127.0.0.1:" + "5" * 5000),
        sip_request(via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKp;rport=" + "5" * 5000),
    ],
    ids=["content-length", "via-port", "uri-port", "rport"],
)
def test_rfc3261_25_huge_numbers_are_bad_requests_not_internal_errors(data: bytes) -> None:
    stack = Stack()
    for raw in exchange(stack, data):
        assert assert_valid_sip(raw)
    assert stack.metrics.total("sipd_internal_errors_total") == 0


# (header, new value) pairs; each must be refused with a valid 400 or dropped.
BAD_VALUES = [
    ("Call-ID", "abc\x00def@h"),
    ("Call-ID", "abc\rdef@h"),
    ("Call-ID", ""),
    ("Call-ID", "two words@h"),
    ("Call-ID", "tab\tbed@h"),
    ("Via", "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK\x00x;rport"),
    ("Via", "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKa b;rport"),
    ("Via", "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKv1, garbage"),
    ("Via", "SIP/2.0/UDP h<>:40000;branch=z9hG4bKv2"),
    ("Via", "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKv3;ttl=999"),
    ("Via", "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKv4;rport=65536"),
    ("CSeq", "1 INV\x00ITE"),
    ("CSeq", "-5 INVITE"),
    ("From", "Alice <sip:alice@127.0.0.1>;tag=a1\x00b2"),
    ("From", "Alice <sip:alice@127.0.0.1>;tag=a1 b2"),
    ("To", "Bob\r <sip:bob@127.0.0.1>"),
    ("Subject", "hello\x00world"),
    ("Contact", "<sip:alice@127.0.0.1:40000>\x7f"),
]


def _with_value(data: bytes, name: str, value: str) -> bytes:
    lines = data.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower().encode() + b":"):
            lines[i] = f"{name}: {value}".encode()
            return b"\r\n".join(lines)
    head, _, body = data.partition(b"\r\n\r\n")
    return head + f"\r\n{name}: {value}".encode() + b"\r\n\r\n" + body


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_rfc3261_25_replies_never_echo_invalid_values(name: str, value: str) -> None:
    """Each bad value: a valid 400 or silence; never a 180/200/BYE carrying it."""
    sent = replies(_with_value(INVITE, name, value))
    assert len(sent) <= 1
    assert all(isinstance(m, Response) and m.status == 400 for m in sent)


MUTATIONS = ["\x00", "\r", "\n", " ", "\t", "\x7f", ";;", ",,", "", "9" * 4400]


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(["Via", "Call-ID", "CSeq", "From", "To", "Max-Forwards", "Contact"]),
    insert=st.sampled_from(MUTATIONS),
    where=st.floats(0, 1),
    method=st.sampled_from(["INVITE", "OPTIONS", "BYE"]),
)
def test_rfc3261_25_every_reply_to_a_mutated_request_reparses(
    name: str, insert: str, where: float, method: str
) -> None:
    """Bytes inserted into one header of a valid request: every datagram sent back parses."""
    base = INVITE if method == "INVITE" else sip_request(method)
    lines = base.split(b"\r\n")
    i = next(n for n, line in enumerate(lines) if line.lower().startswith(name.lower().encode()))
    line = lines[i].decode()
    pos = len(name) + 2 + int(where * (len(line) - len(name) - 2))
    lines[i] = (line[:pos] + insert + line[pos:]).encode()
    stack = Stack()
    for raw in exchange(stack, b"\r\n".join(lines)):
        assert_valid_sip(raw)
    assert stack.metrics.total("sipd_internal_errors_total") == 0


def test_rfc3261_20_43_warning_quoting_the_peers_sdp_stays_a_valid_quoted_string() -> None:
    """A 488's Warning quotes the SDP fault; quotes, backslashes and NULs in it are escaped."""
    sdp = SDP.replace(b"m=audio 49170 RTP/AVP 0 8 101", b"m=audio 49170 RTP/AVP 97").replace(
        b"a=rtpmap:0 PCMU/8000", b'a=rtpmap:97 A"B\\\x00C/8000'
    )
    data = sip_request("INVITE", extra=("Content-Type: application/sdp",), body=sdp)
    [refusal] = [m for m in replies(data) if isinstance(m, Response) and m.status == 488]
    warning = refusal.headers.get("Warning") or ""
    assert re.fullmatch(r'399 sipd "(?:[^"\\\x00-\x1f]|\\.)*"', warning), warning
    assert 'A\\"B\\\\ C/8000' in warning


def test_rfc3261_7_3_1_response_with_two_call_ids_is_dropped_and_counted() -> None:
    stack = Stack()
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCall-ID: d\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    assert stack.receive(data) == []
    assert stack.metrics.total("sipd_sip_parse_errors_total") == 1
    stack.close()


def test_rfc3261_25_1_quoted_text_escapes_what_a_quoted_string_cannot_hold() -> None:
    assert quoted_text('a "b" \\ c\x00d\r\n') == '"a \\"b\\" \\\\ c d  "'
