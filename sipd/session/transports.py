"""The UA's SIP transports: UDP always, TCP or TLS when configured, one ``send``.

The transaction and dialog layers send with ``send(data, addr)`` and never
ask which socket: an address that is a :class:`~sipd.sip.transaction.Flow`
goes over its stream transport (reusing a live connection, or the one the
request came on: RFC 3261 §18.2.2), any other over UDP. Messages that
arrive over a stream are handed up with their source as a ``Flow``, which
is how the transactions know the transport is reliable (no
retransmissions, zero wait timers) and where their responses go. A
connection that fails or drops fails the transactions that rode on it at
once (:meth:`~sipd.sip.transaction.TransactionLayer.connection_failed`).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP, IReactorTime

from sipd.config import SipdConfig
from sipd.errors import ConfigError, TransportError
from sipd.metrics import Metrics
from sipd.sip.message import Request, Response
from sipd.sip.transaction import Addr, Flow, TransactionLayer
from sipd.transport.tcp import StreamTransport
from sipd.transport.udp import SipDatagramProtocol

__all__ = ["Transports"]


class Transports:
    """UDP plus the configured stream transport, behind one ``send``."""

    def __init__(self, udp: SipDatagramProtocol) -> None:
        self.udp = udp
        self.stream: StreamTransport | None = None
        self._layer: TransactionLayer | None = None

    def send(self, data: bytes, addr: Addr) -> None:
        """Send ``data`` to ``addr``; raises ``OSError`` (``TransportError``) as UDP does."""
        stream = self.stream
        if isinstance(addr, Flow):
            if stream is None or stream.kind != addr.transport:
                raise TransportError(
                    f"cannot send to {addr[0]}:{addr[1]} over {addr.transport.upper()}: "
                    "this UA does not speak it (set transport=)",
                    peer=(addr[0], addr[1]),
                )
            stream.send(data, (addr[0], addr[1]))
            return
        self.udp.send(data, addr)

    def open_stream(
        self,
        config: SipdConfig,
        reactor: Any,
        clock: IReactorTime,
        metrics: Metrics,
        layer: TransactionLayer,
        port: int,
    ) -> None:
        """Listen on ``config.transport`` (TCP or TLS) at ``port`` and wire it to ``layer``."""
        kind = config.transport
        if kind == "udp":
            return
        if kind == "tls" and config.tls is None:
            raise ConfigError("transport: 'tls' needs tls=TlsConfig(certificate, private_key, ...)")
        stream = StreamTransport(
            "tls" if kind == "tls" else "tcp",
            cast(IReactorTCP, reactor),
            clock,
            tls=config.tls,
            metrics=metrics,
            idle_timeout=config.tcp_idle_timeout,
        )
        # A TLS client with only a CA cannot serve: it connects out, and what
        # the peer sends back comes on those connections (RFC 5923 aside).
        serves = kind == "tcp" or (config.tls is not None and config.tls.can_serve)
        try:
            if serves:
                stream.listen(config.host, port)
        except Exception as exc:
            raise ConfigError(
                f"cannot listen for SIP over {kind.upper()} on {config.host}:{port}: {exc}"
            ) from exc
        self._layer = layer

        def received(message: Request | Response, source: Addr) -> None:
            layer.receive(message, Flow(source[0], source[1], stream.kind))

        def failed(addr: Addr, error: TransportError) -> None:
            layer.connection_failed(Flow(addr[0], addr[1], stream.kind), error)

        stream.set_handler(received)
        stream.set_error_handler(failed)
        self.stream = stream

    def close(self) -> defer.Deferred[None]:
        """Close the stream transport (its listener and every connection)."""
        stream, self.stream = self.stream, None
        if stream is None:
            return defer.succeed(None)
        return stream.close()
