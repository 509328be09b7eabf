"""The WebSocket client under the bridge: autobahn on Twisted, with a connect timeout.

Why a timer of our own: a bot that accepts the TCP connection and never
answers the handshake must not leave the call hanging, and a failed connect
must say what to do. autobahn's own handshake timers are turned off so that
only this module's timer (on the reactor we were given) decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from twisted.internet import defer, ssl
from twisted.internet.interfaces import IConnector, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from sipd.streaming.protocol import StreamError

__all__ = ["BotConnection", "connect_bot"]


class StreamConnectError(StreamError):
    """The bot's WebSocket could not be opened (refused, timed out, bad URL)."""


@implementer(IPushProducer)
class _Pressure:
    """Tells the bridge when the socket's send buffer is full (Twisted flow control)."""

    def __init__(self, connection: BotConnection) -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        self._connection._writable(False)

    def resumeProducing(self) -> None:
        self._connection._writable(True)

    def stopProducing(self) -> None:
        pass


class _BotClientProtocol(WebSocketClientProtocol):
    connection: BotConnection | None = None

    def onOpen(self) -> None:
        factory: _BotFactory = self.factory
        factory.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.connection is not None:
            self.connection._message(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        factory: _BotFactory = self.factory
        why = f"code {code}" + (f", {reason}" if reason else "")
        if self.connection is not None:
            self.connection._closed(why)
        else:
            factory.failed(f"the bot closed the connection during the handshake ({why})")


class _BotFactory(WebSocketClientFactory):
    protocol = _BotClientProtocol

    def __init__(self, url: str, result: defer.Deferred[BotConnection], **kwargs: Any) -> None:
        super().__init__(url, **kwargs)  # type: ignore[no-untyped-call]
        self.result = result

    def opened(self, proto: _BotClientProtocol) -> None:
        if not self.result.called:
            self.result.callback(BotConnection(self.url, proto, self.reactor))
        else:
            proto.dropConnection(abort=True)

    def failed(self, why: str) -> None:
        if not self.result.called:
            self.result.errback(
                StreamConnectError(f"could not open the bot's WebSocket {self.url}: {why}")
            )

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.failed(f"{reason.getErrorMessage()}; is the bot running and listening there?")

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        self.failed(f"connection lost before the handshake: {reason.getErrorMessage()}")


class BotConnection:
    """An open WebSocket to the bot, in the shape :class:`StreamBridge` wants."""

    #: Seconds a bot gets to answer our close before the TCP connection is dropped.
    close_timeout = 2.0

    def __init__(self, url: str, proto: _BotClientProtocol, reactor: Any) -> None:
        self.url = url
        self._reactor = reactor
        self._close_timer: Any = None
        # autobahn's methods are untyped: keep the protocol as Any here.
        self._proto: Any = proto
        self._on_text: Callable[[str | bytes], None] = lambda _: None
        self._on_binary: Callable[[bytes], None] = lambda _: None
        self._on_close: Callable[[str], None] = lambda _: None
        self._on_writable: Callable[[bool], None] = lambda _: None
        self.is_closed = False
        proto.connection = self

    def attach(
        self,
        on_text: Callable[[str | bytes], None],
        on_binary: Callable[[bytes], None],
        on_close: Callable[[str], None],
        on_writable: Callable[[bool], None],
    ) -> None:
        self._on_text, self._on_binary = on_text, on_binary
        self._on_close, self._on_writable = on_close, on_writable
        transport: Any = self._proto.transport
        if transport is not None and not self.is_closed:
            transport.registerProducer(_Pressure(self), True)

    def send_text(self, text: str) -> None:
        if not self.is_closed:
            self._proto.sendMessage(text.encode("utf-8"), isBinary=False)

    def send_binary(self, data: bytes) -> None:
        if not self.is_closed:
            self._proto.sendMessage(data, isBinary=True)

    def close(self) -> None:
        """Close with 1000 (normal); the TCP connection is dropped if the bot dawdles."""
        if not self.is_closed:
            self.is_closed = True
            self._proto.sendClose(1000)
            self._close_timer = self._reactor.callLater(self.close_timeout, self.abort)

    def abort(self) -> None:
        """Drop the TCP connection now (the bot did not answer our close in time)."""
        self.is_closed = True
        self._proto.dropConnection(abort=True)

    # -- from the protocol --------------------------------------------------------------
    def _message(self, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            self._on_binary(payload)
        else:
            self._on_text(payload)  # UTF-8 JSON: json.loads reads the bytes itself

    def _closed(self, why: str) -> None:
        self.is_closed = True
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        self._on_close(why)

    def _writable(self, writable: bool) -> None:
        self._on_writable(writable)


def connect_bot(url: str, *, reactor: Any, timeout: float = 5.0) -> defer.Deferred[BotConnection]:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) within ``timeout`` seconds.

    Fails with :class:`StreamConnectError` saying why: a bad URL, a refused
    connection, or a bot that did not complete the handshake in time.
    """
    try:
        secure, host, port, _, _, _ = parse_url(url)
    except Exception as exc:
        return defer.fail(
            StreamConnectError(f"bad bot URL {url!r}: {exc}; use ws://host:port/path or wss://...")
        )
    result: defer.Deferred[BotConnection] = defer.Deferred()
    factory: Any = _BotFactory(url, result, reactor=reactor)
    # autobahn's batched handshake timers would outlive the connection: ours do not.
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)
    if secure:
        connector = reactor.connectSSL(
            host, port, factory, ssl.optionsForClientTLS(host), timeout=timeout
        )
    else:
        connector = reactor.connectTCP(host, port, factory, timeout=timeout)

    def too_late() -> None:
        factory.failed(
            f"no WebSocket handshake within {timeout:g} s (the server accepted nothing "
            "or never answered); check the bot, or raise connect_timeout"
        )
        connector.disconnect()

    timer = reactor.callLater(timeout, too_late)

    def settled(value: Any) -> Any:
        if timer.active():
            timer.cancel()
        return value

    return result.addBoth(settled)
