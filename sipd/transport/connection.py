"""One SIP connection over TCP or TLS: framing, readiness, timers (RFC 3261 §18.3, RFC 5626).

:class:`SipStreamProtocol` is the per-connection half of
:class:`~sipd.transport.tcp.StreamTransport`: it frames what arrives with
:class:`~sipd.transport.stream.StreamFramer`, answers keep-alive pings,
queues what is sent before it is ready (TCP connected and, for a
connection we opened over TLS, the handshake done and the peer's
certificate verified), closes itself when idle, when a setup deadline
passes or when a keep-alive pong does not come, and tells its owner when it
has gone and why. The owner holds the policy (parsing, answering, limits,
error reporting): this module only sees it through :class:`ConnectionOwner`,
so the two modules do not import each other.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IConsumer,
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from sipd.errors import TransportError
from sipd.metrics import Metrics
from sipd.transport.stream import (
    PING,
    PONG,
    FramedMessage,
    FramingError,
    Ping,
    Pong,
    StreamFramer,
)

__all__ = [
    "Addr",
    "ClientConnectionFactory",
    "ConnectionOwner",
    "SendErrorCallback",
    "ServerConnectionFactory",
    "SipStreamProtocol",
    "address_key",
    "loss_reason",
    "show_address",
]

Addr = tuple[str, int]
#: Told when a message queued for a connection can no longer be sent.
SendErrorCallback = Callable[[TransportError], None]

_ids = itertools.count(1)


class ConnectionOwner(TypingProtocol):
    """What a connection needs from the transport that owns it."""

    name: str
    clock: IReactorTime
    metrics: Metrics
    idle_timeout: float | None
    connect_timeout: float
    keepalive_interval: float | None
    keepalive_timeout: float
    max_header_bytes: int
    max_body_bytes: int
    max_pending_bytes: int

    @property
    def kind(self) -> str: ...
    def _admit(self, conn: SipStreamProtocol) -> bool: ...
    def _alias(self, addr: Addr, conn: SipStreamProtocol) -> None: ...
    def _forget(self, conn: SipStreamProtocol) -> None: ...
    def _deliver(self, conn: SipStreamProtocol, data: bytes) -> None: ...
    def _answer(self, conn: SipStreamProtocol, data: bytes) -> None: ...
    def _framing_failed(self, conn: SipStreamProtocol, event: FramingError) -> None: ...
    def _describe_loss(self, conn: SipStreamProtocol, value: BaseException) -> TransportError: ...
    def _report(self, addr: Addr, error: TransportError) -> None: ...
    def _call_safely(self, fn: Callable[[TransportError], None], error: TransportError) -> None: ...


def address_key(addr: Addr) -> Addr:
    """``addr`` as connections are filed: no IPv6 brackets, the host lower-cased."""
    host = addr[0]
    if host.startswith("["):
        host = host[1:-1]
    return host.lower(), int(addr[1])


def show_address(addr: Addr) -> str:
    """``host:port`` for messages, IPv6 in brackets."""
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{host}:{addr[1]}"


def loss_reason(value: BaseException) -> str:
    """A few words for why a connection ended or could not be made."""
    if isinstance(value, net_error.ConnectionDone):
        return "closed by the peer"
    if isinstance(value, net_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, net_error.TimeoutError | net_error.TCPTimedOutError):
        return "timed out"
    if isinstance(value, net_error.DNSLookupError):
        return "host name not found"
    if isinstance(value, net_error.ConnectionLost):
        return "connection reset"
    return str(value) or type(value).__name__


@implementer(IHandshakeListener, IPushProducer)
class SipStreamProtocol(Protocol):
    """One TCP or TLS connection carrying SIP, in or out (see :class:`StreamTransport`).

    ``connection_id`` names it in logs; ``peer`` is the address it is
    connected to, which is the ``source`` of every message it delivers.
    """

    def __init__(self, owner: ConnectionOwner, key: Addr, *, outbound: bool) -> None:
        self.owner = owner
        self.key = key
        self.peer = key
        self.outbound = outbound
        self.connection_id = next(_ids)
        self.connector: IConnector | None = None
        self.framer = StreamFramer(owner.max_header_bytes, owner.max_body_bytes)
        #: Messages may be written (TCP connected; TLS handshake done for ours).
        self.ready = False
        self.closed = False
        self.refused = False
        #: A whole SIP message has arrived on it (keep-alives do not count): a
        #: connection that never spoke is the first to go when the table is full.
        self.spoke = False
        self._queue: list[tuple[bytes, SendErrorCallback | None]] = []
        self._queued_bytes = 0
        #: Why we are closing it ourselves; None while it is not closing.
        self._closing: str | None = None
        #: What to report when it goes (a failure we detected), if anything.
        self._error: TransportError | None = None
        self._last_activity = owner.clock.seconds()
        self._timers: dict[str, IDelayedCall] = {}
        self._lost: list[Deferred[None]] = []

    # -- Twisted's side ---------------------------------------------------------------
    def connectionMade(self) -> None:
        """Learn the real peer address, let the owner admit it, start its timers.

        A TCP connection we opened is ready now; TLS waits for the handshake,
        so nothing queued is written before the server has been verified.
        """
        owner = self.owner
        peer = self.transport.getPeer() if self.transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            self.peer = address_key((host, port))
        if not self.outbound and not owner._admit(self):
            self.refused = True
            self._tcp.abortConnection()
            return
        cast(IConsumer, self.transport).registerProducer(self, True)
        self._last_activity = owner.clock.seconds()
        self._arm("idle", owner.idle_timeout, self._idle_check)
        if owner.kind == "tcp" and self.outbound:
            self._became_ready()
        elif owner.kind == "tls" and not self.outbound:
            # Ours has had its deadline since connecting; theirs gets one now.
            self._arm("setup", owner.connect_timeout, self._setup_timed_out)
        if self.outbound and self.peer != self.key:
            owner._alias(self.peer, self)

    def handshakeCompleted(self) -> None:
        """TLS is up (and, for ours, the server verified): flush what waited."""
        self._cancel("setup")
        if self.outbound:
            self._became_ready()

    def dataReceived(self, data: bytes) -> None:
        """Frame what arrived; stop at once if a message made us close."""
        self._last_activity = self.owner.clock.seconds()
        for event in self.framer.feed(data):
            if self._closing is not None or self.closed:
                return
            if isinstance(event, FramedMessage):
                self.spoke = True
                self.owner._deliver(self, event.data)
            elif isinstance(event, Ping):
                self._tcp.write(PONG)
            elif isinstance(event, Pong):
                self._cancel("pong")
            elif isinstance(event, FramingError):
                self.owner._framing_failed(self, event)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Gone, for whatever reason: fail what waited and tell the owner."""
        if self.refused:
            return
        self._ended(reason.value or net_error.ConnectionDone())

    def pauseProducing(self) -> None:
        """The peer reads slower than we write: stop reading what it sends meanwhile."""
        if self.transport is not None:
            cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        """The peer caught up: read again."""
        if self.transport is not None and not self.closed:
            cast(IPushProducer, self.transport).resumeProducing()

    def stopProducing(self) -> None:
        pass  # the connection is going; connectionLost does the rest

    # -- our side ---------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """True while messages handed to :meth:`send` can still reach the peer."""
        return not self.closed and self._closing is None

    def send(self, data: bytes, on_error: SendErrorCallback | None = None) -> None:
        """Write ``data`` now, or queue it until the connection is ready."""
        if self.ready:
            self._tcp.write(data)
            return
        owner = self.owner
        if self._queued_bytes + len(data) > owner.max_pending_bytes:
            raise TransportError(
                f"{owner.name} to {show_address(self.key)}: over {owner.max_pending_bytes} bytes "
                "are already waiting for the connection",
                peer=self.key,
            )
        self._queue.append((data, on_error))
        self._queued_bytes += len(data)

    def answer(self, data: bytes, addr: Addr) -> None:
        """Send a response formed for a message that came on this connection, on it.

        The shape of a :data:`~sipd.transport.receive.Reply`: ``addr`` (where
        a datagram's answer would go) is ignored, since over a stream the
        answer goes back on the connection (RFC 3261 §18.2.2).
        """
        self.owner._answer(self, data)

    def close(self, why: str, error: TransportError | None = None) -> None:
        """Close it ourselves; ``error``, if given, is reported as the connection's failure."""
        if self.closed or self._closing is not None:
            return
        self._closing = why
        self._error = error
        self.owner.metrics.inc(
            "sipd_sip_connections_closed_total", transport=self.owner.kind, reason=why
        )
        if self.transport is None:
            if self.connector is not None:
                self.connector.stopConnecting()  # clientConnectionFailed follows
            return
        if error is not None or not self.ready:
            self._tcp.abortConnection()
        else:
            # A registered producer would hold TLS's close until it is gone.
            cast(IConsumer, self.transport).unregisterProducer()
            self._tcp.loseConnection()
            # A TLS peer that never answers our close_notify must not hold it.
            self._arm("abort", 5.0, self._abort)

    def when_closed(self) -> Deferred[None]:
        """A Deferred firing once the connection has gone (at once if it has)."""
        if self.closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._lost.append(d)
        return d

    # -- internals -----------------------------------------------------------------------
    @property
    def _tcp(self) -> ITCPTransport:
        return cast(ITCPTransport, self.transport)

    def _became_ready(self) -> None:
        self.ready = True
        self._cancel("setup")
        queue, self._queue, self._queued_bytes = self._queue, [], 0
        for data, _ in queue:
            self._tcp.write(data)
        if self.outbound and self.owner.keepalive_interval:
            self._arm("ping", self._ping_delay(), self._send_ping)

    def _connect_failed(self, reason: Failure) -> None:
        self._ended(reason.value or net_error.ConnectionDone())

    def _ended(self, value: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        for name in list(self._timers):
            self._cancel(name)
        owner = self.owner
        owner._forget(self)
        error = self._error
        if error is None and self._closing is None:
            error = owner._describe_loss(self, value)
            owner.metrics.inc(
                "sipd_sip_connections_closed_total",
                transport=owner.kind,
                reason="failed" if not self.ready and self.outbound else "peer",
            )
        queue, self._queue, self._queued_bytes = self._queue, [], 0
        unsent = error or TransportError(
            f"{owner.name} connection to {show_address(self.key)} was closed ({self._closing})",
            peer=self.key,
        )
        if error is not None:
            owner._report(self.key, error)
        for _, on_error in queue:
            if on_error is not None:
                owner._call_safely(on_error, unsent)
        waiters, self._lost = self._lost, []
        for d in waiters:
            d.callback(None)

    def _arm(self, name: str, delay: float | None, fn: Callable[[], None]) -> None:
        self._cancel(name)
        if delay is not None and delay > 0:
            self._timers[name] = self.owner.clock.callLater(delay, self._fire, name, fn)

    def _fire(self, name: str, fn: Callable[[], None]) -> None:
        self._timers.pop(name, None)
        fn()

    def _cancel(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _idle_check(self) -> None:
        owner = self.owner
        assert owner.idle_timeout is not None
        idle = owner.clock.seconds() - self._last_activity
        if idle >= owner.idle_timeout - 1e-6:
            self.close("idle")
        else:
            self._arm("idle", owner.idle_timeout - idle, self._idle_check)

    def _setup_timed_out(self) -> None:
        owner = self.owner
        what = "TLS handshake" if owner.kind == "tls" else "TCP connect"
        self.close(
            "timeout",
            TransportError(
                f"{owner.name} to {show_address(self.key)} failed: {what} did not finish "
                f"within {owner.connect_timeout:g} s",
                peer=self.key,
            ),
        )

    def _ping_delay(self) -> float:
        interval = self.owner.keepalive_interval or 0.0
        return interval * random.uniform(0.8, 1.0)  # RFC 5626 §4.4.1: vary it

    def _send_ping(self) -> None:
        owner = self.owner
        self._tcp.write(PING)
        owner.metrics.inc("sipd_sip_keepalive_pings_total", transport=owner.kind)
        if "pong" not in self._timers:
            self._arm("pong", owner.keepalive_timeout, self._pong_missing)
        self._arm("ping", self._ping_delay(), self._send_ping)

    def _pong_missing(self) -> None:
        owner = self.owner
        self.close(
            "keepalive",
            TransportError(
                f"{owner.name} connection to {show_address(self.key)} failed: no keep-alive "
                f"pong within {owner.keepalive_timeout:g} s (RFC 5626)",
                peer=self.key,
            ),
        )

    def _abort(self) -> None:
        if not self.closed and self.transport is not None:
            self._tcp.abortConnection()


class ClientConnectionFactory(ClientFactory):
    """Builds exactly the protocol object :meth:`StreamTransport.send` made."""

    noisy = False

    def __init__(self, protocol: SipStreamProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol:
        return self._protocol

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self._protocol._connect_failed(reason)


class ServerConnectionFactory(Factory):
    """Builds one inbound connection per accepted socket (the owner may refuse it)."""

    noisy = False

    def __init__(self, owner: ConnectionOwner) -> None:
        self._owner = owner

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol:
        host, port = getattr(addr, "host", "?"), getattr(addr, "port", 0)
        return SipStreamProtocol(self._owner, address_key((str(host), int(port))), outbound=False)
