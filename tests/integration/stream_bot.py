"""A voice bot for the streaming tests: autobahn's Twisted WebSocket server on a free port.

It records every message with the reactor time it arrived, can echo the
caller's audio, and lets a test send media, marks and ``clear`` or close the
socket. It speaks the protocol as a bot server written for Twilio's Media
Streams does (JSON text frames, base64 µ-law), or raw PCM in binary frames.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from numpy.typing import NDArray
from twisted.internet import defer, protocol

from sipd.media import g711
from tests.conftest import get_reactor

__all__ = ["BotConnection", "SilentServer", "TestBot"]


@dataclass
class BotConnection:
    proto: Any
    #: (arrival time, decoded JSON or raw bytes)
    received: list[tuple[float, Any]] = field(default_factory=list)
    echo: bool = False
    closed: defer.Deferred[tuple[bool, int | None]] = field(default_factory=defer.Deferred)
    closed_by_bot: bool = False
    waiters: list[tuple[Any, defer.Deferred[Any]]] = field(default_factory=list)

    @property
    def stream_sid(self) -> str:
        return str(self.events("start")[0]["streamSid"])

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if isinstance(m, dict) and m.get("event") == name]

    def binary(self) -> list[bytes]:
        return [m for _, m in self.received if isinstance(m, bytes)]

    def wait_for(self, check: Any) -> defer.Deferred[Any]:
        """Fires with the first (time, message) for which ``check(message)`` is true."""
        for item in self.received:
            if check(item[1]):
                return defer.succeed(item)
        d: defer.Deferred[Any] = defer.Deferred()
        self.waiters.append((check, d))
        return d

    def wait_event(self, event: str, **fields: Any) -> defer.Deferred[Any]:
        def check(m: Any) -> bool:
            if not (isinstance(m, dict) and m.get("event") == event):
                return False
            return all(m.get(event, {}).get(k) == v for k, v in fields.items())

        return self.wait_for(check)

    def got(self, message: Any) -> None:
        item = (get_reactor().seconds(), message)
        self.received.append(item)
        for check, d in list(self.waiters):
            if check(message):
                self.waiters.remove((check, d))
                d.callback(item)

    # -- sending ------------------------------------------------------------------------
    def send_json(self, msg: dict[str, Any]) -> None:
        self.proto.sendMessage(json.dumps(msg).encode(), isBinary=False)

    def send_media(self, samples: NDArray[np.int16]) -> None:
        payload = base64.b64encode(g711.ulaw_encode(samples).tobytes()).decode()
        self.send_json(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
        )

    def send_pcm(self, samples: NDArray[np.int16]) -> None:
        self.proto.sendMessage(samples.astype("<i2").tobytes(), isBinary=True)

    def send_mark(self, name: str) -> None:
        self.send_json({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def send_clear(self) -> None:
        self.send_json({"event": "clear", "streamSid": self.stream_sid})

    def close(self) -> None:
        self.closed_by_bot = True
        self.proto.sendClose(1000)


class _BotProtocol(WebSocketServerProtocol):
    def onOpen(self) -> None:
        self.conn = BotConnection(self, echo=self.factory.bot.echo)
        self.factory.bot.opened(self.conn)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.conn.got(payload)
            if self.conn.echo:
                self.sendMessage(payload, isBinary=True)
            return
        msg = json.loads(payload)
        self.conn.got(msg)
        if self.conn.echo and msg.get("event") == "media":
            reply = {
                "event": "media",
                "streamSid": msg["streamSid"],
                "media": {"payload": msg["media"]["payload"]},
            }
            self.sendMessage(json.dumps(reply).encode(), isBinary=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None and not conn.closed.called:
            conn.closed.callback((wasClean, code))


class TestBot:
    """Listens on 127.0.0.1:<free port>; ``next_connection()`` fires per stream."""

    __test__ = False

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.connections: list[BotConnection] = []
        self._served: list[BotConnection] = []
        self._waiters: list[defer.Deferred[BotConnection]] = []
        factory = WebSocketServerFactory()
        factory.protocol = _BotProtocol
        factory.bot = self
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        self.port = get_reactor().listenTCP(0, factory, interface="127.0.0.1")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port.getHost().port}/stream"

    def opened(self, conn: BotConnection) -> None:
        self.connections.append(conn)
        if self._waiters:
            self._waiters.pop(0).callback(conn)

    def next_connection(self) -> defer.Deferred[BotConnection]:
        if len(self.connections) > len(self._served):
            conn = self.connections[len(self._served)]
            self._served.append(conn)
            return defer.succeed(conn)
        d: defer.Deferred[BotConnection] = defer.Deferred()
        d.addCallback(lambda c: self._served.append(c) or c)
        self._waiters.append(d)
        return d

    async def stop(self) -> None:
        for conn in self.connections:
            if not conn.closed.called:
                conn.proto.dropConnection(abort=True)
        await self.port.stopListening()


class _Mute(protocol.Protocol):
    """Accepts the TCP connection and never says a word."""


class SilentServer:
    """A TCP server that accepts and never answers the WebSocket handshake."""

    def __init__(self) -> None:
        self.connections: list[_Mute] = []
        factory = protocol.Factory.forProtocol(_Mute)
        self.port = get_reactor().listenTCP(0, factory, interface="127.0.0.1")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port.getHost().port}/stream"

    async def stop(self) -> None:
        await self.port.stopListening()
