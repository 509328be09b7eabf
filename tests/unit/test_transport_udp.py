"""Tests of the SIP UDP transport edge (``sipd/transport/udp.py``).

``MemoryReactor`` has no UDP, so :class:`FakeUdpReactor` (a ``task.Clock``
that can also "listen" on UDP) hands each protocol a
:class:`FakeDatagramTransport` recording what is written. A real
:class:`UnifiedCoordinator` is started on it, so every datagram goes through
the real parser, transaction layer and dialog adapter, exactly as on a socket.
The helpers at the top are shared with ``test_transport_properties.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

from sipd.config import SipdConfig
from sipd.session.coordinator import UnifiedCoordinator
from sipd.session.interceptor import InviteDetails, Reject, SignalingDecision
from sipd.sip.message import Request, Response, parse_message
from sipd.sip.via import parse_via
from sipd.transport.udp import SipDatagramProtocol, error_response_bytes, stamp_received

Addr = tuple[str, int]

# --------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------

LOCAL: Addr = ("127.0.0.1", 5060)
REMOTE: Addr = ("127.0.0.1", 40000)
VIA = "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKtransport1"


class FakeDatagramTransport:
    """Stands in for a bound UDP port: records ``write(data, addr)``."""

    def __init__(self, protocol: DatagramProtocol, host: str, port: int) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.sent: list[tuple[bytes, Addr]] = []
        self.listening = True

    def write(self, data: bytes, addr: Addr) -> None:
        self.sent.append((data, (addr[0], addr[1])))

    def getHost(self) -> IPv4Address | IPv6Address:
        if ":" in self.host:
            return IPv6Address("UDP", self.host, self.port)
        return IPv4Address("UDP", self.host, self.port)

    def stopListening(self) -> None:
        if self.listening:
            self.listening = False
            self.protocol.doStop()


class FakeUdpReactor(Clock):
    """A ``task.Clock`` whose ``listenUDP`` attaches a :class:`FakeDatagramTransport`."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakeDatagramTransport] = []
        self._next_port = 20000

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeDatagramTransport:
        if port == 0:
            self._next_port += 2
            port = self._next_port
        transport = FakeDatagramTransport(protocol, interface or "0.0.0.0", port)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.ports.append(transport)
        return transport


class RejectAll:
    """A signalling handler that declines every call (no media is ever set up)."""

    def __init__(self, code: int = 603) -> None:
        self.code = code

    def on_incoming_invite(self, invite: InviteDetails) -> SignalingDecision:
        return Reject(self.code, None)

    def on_response(self, dialog_id: str, response: Response) -> SignalingDecision:
        return Reject(self.code, None)


class Stack:
    """A real UA (coordinator, transaction layer, dialog adapter) on a fake socket."""

    def __init__(self, handler: Any = None, **settings: Any) -> None:
        self.reactor = FakeUdpReactor()
        config = SipdConfig(name="bob", host=LOCAL[0], port=LOCAL[1], **settings)
        self.coordinator = UnifiedCoordinator(config, handler, reactor=self.reactor)
        self.coordinator.start()
        self.protocol: SipDatagramProtocol = self.coordinator.transport
        self.wire = self.reactor.ports[0]

    @property
    def metrics(self) -> Any:
        return self.coordinator.metrics

    def receive(self, data: bytes, source: Addr = REMOTE) -> list[tuple[bytes, Addr]]:
        """Deliver one datagram; returns what the stack sent in reaction."""
        before = len(self.wire.sent)
        self.protocol.datagramReceived(data, source)
        return self.wire.sent[before:]

    def responses(self, sent: list[tuple[bytes, Addr]]) -> list[tuple[Response, Addr]]:
        """Parse what was sent; every datagram must be a response."""
        out = []
        for data, addr in sent:
            message = parse_message(data)
            assert isinstance(message, Response), data
            out.append((message, addr))
        return out

    def close(self) -> None:
        """End everything and prove no timer is left behind."""
        d = self.coordinator.close()
        self.reactor.advance(10)
        for _ in range(100):
            if not self.reactor.getDelayedCalls():
                break
            self.reactor.advance(60)
        assert d.called
        assert self.reactor.getDelayedCalls() == []
        assert self.coordinator.layer is not None
        assert len(self.coordinator.layer) == 0


def sip_request(
    method: str = "OPTIONS",
    *,
    uri: str = "sip:bob@127.0.0.1:5060",
    version: str = "SIP/2.0",
    via: str = f"{VIA};rport",
    cseq: str | None = None,
    to: str = "Bob <sip:bob@127.0.0.1>",
    call_id: str = "transport-test-1@127.0.0.1",
    extra: tuple[str, ...] = (),
    body: bytes = b"",
    content_length: str | None = None,
) -> bytes:
    """A request on the wire, with any one part replaceable by a broken one."""
    lines = [
        f"{method} {uri} {version}",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"To: {to}",
        "From: Alice <sip:alice@127.0.0.1>;tag=a1b2c3",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq if cseq is not None else '1 ' + method}",
        "Contact: <sip:alice@127.0.0.1:40000>",
        *extra,
        f"Content-Length: {content_length if content_length is not None else len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.close()


@implementer(ILogObserver)
class LogCollector:
    """Collects the events one module logs through the global publisher."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_namespace") == self.namespace:
            self.events.append(event)

    @property
    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


@pytest.fixture
def udp_log() -> Iterator[LogCollector]:
    collector = LogCollector("sipd.transport.udp")
    globalLogPublisher.addObserver(collector)
    yield collector
    globalLogPublisher.removeObserver(collector)


def _request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


# --------------------------------------------------------------------------
# received / rport (RFC 3261 §18.2.1, RFC 3581 §4)
# --------------------------------------------------------------------------


def test_rport_request_gets_source_port_and_received() -> None:
    """A bare ``;rport`` is filled with the source port and ``received`` is added."""
    request = _request(sip_request(via="SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKa;rport"))
    stamp_received(request, ("192.0.2.7", 61000))
    via = request.top_via
    assert via.rport == 61000
    assert via.received == "192.0.2.7"
    assert via.branch == "z9hG4bKa"


def test_rport_gets_received_even_when_sent_by_matches() -> None:
    """RFC 3581 §4: ``received`` is added whenever rport was asked for."""
    request = _request(sip_request(via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKa;rport"))
    stamp_received(request, ("127.0.0.1", 40000))
    assert request.top_via.rport == 40000
    assert request.top_via.received == "127.0.0.1"


def test_sent_by_differing_from_source_gets_received() -> None:
    """§18.2.1: a sent-by host other than the packet's source gets ``received``."""
    request = _request(sip_request(via="SIP/2.0/UDP pc33.example.com:5070;branch=z9hG4bKa"))
    stamp_received(request, ("192.0.2.7", 5070))
    assert request.top_via.received == "192.0.2.7"
    assert request.top_via.rport is None


def test_matching_sent_by_without_rport_is_left_alone() -> None:
    """A Via whose sent-by is the source, without rport, is not touched."""
    data = sip_request(via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKa")
    request = _request(data)
    stamp_received(request, ("127.0.0.1", 40000))
    assert request.headers.get_all("Via") == ["SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKa"]


def test_bracketed_ipv6_sent_by_matches_its_source() -> None:
    """An IPv6 sent-by in brackets equals the bare source address."""
    request = _request(sip_request(via="SIP/2.0/UDP [::1]:40000;branch=z9hG4bKa"))
    stamp_received(request, ("::1", 40000))
    assert request.top_via.received is None


def test_only_the_top_via_is_stamped() -> None:
    """Lower Via values (earlier hops) are kept byte for byte and in order."""
    data = sip_request(
        via="SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKtop;rport",
        extra=("Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKlower;rport",),
    )
    request = _request(data)
    stamp_received(request, ("192.0.2.7", 61000))
    vias = request.headers.get_all("Via")
    assert len(vias) == 2
    assert parse_via(vias[0]).received == "192.0.2.7"
    assert vias[1] == "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKlower;rport"


# --------------------------------------------------------------------------
# where responses go (RFC 3261 §18.2.2, RFC 3581 §4), end to end
# --------------------------------------------------------------------------


def test_response_goes_to_received_and_rport(stack: Stack) -> None:
    """With rport the response goes to the source address and port, not sent-by."""
    data = sip_request(via="SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKr1;rport")
    [(response, addr)] = stack.responses(stack.receive(data, ("192.0.2.7", 61000)))
    assert response.status == 200
    assert addr == ("192.0.2.7", 61000)
    assert response.top_via.received == "192.0.2.7"
    assert response.top_via.rport == 61000


def test_response_without_rport_goes_to_received_and_sent_by_port(stack: Stack) -> None:
    """Without rport: the received host and the sent-by port (§18.2.2)."""
    data = sip_request(via="SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKr2")
    [(response, addr)] = stack.responses(stack.receive(data, ("192.0.2.7", 61000)))
    assert addr == ("192.0.2.7", 5070)
    assert response.top_via.received == "192.0.2.7"


def test_response_without_port_goes_to_5060(stack: Stack) -> None:
    """A sent-by without a port means 5060."""
    data = sip_request(via="SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKr3")
    [(_, addr)] = stack.responses(stack.receive(data, ("127.0.0.1", 61000)))
    assert addr == ("127.0.0.1", 5060)


def test_response_honours_maddr(stack: Stack) -> None:
    """``maddr`` in the top Via names where the response goes (§18.2.2)."""
    data = sip_request(via="SIP/2.0/UDP 10.1.1.1:5072;branch=z9hG4bKr4;maddr=127.0.0.9")
    [(_, addr)] = stack.responses(stack.receive(data, ("127.0.0.1", 61000)))
    assert addr == ("127.0.0.9", 5072)


def test_request_is_counted_by_method(stack: Stack) -> None:
    """Every parsed request increments the received-requests counter for its method."""
    stack.receive(sip_request())
    assert stack.metrics.get("sipd_sip_requests_received_total", method="OPTIONS") == 1


# --------------------------------------------------------------------------
# requests that do not parse: 400 / 505 / 416
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (sip_request(content_length="ten"), ["Content-Length"]),
        (sip_request(content_length="500", body=b"v=0\r\n"), ["shorter", "Content-Length"]),
        (sip_request(cseq="1 INVITE"), ["CSeq", "INVITE", "OPTIONS"]),
        (sip_request(extra=("this line has no colon",)), ["header line"]),
        (sip_request(to="Bob <sip:bob@127.0.0.1"), ["To header", "unterminated"]),
        (sip_request().replace(b"Max-Forwards: 70", b"Max-Forwards: lots"), ["Max-Forwards"]),
        (sip_request(via=f"{VIA};rport=x"), ["rport"]),
    ],
    ids=["bad-length", "short-body", "cseq-method", "no-colon", "bad-to", "max-fwd", "rport"],
)
def test_malformed_request_gets_400_naming_the_problem(
    stack: Stack, data: bytes, words: list[str]
) -> None:
    """A request that does not parse is answered 400 with a reason naming the fault."""
    sent = stack.receive(data)
    [(response, addr)] = stack.responses(sent)
    assert response.status == 400
    for word in words:
        assert word.lower() in response.reason.lower(), response.reason
    assert response.call_id == "transport-test-1@127.0.0.1"
    assert response.top_via.branch == "z9hG4bKtransport1"
    assert addr == REMOTE
    assert stack.metrics.total("sipd_sip_parse_errors_total") == 1


@pytest.mark.parametrize("contact", ["<sip:alice@127.0.0.1", "<http://example.com/>"])
def test_invite_with_bad_contact_gets_400_without_a_logged_failure(contact: str) -> None:
    """A broken Contact is the peer's fault: 400 naming Contact, no traceback logged."""
    failures: list[LogEvent] = []
    globalLogPublisher.addObserver(failures.append)
    stack = Stack()
    try:
        data = sip_request("INVITE").replace(
            b"Contact: <sip:alice@127.0.0.1:40000>", f"Contact: {contact}".encode()
        )
        [(response, addr)] = stack.responses(stack.receive(data))
    finally:
        globalLogPublisher.removeObserver(failures.append)
    assert response.status == 400
    assert "Contact" in response.reason
    assert addr == REMOTE
    assert [e for e in failures if "log_failure" in e] == []
    assert stack.coordinator.dialogs.legs == {}
    stack.close()


def test_bad_sip_version_gets_505(stack: Stack) -> None:
    """A request line with SIP/3.0 is answered 505 Version Not Supported."""
    [(response, _)] = stack.responses(stack.receive(sip_request(version="SIP/3.0")))
    assert response.status == 505
    assert "3.0" in response.reason


def test_http_request_uri_gets_416(stack: Stack) -> None:
    """An http: Request-URI is answered 416 Unsupported URI Scheme."""
    data = sip_request(uri="http://bob.example.com/")
    [(response, addr)] = stack.responses(stack.receive(data))
    assert response.status == 416
    assert "http" in response.reason
    assert addr == REMOTE


def test_error_response_without_rport_uses_via_address(stack: Stack) -> None:
    """An error response follows §18.2.2 too: sent-by port when rport was not asked."""
    data = sip_request(via="SIP/2.0/UDP 127.0.0.1:5077;branch=z9hG4bKe1", version="SIP/1.0")
    [(response, addr)] = stack.responses(stack.receive(data, ("127.0.0.1", 61000)))
    assert response.status == 505
    assert addr == ("127.0.0.1", 5077)


@pytest.mark.parametrize(
    "data",
    [
        sip_request().replace(b"Call-ID: transport-test-1@127.0.0.1\r\n", b""),
        sip_request(cseq="one OPTIONS"),
    ],
    ids=["no-call-id", "bad-cseq"],
)
def test_unanswerable_request_is_dropped(stack: Stack, data: bytes) -> None:
    """Without a Call-ID or a valid CSeq no valid response exists: drop and count."""
    assert stack.receive(data) == []
    assert stack.metrics.total("sipd_sip_parse_errors_total") == 1


def test_malformed_ack_is_never_answered(stack: Stack) -> None:
    """An ACK is never answered (§17), even when one of its headers is broken."""
    data = sip_request("ACK", to="Bob <sip:bob@127.0.0.1;tag=x")
    assert stack.receive(data) == []
    assert stack.metrics.total("sipd_sip_parse_errors_total") == 1


def test_error_response_bytes_refuses_responses() -> None:
    """A response is never answered, however broken."""
    from sipd.sip.errors import BadRequest

    data = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n"
    assert error_response_bytes(data, BadRequest("x")) is None


# --------------------------------------------------------------------------
# responses and garbage: dropped silently, counted
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCSeq: 1 OPTIONS\r\n\r\n",
        b"SIP/2.0 999 Odd\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: not a via at all\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
    ],
    ids=["no-call-id", "status-999", "bad-via"],
)
def test_bad_response_is_dropped_silently_and_counted(stack: Stack, data: bytes) -> None:
    """A response that does not parse gets no answer; the parse-error counter rises."""
    assert stack.receive(data) == []
    assert stack.metrics.total("sipd_sip_parse_errors_total") == 1


@pytest.mark.parametrize(
    "data",
    [b"\x00\xff\xfe garbage \x01\x02\r\n\r\n", b"hello world", bytes(range(256)) * 4],
    ids=["binary", "text", "all-bytes"],
)
def test_garbage_datagram_is_dropped_and_counted(stack: Stack, data: bytes) -> None:
    """A datagram that is not SIP at all is dropped and counted."""
    assert stack.receive(data) == []
    assert stack.metrics.total("sipd_sip_parse_errors_total") == 1


@pytest.mark.parametrize("data", [b"\r\n", b"\r\n\r\n", b"\r\n\r\n\r\n\r\n", b"", b"\n"])
def test_keepalive_crlf_is_ignored(stack: Stack, data: bytes, udp_log: LogCollector) -> None:
    """RFC 5626 CRLF keep-alives: no answer, no error counted, nothing logged."""
    assert stack.receive(data) == []
    assert stack.metrics.total("sipd_sip_parse_errors_total") == 0
    assert udp_log.events == []


def test_datagram_before_a_handler_is_set_is_dropped() -> None:
    """A protocol not yet wired to a transaction layer drops what it receives."""
    reactor = FakeUdpReactor()
    protocol = SipDatagramProtocol(reactor)
    wire = reactor.listenUDP(0, protocol)
    protocol.datagramReceived(sip_request(), REMOTE)
    assert wire.sent == []


def test_send_without_transport_raises_oserror() -> None:
    """Sending on an unbound protocol fails with OSError (the layer's transport error)."""
    protocol = SipDatagramProtocol(Clock())
    with pytest.raises(OSError, match="not listening"):
        protocol.send(b"x", REMOTE)


def test_send_strips_ipv6_brackets() -> None:
    """A bracketed IPv6 host from a Via is written as a bare address."""
    reactor = FakeUdpReactor()
    protocol = SipDatagramProtocol(reactor)
    wire = reactor.listenUDP(0, protocol)
    protocol.send(b"x", ("[::1]", 5060))
    assert wire.sent == [(b"x", ("::1", 5060))]


# --------------------------------------------------------------------------
# rate-limited logging of bad input
# --------------------------------------------------------------------------


def test_bad_input_logging_is_rate_limited(stack: Stack, udp_log: LogCollector) -> None:
    """1,000 bad datagrams log at most the burst; the next window logs one summary."""
    for i in range(1000):
        stack.receive(b"garbage %d" % i, ("192.0.2.1", 1000 + i))
    assert stack.metrics.total("sipd_sip_parse_errors_total") == 1000
    burst = len(udp_log.events)
    assert 1 <= burst <= 10
    stack.reactor.advance(61)
    stack.receive(b"one more garbage datagram")
    texts = udp_log.texts[burst:]
    summaries = [t for t in texts if "suppressed" in t]
    assert len(summaries) == 1
    assert str(1000 - burst) in summaries[0]
    assert len(texts) == 2  # the summary and the new window's first warning


def test_rate_limited_flood_of_malformed_requests_still_answers_each(
    stack: Stack, udp_log: LogCollector
) -> None:
    """Logging is bounded, answering is not: each malformed request still gets its 400."""
    sent = []
    for i in range(200):
        via = f"SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKflood{i};rport"
        sent += stack.receive(sip_request(via=via, content_length="x"))
    assert [r.status for r, _ in stack.responses(sent)] == [400] * 200
    assert len(udp_log.events) <= 10
