"""The UA's SIP transports: UDP always, TCP and TLS on demand, one ``send``.

The transaction and dialog layers send with ``send(data, addr)`` and never
ask which socket: an address that is a :class:`~sipd.sip.transaction.Flow`
goes over its transport (a stream: reusing a live connection, or the one
the request came on, RFC 3261 §18.2.2), a
:class:`~sipd.sip.transaction.Route` (a host name being located) to its
current target once known, any other over UDP. Messages that arrive over a
stream are handed up with their source as a ``Flow``, which is how the
transactions know the transport is reliable (no retransmissions, zero wait
timers) and where their responses go. A connection that fails or drops
fails the transactions that rode on it at once
(:meth:`~sipd.sip.transaction.TransactionLayer.connection_failed`).

The UA's configured stream transport (``transport="tcp"|"tls"``) listens
from the start on the SIP port. The others open on first use, for one
call whose URI asks for them (``;transport=tcp``, ``sips:``) or for a
request too large for UDP (§18.1.1): TCP then also listens on the UDP port's
number when it is free (so a Contact with ``;transport=tcp`` reaches us),
TLS on a free port when the TLS settings hold a certificate; otherwise they
only connect out, and the peer's answers come back on our connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP, IReactorTime

from sipd.config import SipdConfig
from sipd.errors import ConfigError, TransportError
from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.send_errors import SEND_ERRORS
from sipd.session.taps import WireSink, transport_tap
from sipd.sip.message import Request, Response
from sipd.sip.transaction import Addr, Flow, Route, TransactionLayer
from sipd.transport.tcp import StreamKind, StreamTransport
from sipd.transport.udp import SipDatagramProtocol

__all__ = ["Transports"]

_log = Logger()


@dataclass(frozen=True, slots=True)
class _Setup:
    """What opening a stream transport later needs (known once the UA is bound)."""

    config: SipdConfig
    reactor: Any
    clock: IReactorTime
    metrics: Metrics
    layer: TransactionLayer
    port: int


class Transports:
    """UDP plus TCP/TLS streams, behind one ``send``."""

    def __init__(self, udp: SipDatagramProtocol) -> None:
        self.udp = udp
        #: The stream transports open now, by kind ("tcp", "tls").
        self.streams: dict[str, StreamTransport] = {}
        self._setup: _Setup | None = None
        self._closed = False
        self._sink: WireSink | None = None

    @property
    def stream(self) -> StreamTransport | None:
        """The stream transport the UA is configured for (``transport=``), if any."""
        setup = self._setup
        return None if setup is None else self.streams.get(setup.config.transport)

    def send(self, data: bytes, addr: Addr) -> None:
        """Send ``data`` to ``addr``; raises ``OSError`` (``TransportError``) as UDP does."""
        if isinstance(addr, Flow):
            kind = addr.transport
            if kind != "udp":
                stream = self.streams.get(kind) or self._open(kind)
                stream.send(data, (addr[0], addr[1]), server_name=addr.server_name)
                return
        elif isinstance(addr, Route):
            self._send_routed(data, addr)
            return
        self.udp.send(data, addr)

    def set_message_tap(self, sink: WireSink | None) -> None:
        """Record every SIP message sent and received to ``sink`` (None: stop), streams too."""
        self._sink = sink
        udp = self.udp
        tap = None if sink is None else transport_tap("udp", lambda: udp.local_address, sink)
        udp.receiver.tap = tap
        for stream in self.streams.values():
            self._tap_stream(stream)

    def _tap_stream(self, stream: StreamTransport) -> None:
        sink = self._sink
        stream.receiver.tap = (
            None if sink is None else transport_tap(stream.kind, lambda: stream.local_address, sink)
        )

    def port_for(self, kind: str) -> int | None:
        """The port we listen on for ``kind`` (opening it), None when it only connects out."""
        if kind == "udp":
            return self._setup.port if self._setup is not None else None
        stream = self.streams.get(kind) or self._open(kind)
        try:
            return stream.local_address[1]
        except TransportError:
            return None

    def _send_routed(self, data: bytes, route: Route) -> None:
        """A message outside any transaction (an ACK) to a host name: once it is located."""
        target = route.target
        if target is not None:
            self.send(data, target)
        elif route.error is not None:
            raise TransportError(str(route.error), peer=(route[0], route[1]))
        else:
            route.when_located(lambda: self._send_located(data, route))

    def _send_located(self, data: bytes, route: Route) -> None:
        target = route.target
        if target is None or self._closed:
            _log.info("not sent to {host}: {error}", host=route[0], error=str(route.error))
            return
        try:
            self.send(data, target)
        except SEND_ERRORS as exc:
            _log.info("could not send to {target}: {error}", target=target, error=exc)

    def open_stream(
        self,
        config: SipdConfig,
        reactor: Any,
        clock: IReactorTime,
        metrics: Metrics,
        layer: TransactionLayer,
        port: int,
    ) -> None:
        """Remember how to open streams; listen on ``config.transport`` (TCP or TLS) at ``port``."""
        self._setup = _Setup(config, reactor, clock, metrics, layer, port)
        kind = config.transport
        if kind == "udp":
            return
        if kind == "tls" and config.tls is None:
            raise ConfigError("transport: 'tls' needs tls=TlsConfig(certificate, private_key, ...)")
        self._open(kind, configured=True)

    def _open(self, kind: str, *, configured: bool = False) -> StreamTransport:
        """Create the ``kind`` stream transport, listening where it can (module doc)."""
        setup = self._setup
        if setup is None or self._closed:
            raise TransportError(f"cannot send over {kind.upper()}: the SIP transports are closed")
        config = setup.config
        if kind not in ("tcp", "tls"):
            raise TransportError(f"unsupported SIP transport {kind!r} (udp, tcp or tls)")
        if kind == "tls" and config.tls is None:
            raise TransportError(
                "cannot send over TLS (a sips: URI or ;transport=tls asks for it): this UA has "
                "no TLS settings; pass tls=TlsConfig(ca_certificates=...) to SimplePeer.create"
            )
        stream = StreamTransport(
            cast(StreamKind, kind),
            cast(IReactorTCP, setup.reactor),
            setup.clock,
            tls=config.tls,
            metrics=setup.metrics,
            idle_timeout=config.tcp_idle_timeout,
        )
        # A TLS client with only a CA cannot serve: it connects out, and what
        # the peer sends back comes on those connections (RFC 5923 aside).
        serves = kind == "tcp" or (config.tls is not None and config.tls.can_serve)
        if serves:
            # The configured transport shares the SIP port number; TCP opened on
            # demand tries it too; TLS opened on demand takes any free port.
            port = setup.port if configured or kind == "tcp" else 0
            try:
                stream.listen(config.host, port)
            except Exception as exc:
                if configured:
                    raise ConfigError(
                        f"cannot listen for SIP over {kind.upper()} on {config.host}:{port}: {exc}"
                    ) from exc
                _log.info(
                    "SIP over {kind} connects out only: cannot listen on {port}: {error}",
                    kind=kind.upper(),
                    port=port,
                    error=str(exc),
                )
        layer = setup.layer

        def received(message: Request | Response, source: Addr) -> None:
            layer.receive(message, Flow(source[0], source[1], stream.kind))

        def failed(addr: Addr, error: TransportError) -> None:
            layer.connection_failed(Flow(addr[0], addr[1], stream.kind), error)

        def screened(message: Request | Response, source: Addr) -> bool:
            # The UA's screen (overload control, set on UDP) sees stream INVITEs
            # too; given the Flow, its stateless 503 goes back on the connection.
            screen = self.udp.screen
            return screen is not None and screen(message, Flow(source[0], source[1], stream.kind))

        stream.screen = screened
        stream.set_handler(received)
        stream.set_error_handler(failed)
        self._tap_stream(stream)
        self.streams[kind] = stream
        return stream

    def close(self) -> defer.Deferred[None]:
        """Close the stream transports (their listeners and every connection)."""
        self._closed = True
        streams, self.streams = list(self.streams.values()), {}
        if not streams:
            return defer.succeed(None)
        closing = [stream.close() for stream in streams]
        return defer.gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)
