"""Media streaming over WebSocket: a call's audio to a voice bot and back.

``call.stream(url)`` (and the daemon's ``stream`` handler) speak the
media-stream protocol of Twilio's Media Streams (JSON text frames, base64
µ-law at 8 kHz), so bots written for it work unchanged, or ``linear16``
(16-bit PCM at 16 kHz in binary frames). See docs/voice-bots.md.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer

from sipd.streaming.bridge import StreamBridge, StreamedSession, StreamEnd
from sipd.streaming.protocol import StreamError, StreamSpec, normalise_protocol

__all__ = ["StreamEnd", "StreamError", "connect_and_bridge", "stream_session"]


def stream_session(
    session: StreamedSession,
    url: str,
    *,
    reactor: Any,
    protocol: str = "media-stream",
    parameters: dict[str, Any] | None = None,
    connect_timeout: float = 5.0,
    fallback_wav: str | os.PathLike[str] | None = None,
    wait_for_answer: defer.Deferred[Any] | None = None,
) -> defer.Deferred[StreamEnd]:
    """Connect to the bot at ``url``, then bridge ``session`` to it until either ends.

    If the bot cannot be reached within ``connect_timeout`` the call is hung
    up and the Deferred fails with :class:`StreamError` saying why.
    """
    try:
        spec = StreamSpec(normalise_protocol(protocol))
    except StreamError:
        return defer.fail()
    except Exception as exc:
        return defer.fail(StreamError(str(exc)))
    from sipd.streaming.websocket import connect_bot

    async def run() -> StreamEnd:
        try:
            socket = await connect_bot(url, reactor=reactor, timeout=connect_timeout)
        except StreamError:
            if wait_for_answer is not None:
                wait_for_answer.addErrback(lambda _: None)  # the stream error says it all
            if not session.is_ended:
                await session.hangup()
            raise
        if wait_for_answer is not None:
            try:
                await wait_for_answer
            except Exception:
                socket.close()
                raise
        if session.is_ended:
            socket.close()
            return StreamEnd("caller", "the call ended before the stream started", 0, 0, 0, 0, 0, 0)
        bridge = StreamBridge(
            session, socket, spec, parameters=parameters, fallback_wav=fallback_wav
        )
        return await bridge.run()

    return defer.ensureDeferred(run())


def connect_and_bridge(
    url: str,
    *,
    reactor: Any,
    protocol: str = "media-stream",
    connect_timeout: float = 5.0,
) -> defer.Deferred[Any]:
    """Open the bot's socket first (the daemon answers only once a bot is there).

    Fires with a callable ``bridge(session, parameters=..., fallback_wav=...)``
    that starts streaming an answered session and returns its
    ``Deferred[StreamEnd]``; the callable has ``.close()`` to drop the socket
    unused (the caller gave up while we connected).
    """
    try:
        spec = StreamSpec(normalise_protocol(protocol))
    except Exception as exc:
        return defer.fail(StreamError(str(exc)))
    from sipd.streaming.websocket import connect_bot

    def ready(socket: Any) -> _Pending:
        return _Pending(socket, spec)

    return connect_bot(url, reactor=reactor, timeout=connect_timeout).addCallback(ready)


class _Pending:
    """An open bot socket waiting for its call to be answered."""

    def __init__(self, socket: Any, spec: StreamSpec) -> None:
        self.socket = socket
        self.spec = spec

    def __call__(
        self,
        session: StreamedSession,
        *,
        parameters: dict[str, Any] | None = None,
        fallback_wav: str | os.PathLike[str] | None = None,
    ) -> defer.Deferred[StreamEnd]:
        bridge = StreamBridge(
            session, self.socket, self.spec, parameters=parameters, fallback_wav=fallback_wav
        )
        return bridge.run()

    def close(self) -> None:
        self.socket.close()
