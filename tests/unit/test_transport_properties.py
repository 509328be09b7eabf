"""Property test: nothing a remote party sends breaks the SIP stack.

Arbitrary bytes and mutated valid SIP messages go into
``SipDatagramProtocol.datagramReceived`` of a real UA (transaction layer,
dialog adapter, coordinator, sessions) on a fake socket and a ``task.Clock``.
Whatever arrives, no exception escapes, no internal error is logged, and
every datagram the stack sends back is a valid SIP response. Each example
starts a fresh UA and closes it afterwards, proving no timer or transaction
outlives it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from sipd.sip.message import Response, parse_message
from tests.unit.test_transport_udp import REMOTE, VIA, Stack, sip_request

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=sendrecv\r\n"
)


def _response(status: str, method: str, to_tag: str = ";tag=b0b") -> bytes:
    return (
        f"SIP/2.0 {status}\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours1;rport=5060\r\n"
        f"To: Bob <sip:bob@127.0.0.1>{to_tag}\r\n"
        "From: Alice <sip:alice@127.0.0.1>;tag=a1b2c3\r\n"
        "Call-ID: transport-test-1@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:bob@127.0.0.1:40000>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


VALID_MESSAGES = [
    sip_request("OPTIONS"),
    sip_request("INVITE", extra=("Content-Type: application/sdp",), body=SDP),
    sip_request("INVITE"),
    sip_request("ACK", to="Bob <sip:bob@127.0.0.1>;tag=b0b"),
    sip_request("BYE", to="Bob <sip:bob@127.0.0.1>;tag=b0b"),
    sip_request("CANCEL"),
    sip_request("REGISTER", uri="sip:127.0.0.1"),
    sip_request("FOO"),
    sip_request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:40000;branch=1234"),  # RFC 2543 peer
    _response("200 OK", "INVITE"),
    _response("180 Ringing", "INVITE"),
    _response("486 Busy Here", "INVITE"),
    _response("200 OK", "BYE"),
]

INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b":", b" ", b";", b"<", b"\r\n\r\n", b"\xff"]
BAD_CSEQS = [
    b"CSeq: abc INVITE",
    b"CSeq: 1",
    b"CSeq: -1 OPTIONS",
    b"CSeq: 99999999999999999999999 OPTIONS",
    b"CSeq: 1 BYE",
    b"CSeq:",
    b"CSeq: 1 OPTIONS extra",
]
NASTY_VALUES = [
    b"",
    b"<",
    b'"unterminated <sip:a@h>',
    b"<sip:a@h",
    b"sip:",
    b"<sip:a@h>;tag",
    b"<sip:a@h>;tag=",
    b";;;",
    b"<http://example.com/>",
    b"SIP/2.0/UDP",
    b"SIP/2.0/UDP h:99999;branch=z9hG4bKx",
    b"SIP/2.0/UDP h;rport=x",
    b"SIP/2.0/TCP [::1;branch=z9hG4bKx",
    b"SIP/3.0/UDP h;branch=z9hG4bKx",
    b"-1",
    b"256",
    b"\xc3\x28",
]
HUGE_LENGTHS = [b"4294967296", b"99999999999999999999", b"65536", b"-1", b"1e9", b"0x10"]


def _replace_header(data: bytes, name: bytes, line: bytes) -> bytes:
    lines = data.split(b"\r\n")
    for i, existing in enumerate(lines):
        if existing.lower().startswith(name.lower() + b":"):
            lines[i] = line
            return b"\r\n".join(lines)
    return data


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message with a few byte- and line-level mutations applied."""
    data = draw(st.sampled_from(VALID_MESSAGES))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "insert", "dup-line", "del-line", "length", "cseq", "value"]
            )
        )
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            mask = draw(st.integers(1, 255))
            data = data[:pos] + bytes([data[pos] ^ mask]) + data[pos + 1 :]
        elif kind == "truncate":
            data = data[:pos]
        elif kind == "insert":
            data = data[:pos] + draw(st.sampled_from(INSERTS)) + data[pos:]
        elif kind in ("dup-line", "del-line"):
            lines = data.split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "dup-line":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = b"\r\n".join(lines)
        elif kind == "value":
            # Replace one header's value: reaches the lazily parsed headers.
            lines = data.split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            name, colon, _ = lines[i].partition(b":")
            if colon:
                value = draw(st.one_of(st.sampled_from(NASTY_VALUES), st.binary(max_size=12)))
                lines[i] = name + b": " + value
                data = b"\r\n".join(lines)
        elif kind == "length":
            value = draw(st.sampled_from(HUGE_LENGTHS))
            data = _replace_header(data, b"Content-Length", b"Content-Length: " + value)
        elif kind == "cseq":
            data = _replace_header(data, b"CSeq", draw(st.sampled_from(BAD_CSEQS)))
    return data


datagrams = st.one_of(
    st.binary(max_size=1500),
    mutated_messages(),
    st.sampled_from(VALID_MESSAGES),
)


@implementer(ILogObserver)
class FailureLog:
    """Collects logged failures (tracebacks) from sipd: each one is a bug."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if "log_failure" in event and str(event.get("log_namespace", "")).startswith("sipd"):
            self.events.append(event)


@pytest.fixture
def failures() -> Iterator[FailureLog]:
    observer = FailureLog()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(packets=st.lists(datagrams, min_size=1, max_size=3))
def test_any_datagram_is_answered_only_with_valid_responses(
    packets: list[bytes], failures: FailureLog
) -> None:
    """No input raises, logs an internal failure, or draws anything but valid responses."""
    failures.events.clear()
    stack = Stack()
    sent = []
    for data in packets:
        sent += stack.receive(data, REMOTE)
    # Let timers run (2xx and error retransmissions), short of Timer B/H.
    for _ in range(8):
        before = len(stack.wire.sent)
        stack.reactor.advance(0.5)
        sent += stack.wire.sent[before:]
    for data, addr in sent:
        message = parse_message(data)
        assert isinstance(message, Response), data
        assert 100 <= message.status <= 699
        assert addr[1] > 0
    assert stack.metrics.total("sipd_internal_errors_total") == 0
    assert [e.get("log_format") for e in failures.events] == []
    stack.close()


def test_mutations_reach_the_dialog_layer() -> None:
    """The seed messages are valid, so mutations start from messages the stack answers."""
    stack = Stack()
    answered = 0
    for data in VALID_MESSAGES:
        message = parse_message(data)
        replies = stack.receive(data, REMOTE)
        if not isinstance(message, Response) and message.method != "ACK":
            answered += bool(replies)
    stack.close()
    assert answered == sum(
        1
        for data in VALID_MESSAGES
        if not isinstance(parse_message(data), Response) and not data.startswith(b"ACK")
    )
    assert VIA in VALID_MESSAGES[0].decode()
