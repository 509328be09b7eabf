"""SIP over TCP and TLS (RFC 3261 §18, RFC 5626 §3.5.1): connections, reuse and limits.

:class:`StreamTransport` is to a stream what
:class:`~sipd.transport.udp.SipDatagramProtocol` is to UDP: one per UA and
kind ("tcp" or "tls"), with the same ``set_handler``, ``screen`` and
``send(data, addr)``, so the transaction layer can use either. What a
stream adds is the connection:

* ``send`` reuses the live connection to ``addr`` (one we opened, or one the
  peer opened from that address) or opens one, queueing the message until
  it is connected, and for TLS until the handshake has verified the peer.
* A request's ``source`` is the address of the connection it came on, and a
  response sent to that address goes back on that connection (§18.2.2);
  :meth:`StreamTransport.reply` falls back to the Via's address when the
  connection has gone.
* A connection that cannot be made (refused, TLS handshake or certificate
  verification failed) or that drops fails at once: the messages still
  queued for it call their ``on_error``, and the transport-wide error
  handler hears ``(addr, TransportError)``, so the transactions sent there
  can fail now rather than after Timer B or F. The error names the peer and
  the reason.

Each connection frames its bytes with :class:`~sipd.transport.stream.StreamFramer`
and hands every message to the same :class:`~sipd.transport.receive.Receiver`
as UDP, so what does not parse is answered as over UDP, on the same
connection; a stream that can no longer be framed (no Content-Length, an
endless header, a body over the limit) is answered when it was a request
and closed. Connections idle for ``idle_timeout`` are closed, at most
``max_connections`` are open at once (newer inbound ones are closed at
once), and connections we opened can send RFC 5626 keep-alive pings.

:func:`choose_transport` is the pure §18.1.1 rule for which transport a
request takes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Literal, cast

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.protocols.tls import TLSMemoryBIOFactory

from sipd.errors import SipdValueError, TransportError
from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.sip.errors import BadRequest
from sipd.sip.grammar import Params, get_param
from sipd.sip.via import Via
from sipd.transport.connection import (
    Addr,
    ClientConnectionFactory,
    SendErrorCallback,
    ServerConnectionFactory,
    SipStreamProtocol,
    address_key,
    loss_reason,
    show_address,
)
from sipd.transport.ratelimit import RateLimitedLog
from sipd.transport.receive import MessageHandler, Receiver, Screen
from sipd.transport.stream import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES, FramingError
from sipd.transport.tls import (
    TlsConfig,
    client_options,
    describe_tls_failure,
    load_credentials,
    server_options,
)

__all__ = [
    "Addr",
    "ConnectionErrorHandler",
    "MessageHandler",
    "SendErrorCallback",
    "SipStreamProtocol",
    "StreamKind",
    "StreamTransport",
    "choose_transport",
    "default_port",
    "transport_from_via",
    "via_transport",
]

StreamKind = Literal["tcp", "tls"]
#: Told ``(addr, error)`` when a connection to or from ``addr`` fails or drops.
ConnectionErrorHandler = Callable[[Addr, TransportError], None]

_VIA_TOKENS = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}
#: §18.1.1: a request larger than this, when the path MTU is unknown, avoids UDP.
_UDP_SIZE_LIMIT = 1300
_log = Logger()


def via_transport(kind: str) -> str:
    """The Via ``sent-protocol`` transport token of ``kind``: "UDP", "TCP" or "TLS"."""
    try:
        return _VIA_TOKENS[kind.lower()]
    except KeyError:
        raise SipdValueError(f"unknown SIP transport {kind!r} (udp, tcp or tls)") from None


def transport_from_via(token: str) -> str:
    """The transport kind ("udp", "tcp", "tls") a Via token names; SipdValueError else."""
    kind = token.lower()
    if kind not in _VIA_TOKENS:
        raise SipdValueError(f"unsupported Via transport {token!r} (UDP, TCP or TLS)")
    return kind


def default_port(kind: str) -> int:
    """The port a SIP URI without one means for ``kind`` (§19.1.2): 5061 for TLS, else 5060."""
    return 5061 if kind.lower() == "tls" else 5060


def choose_transport(
    message_size: int,
    configured: str,
    target_params: Params = (),
    *,
    secure: bool = False,
    available: Collection[str] = ("udp", "tcp", "tls"),
    path_mtu: int | None = None,
) -> str:
    """The transport a request of ``message_size`` bytes takes (RFC 3261 §18.1.1, §26.2).

    A ``sips:`` target (``secure``) always takes TLS and a ``;transport=``
    parameter of the target URI (``target_params``) names the transport
    itself; otherwise ``configured`` is used, except that a request that
    would go over UDP while being larger than 1300 bytes (or within 200
    bytes of a known ``path_mtu``) goes over TCP when TCP is ``available``,
    since fragmented UDP is lost whole when one fragment is. Raises
    :class:`TransportError` when the transport needed is not available.
    For requests only: a response goes back the way its request came.
    """
    if secure:
        chosen = "tls"
    else:
        param = get_param(target_params, "transport")
        chosen = (param or configured).lower()
        if param is None and chosen == "udp" and "tcp" in available:
            limit = _UDP_SIZE_LIMIT if path_mtu is None else path_mtu - 200
            if message_size > limit:
                chosen = "tcp"
    if chosen not in _VIA_TOKENS:
        raise TransportError(f"unsupported SIP transport {chosen!r} (udp, tcp or tls)")
    if chosen not in available:
        why = "a sips: URI needs TLS" if secure else f"the target asks for {chosen}"
        raise TransportError(f"{why}, which this UA is not configured for")
    return chosen


class StreamTransport:
    """SIP over TCP or TLS for one UA: listens, connects, reuses, limits (module doc).

    ``reactor`` makes the connections (``IReactorTCP``; TLS is layered on
    TCP here), ``clock`` runs the timers (the reactor by default; a
    ``task.Clock`` in tests). ``tls`` is required for ``kind="tls"``: its
    files are read here, so a bad path fails now with a ConfigError.
    ``idle_timeout`` (s, None: never) closes quiet connections;
    ``connect_timeout`` bounds connecting plus the TLS handshake;
    ``keepalive_interval`` (s, None: off) sends RFC 5626 pings on the
    connections we opened and closes one whose pong does not come within
    ``keepalive_timeout``; ``max_connections`` caps open connections;
    ``max_pending_bytes`` caps what may wait for one connection to open.
    """

    def __init__(
        self,
        kind: StreamKind,
        reactor: IReactorTCP,
        clock: IReactorTime | None = None,
        *,
        tls: TlsConfig | None = None,
        metrics: Metrics | None = None,
        idle_timeout: float | None = 300.0,
        connect_timeout: float = 10.0,
        keepalive_interval: float | None = None,
        keepalive_timeout: float = 10.0,
        max_connections: int = 1000,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_pending_bytes: int = 256 * 1024,
    ) -> None:
        if kind not in ("tcp", "tls"):
            raise SipdValueError(f"a stream transport is 'tcp' or 'tls', not {kind!r}")
        if kind == "tls" and tls is None:
            raise SipdValueError("a TLS transport needs tls=TlsConfig(...)")
        self.kind: StreamKind = kind
        self.name = "TLS" if kind == "tls" else "TCP"
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else cast(IReactorTime, reactor)
        self.tls = tls
        self._credentials = load_credentials(tls) if tls is not None else None
        self.metrics = metrics or Metrics()
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.max_pending_bytes = max_pending_bytes
        self._error_handler: ConnectionErrorHandler | None = None
        self._port: IListeningPort | None = None
        self._connections: dict[Addr, SipStreamProtocol] = {}
        self._open: set[SipStreamProtocol] = set()
        self._closed = False
        self._bad_input = RateLimitedLog(_log, self.clock)
        #: Parses, screens, checks and hands up each framed message, as UDP's does.
        self.receiver = Receiver(self.metrics, self._bad_input, _log, {"transport": kind})
        self.metrics.gauge(
            f"sipd_sip_{kind}_connections",
            f"SIP {self.name} connections open now",
            lambda: float(len(self._open)),
        )

    # -- wiring -----------------------------------------------------------------------------
    @property
    def via_transport(self) -> str:
        """The token for our Via headers: "TCP" or "TLS"."""
        return self.name

    @property
    def screen(self) -> Screen | None:
        """Sees each parsed message first; True: answered or absorbed there (as UDP).

        The screen's answers go to the message's ``source``, which is the
        connection's address, so they go back on that connection.
        """
        return self.receiver.screen

    @screen.setter
    def screen(self, screen: Screen | None) -> None:
        self.receiver.screen = screen

    def set_handler(self, handler: MessageHandler) -> None:
        """Route parsed messages to ``handler(message, source)`` (source: the connection's peer)."""
        self.receiver.handler = handler

    def set_error_handler(self, handler: ConnectionErrorHandler) -> None:
        """Hear ``(addr, error)`` whenever a connection to or from ``addr`` fails or drops.

        Not called for connections we close on purpose (idle, :meth:`close`).
        """
        self._error_handler = handler

    def listen(self, host: str = "127.0.0.1", port: int = 0, *, backlog: int = 1024) -> int:
        """Accept connections on ``host``:``port`` (0: any free port); returns the port.

        ``backlog`` is the kernel's queue of connections not yet accepted:
        Twisted's default of 50 makes a burst of clients wait for SYN
        retries. Twisted's ``CannotListenError`` passes through when the
        port is taken.
        """
        factory: Any = ServerConnectionFactory(self)
        if self.kind == "tls":
            assert self.tls is not None
            factory = TLSMemoryBIOFactory(
                server_options(self.tls, self._credentials), False, factory, self._tls_clock()
            )
        self._port = self.reactor.listenTCP(
            port, factory, backlog=backlog, interface=host.strip("[]")
        )
        return self.local_address[1]

    @property
    def local_address(self) -> Addr:
        """The listening host and port."""
        if self._port is None:
            raise TransportError(f"the SIP {self.name} transport is not listening")
        addr = self._port.getHost()
        return str(getattr(addr, "host", "")), int(getattr(addr, "port", 0))

    @property
    def connection_count(self) -> int:
        """Connections open now, in and out (those still connecting included)."""
        return len(self._open)

    def connection_for(self, addr: Addr) -> SipStreamProtocol | None:
        """The live connection a message to ``addr`` would use, if any."""
        conn = self._connections.get(address_key(addr))
        return conn if conn is not None and conn.alive else None

    # -- sending --------------------------------------------------------------------------
    def send(
        self,
        data: bytes,
        addr: Addr,
        on_error: SendErrorCallback | None = None,
        *,
        server_name: str | None = None,
    ) -> None:
        """Send one message to ``addr``, on its live connection or a new one.

        A new TLS connection verifies ``server_name`` (else the host of
        ``addr``) in the server's certificate.

        Raises :class:`TransportError` (an ``OSError``) when it cannot even
        start: transport closed, too many connections, a bad address, too
        much already waiting. Otherwise a message that has to wait for the
        connection and never gets on it calls ``on_error`` once, and the
        error handler hears about the connection.
        """
        if self._closed:
            raise TransportError(f"the SIP {self.name} transport is closed", peer=addr)
        key = address_key(addr)
        conn = self._connections.get(key)
        if conn is None or not conn.alive:
            conn = self._connect(key, server_name)
        conn.send(data, on_error)
        self._count_sent(data, addr)

    def reply(
        self,
        data: bytes,
        source: Addr,
        via: Via | None = None,
        on_error: SendErrorCallback | None = None,
    ) -> None:
        """Send a response on the connection its request came from (§18.2.2).

        ``source`` is what the handler was given with the request. When that
        connection has gone, the response goes to the top ``via``'s
        ``received`` address (else its host) and sent-by port (else the
        default port) on a new connection; without a ``via`` that is a
        :class:`TransportError`.
        """
        conn = self.connection_for(source)
        if conn is not None:
            conn.send(data, on_error)
            self._count_sent(data, source)
            return
        if via is None:
            raise TransportError(
                f"the {self.name} connection from {show_address(source)} is gone", peer=source
            )
        host = via.received or via.host
        self.send(data, (host, via.port or default_port(self.kind)), on_error)

    def close(self) -> Deferred[None]:
        """Stop listening and close every connection; fires once all are gone.

        Messages still waiting for a connection fail (``on_error``); the
        error handler is not called for these deliberate closes.
        """
        self._closed = True
        waits: list[Deferred[Any]] = []
        if self._port is not None:
            stopped = self._port.stopListening()
            if isinstance(stopped, Deferred):
                waits.append(stopped)
            self._port = None
        for conn in list(self._open):
            waits.append(conn.when_closed())
            conn.close("shutdown")
        done: Deferred[None] = Deferred()
        DeferredList(waits).addBoth(lambda _: done.callback(None))
        return done

    # -- internals used by the connections --------------------------------------------------
    def _connect(self, key: Addr, server_name: str | None = None) -> SipStreamProtocol:
        host, port = key
        if not 0 < port < 65536 or not host or "\x00" in host:
            raise TransportError(f"cannot connect to {host!r} port {port}", peer=key)
        if len(self._open) >= self.max_connections:
            self.metrics.inc("sipd_sip_connections_refused_total", transport=self.kind)
            raise TransportError(
                f"{self.name} to {show_address(key)}: already {len(self._open)} connections open "
                f"(max_connections)",
                peer=key,
            )
        conn = SipStreamProtocol(self, key, outbound=True)
        factory: Any = ClientConnectionFactory(conn)
        if self.kind == "tls":
            assert self.tls is not None
            creator = client_options(self.tls, server_name or host, self._credentials)
            factory = TLSMemoryBIOFactory(creator, True, factory, self._tls_clock())
        self._connections[key] = conn
        self._open.add(conn)
        self.metrics.inc("sipd_sip_connections_opened_total", transport=self.kind, direction="out")
        conn._arm("setup", self.connect_timeout, conn._setup_timed_out)
        try:
            conn.connector = self.reactor.connectTCP(
                host, port, factory, timeout=self.connect_timeout + 1
            )
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            self._forget(conn)
            conn._cancel("setup")
            raise TransportError(f"cannot connect to {show_address(key)}: {exc}", peer=key) from exc
        return conn

    def _tls_clock(self) -> IReactorTime:
        # TLS batches small writes on a timer: that must be the real reactor's.
        return cast(IReactorTime, self.reactor)

    def _admit(self, conn: SipStreamProtocol) -> bool:
        """Take an inbound connection, unless closed or at ``max_connections``.

        At the limit the oldest inbound connection that never sent a SIP
        message is closed to make room: otherwise anyone could keep every
        caller out for ``idle_timeout`` by opening connections and saying
        nothing. Only when every connection has spoken is the new one refused.
        """
        if not self._closed and len(self._open) >= self.max_connections:
            self._evict_silent()
        if self._closed or len(self._open) >= self.max_connections:
            self.metrics.inc("sipd_sip_connections_refused_total", transport=self.kind)
            self._bad_input.warn(
                "refused {transport} connection from {peer}: {count} open (max_connections)",
                transport=self.name,
                peer=show_address(conn.peer),
                count=len(self._open),
            )
            return False
        conn.key = conn.peer
        conn.ready = True  # TLS itself holds what we write until its handshake is done
        self._open.add(conn)
        self._connections[conn.key] = conn
        self.metrics.inc("sipd_sip_connections_opened_total", transport=self.kind, direction="in")
        return True

    def _evict_silent(self) -> None:
        """Close the oldest inbound connection that has sent nothing, if there is one."""
        silent = [c for c in self._open if not c.outbound and not c.spoke and c.alive]
        if not silent:
            return
        victim = min(silent, key=lambda c: c.connection_id)
        self.metrics.inc("sipd_sip_connections_evicted_total", transport=self.kind)
        self._bad_input.warn(
            "closed silent {transport} connection from {peer} to make room (max_connections)",
            transport=self.name,
            peer=show_address(victim.peer),
        )
        victim.close("evicted")
        self._forget(victim)

    def _alias(self, addr: Addr, conn: SipStreamProtocol) -> None:
        existing = self._connections.get(addr)
        if existing is None or not existing.alive:
            self._connections[addr] = conn

    def _forget(self, conn: SipStreamProtocol) -> None:
        self._open.discard(conn)
        for addr in {conn.key, conn.peer}:
            if self._connections.get(addr) is conn:
                del self._connections[addr]

    def _describe_loss(self, conn: SipStreamProtocol, value: BaseException) -> TransportError:
        tls_failure = isinstance(value, SSL.Error | VerificationError)
        if tls_failure or (self.kind == "tls" and conn.outbound and not conn.ready):
            handle = getattr(conn.transport, "getHandle", lambda: None)()
            if tls_failure:
                why = describe_tls_failure(value, handle, self._credentials)
            else:
                why = loss_reason(value)
            self.metrics.inc(
                "sipd_sip_tls_failures_total", direction="out" if conn.outbound else "in"
            )
            message = f"TLS to {show_address(conn.key)} failed: {why}"
            if not conn.outbound:
                message = f"TLS from {show_address(conn.key)} failed: {why}"
        elif conn.outbound and conn.transport is None:
            message = (
                f"{self.name} connection to {show_address(conn.key)} failed: {loss_reason(value)}"
            )
        else:
            direction = "to" if conn.outbound else "from"
            message = (
                f"{self.name} connection {direction} {show_address(conn.key)} was lost: "
                f"{loss_reason(value)}"
            )
        if not isinstance(value, net_error.ConnectionDone):  # a peer may close: not news
            self._bad_input.warn("{message}", message=message)
        return TransportError(message, peer=conn.key)

    def _report(self, addr: Addr, error: TransportError) -> None:
        handler = self._error_handler
        if handler is not None and not self._closed:
            self._call_safely(lambda e: handler(addr, e), error)

    def _call_safely(self, fn: Callable[[TransportError], None], error: TransportError) -> None:
        try:
            fn(error)
        except Exception:
            self.metrics.inc("sipd_internal_errors_total")
            _log.failure("error in a SIP {transport} error callback", transport=self.name)

    def _count_sent(self, data: bytes, addr: Addr) -> None:
        tap = self.receiver.tap
        if tap is not None:
            tap(True, data, addr, None)
        # Counted from the start line's bytes, as UDP does: no parsing on the way out.
        if data.startswith(b"SIP/2.0 "):
            status = data[8:11].decode("ascii", "replace")
            self.metrics.inc("sipd_sip_responses_sent_total", status=status, transport=self.kind)
        else:
            method = data[: data.find(b" ", 0, 20)].decode("ascii", "replace")
            self.metrics.inc("sipd_sip_requests_sent_total", method=method, transport=self.kind)

    def _deliver(self, conn: SipStreamProtocol, data: bytes) -> None:
        """Hand one framed message to the receiver; its error answers go on ``conn``."""
        self.receiver.deliver(data, conn.peer, conn.answer)

    def _answer(self, conn: SipStreamProtocol, data: bytes) -> None:
        """Write a response the receiver formed on ``conn``, never anywhere else (§18.2.2)."""
        if conn.alive:
            conn.send(data)
            self._count_sent(data, conn.peer)

    def _framing_failed(self, conn: SipStreamProtocol, event: FramingError) -> None:
        """The stream cannot be read on: answer the request if there is one, then close."""
        error = BadRequest(event.reason, status=event.status)
        if event.head:
            self.receiver.reject(event.head, error, conn.peer, conn.answer)
        else:
            self.receiver.count_bad(error, conn.peer)
        conn.close("framing")
