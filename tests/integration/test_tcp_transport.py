"""SIP over TCP between real sockets on 127.0.0.1: sipd.transport.tcp.StreamTransport.

Two transports exchange messages both ways; raw Twisted TCP clients play
the peers the RFC and an attacker describe (silent connections by the
hundred, an endless header, a half message, a ping). Timers (idle,
keep-alive) run on a ``task.Clock`` so they are advanced, never waited for;
after each test every transport is closed and its clock holds no timer.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from sipd.errors import SipdValueError, TransportError
from sipd.sip.message import Request, Response, make_response, parse_message
from sipd.sip.transaction import new_branch
from sipd.transport.tcp import (
    StreamKind,
    StreamTransport,
    choose_transport,
    default_port,
    transport_from_via,
    via_transport,
)
from tests.conftest import eventually, get_reactor, settle, within

Addr = tuple[str, int]
Message = Request | Response


def sip_request(
    method: str = "OPTIONS",
    *,
    via_port: int = 5060,
    transport: str = "TCP",
    body: bytes = b"",
    call_id: str = "stream-test",
    content_length: bool = True,
) -> bytes:
    """A request as a peer writes it by hand (not through sipd's serialiser)."""
    lines = [
        f"{method} sip:bob@127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{via_port};branch={new_branch()};rport",
        "Max-Forwards: 70",
        "From: <sip:alice@127.0.0.1>;tag=alice",
        "To: <sip:bob@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
    ]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Node:
    """A StreamTransport plus what it received; it answers requests 200 on their connection."""

    def __init__(self, transport: StreamTransport, clock: task.Clock, port: int) -> None:
        self.transport = transport
        self.clock = clock
        self.port = port
        self.answer = True
        self.received: list[tuple[Message, Addr]] = []
        self.errors: list[tuple[Addr, TransportError]] = []
        self._waiters: list[tuple[Callable[[Message], bool], defer.Deferred[Any]]] = []
        transport.set_handler(self._on_message)
        transport.set_error_handler(self._on_error)

    def _on_message(self, message: Message, source: Addr) -> None:
        self.received.append((message, source))
        if self.answer and isinstance(message, Request):
            response = make_response(message, 200, to_tag="bob")
            self.transport.reply(response.to_bytes(), source, message.top_via)
        for entry in list(self._waiters):
            if entry[0](message):
                self._waiters.remove(entry)
                entry[1].callback((message, source))

    def _on_error(self, addr: Addr, error: TransportError) -> None:
        self.errors.append((addr, error))

    def wait(
        self, match: Callable[[Message], bool] = lambda m: True, timeout: float = 5.0
    ) -> defer.Deferred[Any]:
        """Fires with ``(message, source)`` for the next message ``match`` accepts."""
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiters.append((match, d))
        return within(d, timeout)


class RawPeer(Protocol):
    """A plain TCP peer: records what arrives, writes what the test says."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.gone = False
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.gone = True
        self.reason = reason
        self.lost.callback(None)


class Harness:
    """Makes transports and raw peers for one test; :meth:`close` checks nothing is left."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.raw: list[RawPeer] = []
        self.ports: list[Any] = []
        self._reactor_calls = {id(dc) for dc in get_reactor().getDelayedCalls()}

    def node(self, kind: StreamKind = "tcp", *, listen: bool = True, **settings: Any) -> Node:
        """A transport on its own ``task.Clock``, listening on a free port unless told not to."""
        clock = settings.pop("clock", None) or task.Clock()
        transport = StreamTransport(kind, get_reactor(), clock, **settings)
        port = transport.listen("127.0.0.1", 0) if listen else 0
        node = Node(transport, clock, port)
        self.nodes.append(node)
        return node

    async def connect_raw(self, port: int) -> RawPeer:
        peer = RawPeer()
        self.raw.append(peer)
        await within(connectProtocol(TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port), peer), 5)
        return peer

    async def close(self) -> None:
        for peer in self.raw:
            if not peer.gone and peer.transport is not None:
                peer.transport.abortConnection()  # type: ignore[attr-defined]
        for node in self.nodes:
            await within(node.transport.close(), 10)
        for port in self.ports:
            await port.stopListening()
        leftovers = [dc for node in self.nodes for dc in node.clock.getDelayedCalls()]
        assert leftovers == [], f"timers left after close: {leftovers}"
        await settle(0.05)  # the reactor finishes closing sockets on its next turns
        stray = [
            dc
            for dc in get_reactor().getDelayedCalls()
            if dc.active() and id(dc) not in self._reactor_calls
        ]
        assert stray == [], f"reactor calls left after close: {stray}"


@pytest_twisted.async_yield_fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        await h.close()


def _is_request(method: str) -> Callable[[Message], bool]:
    return lambda m: isinstance(m, Request) and m.method == method


def _is_response(m: Message) -> bool:
    return isinstance(m, Response)


# -- exchanging messages ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_two_transports_exchange_requests_and_responses_both_ways(harness: Harness) -> None:
    alice, bob = harness.node(), harness.node()
    got_request = bob.wait(_is_request("OPTIONS"))
    got_response = alice.wait(_is_response)
    alice.transport.send(sip_request(via_port=alice.port), ("127.0.0.1", bob.port))
    request, source = await got_request
    assert source[0] == "127.0.0.1" and source[1] != alice.port  # alice's connection, not her port
    assert request.top_via.received == "127.0.0.1" and request.top_via.rport == source[1]
    response, response_source = await got_response
    assert response.status == 200 and response_source == ("127.0.0.1", bob.port)
    # The response came back on alice's connection: nobody opened another.
    assert alice.transport.connection_count == 1 and bob.transport.connection_count == 1

    # And the other way: bob's request goes to alice's listening port.
    got_request = alice.wait(_is_request("MESSAGE"))
    got_response = bob.wait(_is_response)
    bob.transport.send(
        sip_request("MESSAGE", via_port=bob.port, body=b"hello over TCP"), ("127.0.0.1", alice.port)
    )
    message, _ = await got_request
    assert message.body == b"hello over TCP"
    assert (await got_response)[0].status == 200
    assert (
        bob.transport.metrics.get("sipd_sip_requests_sent_total", method="MESSAGE", transport="tcp")
        == 1
    )


@pytest_twisted.ensureDeferred
async def test_several_sends_to_one_peer_reuse_one_connection(harness: Harness) -> None:
    alice, bob = harness.node(), harness.node()
    for i in range(5):  # all five are sent before the connection is even up
        alice.transport.send(
            sip_request(via_port=alice.port, call_id=f"reuse-{i}"), ("127.0.0.1", bob.port)
        )
    assert await eventually(lambda: len(bob.received) == 5 and len(alice.received) == 5)
    assert [m.call_id for m, _ in bob.received] == [f"reuse-{i}" for i in range(5)]
    assert len({source for _, source in bob.received}) == 1
    assert bob.transport.connection_count == 1 and alice.transport.connection_count == 1
    assert (
        alice.transport.metrics.get(
            "sipd_sip_connections_opened_total", transport="tcp", direction="out"
        )
        == 1
    )


@pytest_twisted.ensureDeferred
async def test_a_reply_goes_back_on_the_incoming_connection(harness: Harness) -> None:
    """A raw client (not listening anywhere) gets its response on its own connection."""
    bob = harness.node()
    peer = await harness.connect_raw(bob.port)
    peer.transport.write(sip_request(via_port=9))  # type: ignore[union-attr]
    assert await eventually(lambda: b"\r\n\r\n" in peer.received)
    response = parse_message(bytes(peer.received))
    assert isinstance(response, Response) and response.status == 200
    assert bob.transport.connection_count == 1


@pytest_twisted.ensureDeferred
async def test_a_reply_whose_connection_is_gone_goes_to_the_via_address(harness: Harness) -> None:
    """§18.2.2: connection closed, so the response opens one to received + sent-by port."""
    alice, bob = harness.node(), harness.node()
    bob.answer = False
    got = bob.wait(_is_request("OPTIONS"))
    alice.transport.send(sip_request(via_port=alice.port), ("127.0.0.1", bob.port))
    request, source = await got
    conn = alice.transport.connection_for(("127.0.0.1", bob.port))
    assert conn is not None
    conn.close("test")
    assert await eventually(lambda: bob.transport.connection_for(source) is None)
    got_response = alice.wait(_is_response)
    bob.transport.reply(make_response(request, 200, to_tag="b").to_bytes(), source, request.top_via)
    response, response_source = await got_response
    assert response.status == 200
    assert response_source != ("127.0.0.1", bob.port)  # it came in on a new inbound connection


# -- hostile and broken peers ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_500_silent_connections_do_not_stop_service_and_idle_out(harness: Harness) -> None:
    bob = harness.node(idle_timeout=30.0)
    alice = harness.node()
    silent = [harness.connect_raw(bob.port) for _ in range(500)]
    peers = await within(defer.gatherResults([defer.ensureDeferred(c) for c in silent]), 30)
    assert await eventually(lambda: bob.transport.connection_count == 500, timeout=10), (
        bob.transport.connection_count
    )

    got = alice.wait(_is_response)
    alice.transport.send(sip_request(via_port=alice.port), ("127.0.0.1", bob.port))
    assert (await got)[0].status == 200  # served while 500 sockets sit there
    bob.clock.advance(29)
    assert not any(p.gone for p in peers)
    bob.clock.advance(1)
    assert await eventually(lambda: all(p.gone for p in peers), timeout=10)
    assert await eventually(lambda: bob.transport.connection_count == 0)
    assert (
        bob.transport.metrics.get(
            "sipd_sip_connections_closed_total", transport="tcp", reason="idle"
        )
        == 501
    )
    assert bob.errors == []  # our own idle closes are not failures


@pytest_twisted.ensureDeferred
async def test_idle_timer_counts_from_the_last_data_received(harness: Harness) -> None:
    bob = harness.node(idle_timeout=30.0)
    peer = await harness.connect_raw(bob.port)
    assert await eventually(lambda: bob.transport.connection_count == 1)
    bob.clock.advance(20)
    peer.transport.write(b"\r\n\r\n")  # type: ignore[union-attr]
    assert await eventually(lambda: peer.received == b"\r\n")
    bob.clock.advance(20)  # 40 s since it opened, 20 since it spoke
    idle = {"transport": "tcp", "reason": "idle"}
    assert bob.transport.metrics.get("sipd_sip_connections_closed_total", **idle) == 0
    bob.clock.advance(10)
    assert bob.transport.metrics.get("sipd_sip_connections_closed_total", **idle) == 1
    await within(peer.lost, 5)


@pytest_twisted.ensureDeferred
async def test_beyond_max_connections_the_oldest_silent_ones_make_room(harness: Harness) -> None:
    bob = harness.node(max_connections=10)
    peers = [await harness.connect_raw(bob.port) for _ in range(15)]
    assert await eventually(lambda: sum(p.gone for p in peers) == 5)
    assert [p.gone for p in peers] == [True] * 5 + [False] * 10
    assert bob.transport.connection_count == 10
    assert bob.transport.metrics.get("sipd_sip_connections_evicted_total", transport="tcp") == 5
    survivor = peers[-1]
    survivor.transport.write(sip_request())  # type: ignore[union-attr]
    assert await eventually(lambda: b"SIP/2.0 200" in survivor.received)


@pytest_twisted.ensureDeferred
async def test_beyond_max_connections_a_new_one_is_closed_when_every_one_spoke(
    harness: Harness,
) -> None:
    bob = harness.node(max_connections=10)
    peers = [await harness.connect_raw(bob.port) for _ in range(10)]
    for peer in peers:
        peer.transport.write(sip_request())  # type: ignore[union-attr]
    assert await eventually(lambda: all(b"SIP/2.0 200" in p.received for p in peers))
    late = [await harness.connect_raw(bob.port) for _ in range(3)]
    assert await eventually(lambda: all(p.gone for p in late))
    assert not any(p.gone for p in peers)
    assert bob.transport.metrics.get("sipd_sip_connections_refused_total", transport="tcp") == 3


@pytest_twisted.ensureDeferred
async def test_an_endless_header_closes_that_connection_only(harness: Harness) -> None:
    bob = harness.node()
    peer = await harness.connect_raw(bob.port)
    line = b"X-Junk: " + b"j" * 1000 + b"\r\n"
    peer.transport.write(b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n")  # type: ignore[union-attr]
    for _ in range(1024):  # 1 MB that never ends its header block
        if peer.gone:
            break
        peer.transport.write(line)  # type: ignore[union-attr]
    await within(peer.lost, 10)
    assert await eventually(lambda: bob.transport.connection_count == 0)
    assert bob.received == []
    assert (
        bob.transport.metrics.get(
            "sipd_sip_connections_closed_total", transport="tcp", reason="framing"
        )
        == 1
    )
    # Still serving.
    other = await harness.connect_raw(bob.port)
    other.transport.write(sip_request())  # type: ignore[union-attr]
    assert await eventually(lambda: b"SIP/2.0 200" in other.received)


@pytest_twisted.ensureDeferred
async def test_a_request_without_content_length_is_answered_400_and_closed(
    harness: Harness,
) -> None:
    bob = harness.node()
    peer = await harness.connect_raw(bob.port)
    peer.transport.write(sip_request(content_length=False) + b"junk")  # type: ignore[union-attr]
    await within(peer.lost, 5)
    response = parse_message(bytes(peer.received))
    assert isinstance(response, Response) and response.status == 400
    assert "Content-Length" in response.reason
    assert bob.received == []


@pytest_twisted.ensureDeferred
async def test_a_request_that_does_not_parse_gets_400_and_the_connection_stays(
    harness: Harness,
) -> None:
    bob = harness.node()
    peer = await harness.connect_raw(bob.port)
    bad = sip_request().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    peer.transport.write(bad)  # type: ignore[union-attr]
    assert await eventually(lambda: b"SIP/2.0 400" in peer.received)
    peer.transport.write(sip_request())  # type: ignore[union-attr]
    assert await eventually(lambda: b"SIP/2.0 200" in peer.received)
    assert not peer.gone


@pytest_twisted.ensureDeferred
async def test_a_peer_closing_mid_message_frees_the_connection(harness: Harness) -> None:
    bob = harness.node()
    peer = await harness.connect_raw(bob.port)
    assert await eventually(lambda: bob.transport.connection_count == 1)
    peer.transport.write(sip_request(body=b"0123456789")[:-4])  # type: ignore[union-attr]
    peer.transport.loseConnection()  # type: ignore[union-attr]
    assert await eventually(lambda: bob.transport.connection_count == 0)
    assert bob.received == []


@pytest_twisted.ensureDeferred
async def test_a_ping_is_answered_with_one_crlf(harness: Harness) -> None:
    bob = harness.node()
    peer = await harness.connect_raw(bob.port)
    peer.transport.write(b"\r\n\r\n")  # type: ignore[union-attr]
    assert await eventually(lambda: peer.received == b"\r\n")
    assert not peer.gone


# -- failures reported at once -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_fails_every_queued_send_at_once(harness: Harness) -> None:
    alice = harness.node()
    dead = harness.node()
    dead_port = dead.port
    await within(dead.transport.close(), 5)  # nobody listens there now
    failures: list[TransportError] = []
    for _ in range(3):
        alice.transport.send(sip_request(), ("127.0.0.1", dead_port), failures.append)
    assert await eventually(lambda: len(failures) == 3)
    assert str(failures[0]) == f"TCP connection to 127.0.0.1:{dead_port} failed: connection refused"
    assert failures[0].peer == ("127.0.0.1", dead_port) and isinstance(failures[0], OSError)
    assert [addr for addr, _ in alice.errors] == [("127.0.0.1", dead_port)]
    assert alice.transport.connection_count == 0


class _Hangup(Protocol):
    """A server that closes the connection as soon as anything arrives."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_dropped_connection_is_reported_at_once(harness: Harness) -> None:
    endpoint = TCP4ServerEndpoint(get_reactor(), 0, interface="127.0.0.1")
    port = await endpoint.listen(Factory.forProtocol(_Hangup))
    harness.ports.append(port)
    target = ("127.0.0.1", port.getHost().port)
    alice = harness.node()
    alice.transport.send(sip_request(), target)
    assert await eventually(lambda: alice.errors != [])
    (addr, error) = alice.errors[0]
    assert addr == target
    assert str(error) == f"TCP connection to 127.0.0.1:{target[1]} was lost: closed by the peer"
    assert alice.transport.connection_count == 0
    assert alice.clock.seconds() == 0  # reported without any timer running


@pytest_twisted.ensureDeferred
async def test_send_fails_synchronously_when_it_cannot_start(harness: Harness) -> None:
    alice = harness.node(max_connections=1)
    bob = harness.node()
    alice.transport.send(sip_request(), ("127.0.0.1", bob.port))
    try:
        alice.transport.send(sip_request(), ("127.0.0.1", 1))
    except TransportError as exc:
        assert "max_connections" in str(exc)
    else:
        raise AssertionError("a second connection was opened beyond max_connections")
    try:
        alice.transport.send(sip_request(), ("127.0.0.1", 70000))
    except TransportError as exc:
        assert "70000" in str(exc)
    else:
        raise AssertionError("port 70000 was accepted")


@pytest_twisted.ensureDeferred
async def test_keepalive_pings_are_answered_and_a_silent_peer_is_dropped(
    harness: Harness,
) -> None:
    bob = harness.node()
    alice = harness.node(keepalive_interval=30.0, keepalive_timeout=10.0)
    got = alice.wait(_is_response)
    alice.transport.send(sip_request(via_port=alice.port), ("127.0.0.1", bob.port))
    await got
    alice.clock.advance(30)  # a ping goes out (the interval is varied to 80-100 %)
    assert alice.transport.metrics.get("sipd_sip_keepalive_pings_total", transport="tcp") == 1
    conn = alice.transport.connection_for(("127.0.0.1", bob.port))
    assert conn is not None
    assert await eventually(lambda: "pong" not in conn._timers)  # bob's CRLF arrived
    alice.clock.advance(10)
    assert conn.alive and alice.errors == []

    # A peer that never answers pings: the flow is declared dead.
    endpoint = TCP4ServerEndpoint(get_reactor(), 0, interface="127.0.0.1")
    port = await endpoint.listen(Factory.forProtocol(Protocol))
    harness.ports.append(port)
    mute = ("127.0.0.1", port.getHost().port)
    alice.transport.send(sip_request(), mute)
    assert await eventually(lambda: alice.transport.connection_for(mute) is not None)
    mute_conn = alice.transport.connection_for(mute)
    assert mute_conn is not None
    assert await eventually(lambda: mute_conn.ready)
    alice.clock.advance(30)
    alice.clock.advance(10)
    assert await eventually(lambda: any(addr == mute for addr, _ in alice.errors))
    error = next(e for addr, e in alice.errors if addr == mute)
    assert "no keep-alive pong within 10 s" in str(error)


@pytest_twisted.ensureDeferred
async def test_close_fails_waiting_sends_and_leaves_no_timer(harness: Harness) -> None:
    alice = harness.node(idle_timeout=30.0, keepalive_interval=20.0)
    bob = harness.node()
    failures: list[TransportError] = []
    alice.transport.send(sip_request(), ("127.0.0.1", bob.port))
    # A loopback listener whose accept queue is full drops new SYNs: this send
    # waits for its connection (nothing leaves the machine).
    with _full_listener() as (host, port):
        alice.transport.send(sip_request(), (host, port), failures.append)
        await settle(0.1)
        assert len(failures) == 0 and alice.transport.connection_count == 2
        await within(alice.transport.close(), 5)
    assert len(failures) == 1 and "closed" in str(failures[0])
    assert alice.transport.connection_count == 0
    assert alice.clock.getDelayedCalls() == []
    assert alice.errors == []  # a deliberate close is no failure
    try:
        alice.transport.send(sip_request(), ("127.0.0.1", bob.port))
    except TransportError as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("a closed transport accepted a send")


# -- which transport a request takes (pure: RFC 3261 §18.1.1, §26.2) ---------------------------


def test_a_small_request_keeps_the_configured_transport() -> None:
    assert choose_transport(600, "udp") == "udp"
    assert choose_transport(600, "tcp") == "tcp"


def test_a_request_over_1300_bytes_leaves_udp_for_tcp_when_it_can() -> None:
    assert choose_transport(1300, "udp") == "udp"
    assert choose_transport(1301, "udp") == "tcp"
    assert choose_transport(1301, "udp", available=("udp",)) == "udp"  # nothing better


def test_a_known_path_mtu_moves_the_limit_to_200_bytes_below_it() -> None:
    assert choose_transport(5000, "udp", path_mtu=9000) == "udp"
    assert choose_transport(8801, "udp", path_mtu=9000) == "tcp"
    assert choose_transport(1301, "udp", path_mtu=1500) == "tcp"


def test_the_uri_transport_parameter_decides() -> None:
    assert choose_transport(4000, "udp", (("transport", "UDP"),)) == "udp"
    assert choose_transport(100, "udp", (("lr", None), ("transport", "tcp"))) == "tcp"
    assert choose_transport(100, "udp", (("transport", "tls"),)) == "tls"


def test_sips_always_takes_tls() -> None:
    assert choose_transport(100, "udp", (("transport", "udp"),), secure=True) == "tls"


def test_a_transport_that_is_not_there_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match=re.escape("a sips: URI needs TLS")):
        choose_transport(100, "udp", secure=True, available=("udp", "tcp"))
    with pytest.raises(TransportError, match=re.escape("the target asks for tcp")):
        choose_transport(100, "udp", (("transport", "tcp"),), available=("udp",))
    with pytest.raises(TransportError, match=re.escape("unsupported SIP transport 'sctp'")):
        choose_transport(100, "udp", (("transport", "sctp"),))


def test_via_tokens_and_default_ports() -> None:
    assert [via_transport(k) for k in ("udp", "tcp", "TLS")] == ["UDP", "TCP", "TLS"]
    assert transport_from_via("TLS") == "tls" and transport_from_via("tcp") == "tcp"
    with pytest.raises(SipdValueError, match=re.escape("unsupported Via transport 'SCTP'")):
        transport_from_via("SCTP")
    with pytest.raises(SipdValueError, match=re.escape("unknown SIP transport")):
        via_transport("ws")
    assert (default_port("udp"), default_port("tcp"), default_port("tls")) == (5060, 5060, 5061)


@contextlib.contextmanager
def _full_listener() -> Iterator[tuple[str, int]]:
    """A TCP listener on 127.0.0.1 that never accepts, its queue filled: Linux drops
    further SYNs, so a connection to it stays in SYN-SENT until given up."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(2):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            with contextlib.suppress(BlockingIOError):
                filler.connect(address)
        yield address[0], address[1]
    finally:
        for sock in (*fillers, listener):
            sock.close()
