"""A SIP UA over TCP under abuse (issue 12): sipd keeps serving calls and frees every connection.

Real sockets on 127.0.0.1, the whole UA (``SimplePeer`` with
``transport="tcp"``) on the real reactor. Hostile clients are plain Twisted
protocols connected through endpoints, so nothing blocks the reactor: 500
connections that never send anything, an endless header line or header
block, a message cut off by a close, a Content-Length over the body bound or
longer than what arrives. Meanwhile a second peer's call over TCP is
answered, carries RTP both ways and is hung up. Afterwards the UA's stream
transport holds no connection, and the process holds no more file
descriptors than before (sipd runs in this process, so ``/proc/self/fd``
counts both ends of every connection).

Also here: INVITEs over TCP pass the same overload screen as over UDP and
get its stateless 503 on their own connection, and malformed SIP is
answered identically over TCP and over UDP.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from sipd import SimplePeer
from sipd.session.overload import TAG_PREFIX
from sipd.sip.message import Response, parse_message
from sipd.sip.transaction import new_branch
from sipd.transport.tcp import StreamTransport
from tests.conftest import PeerFactory, eventually, get_reactor, settle, within
from tests.integration.test_stream_calls import talk

#: The idle timeout of the UA under test: short, so the test sees it fire.
IDLE = 3.0


class RawClient(Protocol):
    """A TCP client that writes what the test says and records what comes back."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.gone = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone = True
        self.lost.callback(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if not self.gone and self.transport is not None:
            self.transport.loseConnection()

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return int(self.transport.getHost().port)  # type: ignore[attr-defined]

    def responses(self) -> list[Response]:
        """The complete responses received so far (each framed by its Content-Length)."""
        out: list[Response] = []
        data = bytes(self.received)
        while b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            message = parse_message(head + b"\r\n\r\n")
            length = int(message.headers.get("Content-Length") or 0)
            if len(rest) < length:
                break
            message = parse_message(head + b"\r\n\r\n" + rest[:length])
            assert isinstance(message, Response), message
            out.append(message)
            data = rest[length:]
        return out


class Clients:
    """Raw clients of one test; every one still open is aborted at the end."""

    def __init__(self) -> None:
        self.all: list[RawClient] = []

    async def connect(self, port: int) -> RawClient:
        client = RawClient()
        self.all.append(client)
        endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port, timeout=5)
        await within(connectProtocol(endpoint, client), 10)
        return client

    async def connect_many(self, port: int, count: int) -> list[RawClient]:
        pending = [defer.ensureDeferred(self.connect(port)) for _ in range(count)]
        return list(await within(defer.gatherResults(pending, consumeErrors=True), 60))

    async def close(self) -> None:
        for client in self.all:
            if not client.gone and client.transport is not None:
                client.transport.abortConnection()  # type: ignore[attr-defined]
        await settle(0.05)


@pytest_twisted.async_yield_fixture
async def clients() -> AsyncIterator[Clients]:
    c = Clients()
    try:
        yield c
    finally:
        await c.close()


def stream_of(peer: SimplePeer) -> StreamTransport:
    stream = peer.coordinator.transports.stream
    assert stream is not None and stream.kind == "tcp"
    return stream


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def request(
    method: str = "OPTIONS",
    *,
    port: int,
    transport: str = "TCP",
    call_id: str = "abuse-test",
    body: bytes = b"",
    content_length: int | None = None,
    extra: tuple[str, ...] = (),
    branch: str | None = None,
) -> bytes:
    """A request written by hand, as a hostile or sloppy client would."""
    lines = [
        f"{method} sip:bob@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:9;branch={branch or new_branch()};rport",
        "Max-Forwards: 70",
        "From: <sip:mallory@127.0.0.1>;tag=m1",
        f"To: <sip:bob@127.0.0.1:{port}>",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        "Contact: <sip:mallory@127.0.0.1:9;transport=tcp>",
        *extra,
        f"Content-Length: {len(body) if content_length is None else content_length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Scene:
    """Bob, the UA under test (TCP, short idle timeout); Alice, who calls him over TCP."""

    def __init__(self, alice: SimplePeer, bob: SimplePeer) -> None:
        self.alice = alice
        self.bob = bob
        self.stream = stream_of(bob)
        self.metrics = bob.coordinator.metrics
        #: Descriptors open once both peers are up: what must be left in the end.
        self.fds_before = open_fds()

    @classmethod
    async def start(cls, peers: PeerFactory, **bob_settings: object) -> Scene:
        bob = await peers("bob", transport="tcp", tcp_idle_timeout=IDLE, **bob_settings)
        alice = await peers("alice", transport="tcp", tcp_idle_timeout=IDLE)
        return cls(alice, bob)

    def closed(self, reason: str) -> float:
        """Connections bob closed for ``reason`` (idle, framing, ...)."""
        return self.metrics.get("sipd_sip_connections_closed_total", transport="tcp", reason=reason)

    async def connected(self, clients: Clients) -> RawClient:
        """One raw client, once bob has admitted its connection."""
        before = self.stream.connection_count
        client = await clients.connect(self.bob.port)
        assert await eventually(lambda: self.stream.connection_count == before + 1, 5)
        return client

    async def serves_then_frees(self, caller: SimplePeer | None = None, fds_slack: int = 0) -> None:
        """Nothing of the abuse reached bob, a call goes through, then every socket is freed."""
        layer = self.bob.coordinator.layer
        assert layer is not None
        assert self.bob.try_incoming() is None
        assert await eventually(lambda: len(layer) == 0, 5)  # no transaction was left
        await talk(caller or self.alice, self.bob)
        stream = self.stream
        assert await eventually(lambda: stream.connection_count == 0, IDLE + 5), (
            stream.connection_count
        )
        # The callers' ends of their connections close when bob's do.
        limit = self.fds_before + fds_slack
        assert await eventually(lambda: open_fds() <= limit, 5), (open_fds(), limit)


# -- silent connections ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_500_silent_connections_leave_calls_served_then_all_idle_out(
    peers: PeerFactory, clients: Clients
) -> None:
    scene = await Scene.start(peers)
    silent = await clients.connect_many(scene.bob.port, 500)
    assert await eventually(lambda: scene.stream.connection_count == 500, 5)
    assert open_fds() >= scene.fds_before + 1000  # both ends of each are in this process

    await talk(scene.alice, scene.bob)  # while the 500 sit there
    assert not any(c.gone for c in silent), "silent connections closed before their idle time"

    assert await eventually(lambda: all(c.gone for c in silent), IDLE + 10)
    assert all(c.received == b"" for c in silent)  # closed without a word
    assert scene.closed("idle") >= 500
    await scene.serves_then_frees()


@pytest_twisted.ensureDeferred
async def test_at_max_connections_silent_ones_make_room_and_calls_in_progress_go_on(
    peers: PeerFactory, clients: Clients
) -> None:
    """A full table closes its oldest connection that never sent a message for a new one:
    silent connections cannot keep callers out; connections that spoke are kept."""
    scene = await Scene.start(peers)
    alice, bob, stream = scene.alice, scene.bob, scene.stream
    stream.max_connections = 20
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    assert stream.connection_count == 1  # alice's

    silent = await clients.connect_many(bob.port, 25)
    # 19 fit beside alice's; each of the 6 after them closes the oldest silent one.
    assert await eventually(lambda: sum(c.gone for c in silent) == 6, 5)
    assert [c.gone for c in silent] == [True] * 6 + [False] * 19
    assert stream.connection_count == 20
    assert scene.metrics.get("sipd_sip_connections_evicted_total", transport="tcp") == 6
    assert scene.metrics.get("sipd_sip_connections_refused_total", transport="tcp") == 0

    # A new caller gets in (the oldest silent connection makes room)...
    carol = await peers("carol", transport="tcp", tcp_idle_timeout=IDLE)
    second = await within(carol.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    answered_carol = await within(incoming.accept(), 5)
    await within(second.wait_for_answer(), 5)
    assert sum(c.gone for c in silent) == 7
    # ...while the call in progress goes on over its connection, which spoke.
    assert call.is_active() and answered.is_active()
    for caller, callee in ((call, answered), (second, answered_carol)):
        await within(caller.hangup(), 5)
        await within(callee.wait_for_end(), 5)
        assert caller.failure is None and callee.failure is None

    for client in silent:
        client.close()
    assert await eventually(lambda: stream.connection_count <= 2, 5)
    await scene.serves_then_frees(carol, fds_slack=2)  # carol's SIP sockets are new


# -- endless, cut-off and oversized messages -----------------------------------------------------


@pytest.mark.parametrize("shape", ["one-endless-line", "endless-header-block"])
@pytest_twisted.ensureDeferred
async def test_an_endless_header_is_cut_off_at_the_bound(
    peers: PeerFactory, clients: Clients, shape: str
) -> None:
    scene = await Scene.start(peers)
    client = await scene.connected(clients)
    conn = scene.stream.connection_for(("127.0.0.1", client.local_port))
    assert conn is not None

    client.write(f"OPTIONS sip:bob@127.0.0.1:{scene.bob.port} SIP/2.0\r\n".encode())
    chunk = b"X" * 4096 if shape == "one-endless-line" else b"X-Junk: " + b"j" * 4000 + b"\r\n"
    sent = chunks = 0
    while sent < 1024 * 1024 and not client.gone:  # 1 MiB that never ends its header block
        client.write(chunk)
        sent += len(chunk)
        chunks += 1
        if chunks % 16 == 0:
            await settle(0.001)  # let sipd read as it comes
    await within(client.lost, 10)
    assert sent < 1024 * 1024, "sipd read the whole MiB before closing"

    # Cut off at its bound, holding nothing: the framer dropped what it had read.
    assert conn.closed and conn.framer.failed and conn.framer.buffered == 0
    assert scene.stream.max_header_bytes == 16 * 1024
    assert scene.closed("framing") == 1
    await scene.serves_then_frees()


@pytest.mark.parametrize("cut", ["in-the-header", "in-the-body"])
@pytest_twisted.ensureDeferred
async def test_a_client_closing_mid_message_leaves_nothing_behind(
    peers: PeerFactory, clients: Clients, cut: str
) -> None:
    scene = await Scene.start(peers)
    client = await scene.connected(clients)
    invite = request("INVITE", port=scene.bob.port, body=b"v=0\r\n" * 40)
    head_end = invite.index(b"\r\n\r\n")
    client.write(invite[: head_end // 2] if cut == "in-the-header" else invite[:-50])
    await settle(0.1)
    client.close()

    assert await eventually(lambda: scene.stream.connection_count == 0, 5)
    received = scene.metrics.get(
        "sipd_sip_requests_received_total", method="INVITE", transport="tcp"
    )
    assert received == 0
    await scene.serves_then_frees()


@pytest_twisted.ensureDeferred
async def test_a_content_length_over_the_body_bound_is_answered_413_and_closed(
    peers: PeerFactory, clients: Clients
) -> None:
    scene = await Scene.start(peers)
    client = await scene.connected(clients)
    too_long = scene.stream.max_body_bytes + 1
    client.write(request("MESSAGE", port=scene.bob.port, content_length=too_long))
    client.write(b"x" * 4096)  # the start of a body sipd will never hold
    await within(client.lost, 5)
    [response] = client.responses()
    assert response.status == 413 and "Content-Length" in response.reason
    assert response.call_id == "abuse-test"
    assert scene.closed("framing") == 1
    await scene.serves_then_frees()


@pytest.mark.parametrize("then", ["client-closes", "client-waits"])
@pytest_twisted.ensureDeferred
async def test_a_body_shorter_than_its_content_length_is_never_delivered(
    peers: PeerFactory, clients: Clients, then: str
) -> None:
    """The rest never comes: the client's close, or else the idle timeout, frees it."""
    scene = await Scene.start(peers)
    client = await scene.connected(clients)
    client.write(request("MESSAGE", port=scene.bob.port, content_length=5000, body=b"y" * 100))
    await settle(0.1)
    if then == "client-closes":
        client.close()
    else:
        await within(client.lost, IDLE + 5)  # sipd closes it: idle
        assert scene.closed("idle") == 1
    assert await eventually(lambda: scene.stream.connection_count == 0, 5)
    assert client.received == b""
    await scene.serves_then_frees()


# -- overload control over TCP ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_invite_over_tcp_passes_the_overload_screen_and_gets_its_503_on_its_connection(
    peers: PeerFactory, clients: Clients
) -> None:
    # One new INVITE per source and then no more: alice's call takes 127.0.0.1's
    # token, the raw client's INVITE from 127.0.0.1 is refused. The UA-wide load
    # checks (lag, receive queue) stay off so only the per-source rule decides.
    scene = await Scene.start(
        peers,
        overload_source_rate=0.01,
        overload_source_burst=1,
        overload_max_lag=0.0,
        overload_max_backlog=0,
    )
    alice, bob = scene.alice, scene.bob
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    layer = bob.coordinator.layer
    assert layer is not None
    transactions = len(layer)

    client = await clients.connect(bob.port)
    branch = new_branch()
    client.write(request("INVITE", port=bob.port, call_id="refused-over-tcp", branch=branch))
    assert await eventually(lambda: len(client.responses()) == 1, 5)
    [response] = client.responses()
    assert response.status == 503
    assert response.headers.get("Retry-After") == "5"
    assert response.call_id == "refused-over-tcp" and response.top_via.branch == branch
    # Stateless (the screen's To tag, no transaction), and on the INVITE's connection.
    assert (response.to.tag or "").startswith(TAG_PREFIX)
    assert len(layer) == transactions
    metrics = bob.coordinator.metrics
    assert metrics.get("sipd_overload_rejected_total", reason="source") == 1
    assert metrics.get("sipd_sip_responses_sent_total", status="503", transport="tcp") == 1
    assert metrics.get("sipd_sip_responses_sent_total", status="503") == 0  # nothing over UDP

    # Its ACK is absorbed by the screen: no answer, no transaction, connection stays.
    ack = request("ACK", port=bob.port, call_id="refused-over-tcp", branch=branch).replace(
        f"To: <sip:bob@127.0.0.1:{bob.port}>".encode(), f"To: {response.headers.get('To')}".encode()
    )
    client.write(ack)
    await settle(0.2)
    assert len(client.responses()) == 1 and not client.gone
    assert len(layer) == transactions
    # Counted once, by the screen, under the transport it came over.
    assert metrics.get("sipd_sip_requests_received_total", method="ACK", transport="tcp") == 1
    assert metrics.get("sipd_sip_requests_received_total", method="ACK") == 0

    # The admitted call is unaffected.
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)
    assert call.failure is None and answered.failure is None
    client.close()


# -- malformed SIP: the same answer over TCP as over UDP ------------------------------------------


def _malformed(port: int, transport: str, fault: str) -> bytes:
    base = request("OPTIONS", port=port, transport=transport, branch="z9hG4bKsame")
    if fault == "cseq-method":
        return base.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    if fault == "bad-to":
        return base.replace(b"To: <sip:bob@127.0.0.1:%d>" % port, b"To: Bob <sip:bob@127.0.0.1")
    if fault == "max-forwards":
        return base.replace(b"Max-Forwards: 70", b"Max-Forwards: lots")
    if fault == "version":
        return base.replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1)
    if fault == "uri-scheme":
        return base.replace(b"OPTIONS sip:bob@127.0.0.1:%d" % port, b"OPTIONS http://bob.example/")
    if fault == "no-call-id":
        return base.replace(b"Call-ID: abuse-test\r\n", b"")
    raise AssertionError(fault)


async def _over_udp(port: int, data: bytes) -> Response | None:
    """Send one datagram from a fresh UDP socket; the answer, if any comes within 0.5 s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        sock.sendto(data, ("127.0.0.1", port))
        deadline = get_reactor().seconds() + 0.5
        while get_reactor().seconds() < deadline:
            try:
                answer = sock.recv(65535)
            except BlockingIOError:
                await settle(0.01)
                continue
            message = parse_message(answer)
            assert isinstance(message, Response)
            return message
        return None
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ("cseq-method", 400),
        ("bad-to", 400),
        ("max-forwards", 400),
        ("version", 505),
        ("uri-scheme", 416),
        ("no-call-id", None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_sip_gets_the_same_answer_over_tcp_as_over_udp(
    peers: PeerFactory, clients: Clients, fault: str, status: int | None
) -> None:
    bob = await peers("bob", transport="tcp", tcp_idle_timeout=IDLE)
    over_udp = await _over_udp(bob.port, _malformed(bob.port, "UDP", fault))
    client = await clients.connect(bob.port)
    client.write(_malformed(bob.port, "TCP", fault))
    if status is None:  # nothing valid can answer it: dropped both ways, counted both ways
        await settle(0.3)
        assert over_udp is None and client.responses() == []
        metrics = bob.coordinator.metrics
        assert metrics.get("sipd_sip_parse_errors_total", kind="400") == 1
        assert metrics.get("sipd_sip_parse_errors_total", kind="400", transport="tcp") == 1
    else:
        assert await eventually(lambda: len(client.responses()) == 1, 5)
        [over_tcp] = client.responses()
        assert over_udp is not None
        assert (over_tcp.status, over_tcp.reason) == (over_udp.status, over_udp.reason)
        assert over_tcp.status == status
        assert over_tcp.top_via.branch == over_udp.top_via.branch == "z9hG4bKsame"
    # The connection stays: the stream can still be framed.
    assert not client.gone
    client.write(request("OPTIONS", port=bob.port, call_id="after-the-bad-one"))
    assert await eventually(
        lambda: any(r.call_id == "after-the-bad-one" for r in client.responses())
    )
    client.close()
