"""``stream``: answer each call and bridge its audio to a WebSocket voice bot.

Settings (``handler: {name: stream, settings: {...}}``):

* ``url`` (required): the bot's ``ws://`` or ``wss://`` URL;
* ``protocol``: ``media-stream`` (Twilio's Media Streams JSON, the default)
  or ``linear16`` (16-bit PCM at 16 kHz in binary frames);
* ``parameters``: a mapping sent to the bot as ``start.customParameters``;
* ``connect_timeout``: seconds to open the WebSocket (default 5);
* ``fallback``: a WAV file (relative to the config file) played when the bot
  closes the socket, before hanging up.

The WebSocket is opened before the call is answered: a bot that cannot be
reached means a 503 to the caller (with the reason in the log), never a call
answered into silence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer

from sipd import ConfigError, Defer, InviteDetails, UnifiedSession
from sipd.handlers.base import HandlerBase
from sipd.logs import Logger
from sipd.streaming import StreamEnd, StreamError, connect_and_bridge
from sipd.streaming.protocol import normalise_protocol

__all__ = ["StreamHandler"]

_log = Logger()


class StreamHandler(HandlerBase):
    """Connects to the bot per call, answers once connected, streams until either ends."""

    def __init__(self, coordinator: Any, settings: dict[str, Any]) -> None:
        super().__init__(coordinator, settings)
        url = settings.get("url")
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ConfigError(
                f"handler.settings.url: the stream handler needs the bot's WebSocket URL "
                f"(ws://host:port/path or wss://...), got {url!r}"
            )
        self.url = url
        try:
            self.protocol = normalise_protocol(str(settings.get("protocol", "media-stream")))
        except Exception as exc:
            raise ConfigError(f"handler.settings.protocol: {exc}") from None
        parameters = settings.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ConfigError("handler.settings.parameters: must be a mapping of names to values")
        self.parameters: dict[str, Any] = dict(parameters)
        try:
            self.connect_timeout = float(settings.get("connect_timeout", 5.0))
        except (TypeError, ValueError):
            raise ConfigError("handler.settings.connect_timeout: must be seconds") from None
        fallback = settings.get("fallback")
        self.fallback: str | None = None
        if fallback is not None:
            path = Path(str(settings.get("_config_dir", "."))) / str(fallback)
            if not path.is_file():
                raise ConfigError(f"handler.settings.fallback: no WAV file at {path}")
            self.fallback = str(path)
        #: Streams that have ended (a count: a daemon runs for months).
        self.finished = 0

    def on_incoming_invite(self, invite: InviteDetails) -> Defer:
        reactor = self.coordinator.clock
        d = connect_and_bridge(
            self.url,
            reactor=reactor,
            protocol=self.protocol,
            connect_timeout=self.connect_timeout,
        )
        d.addCallbacks(
            lambda bridge: self._connected(invite, bridge), self._refuse, (), {}, (invite,)
        )
        d.addErrback(lambda f: _log.failure("stream of call {call_id}", f, call_id=invite.call_id))
        return Defer()

    def _refuse(self, failure: Any, invite: InviteDetails) -> None:
        reason = str(failure.value) if failure.check(StreamError) else repr(failure.value)
        _log.warn("call {call_id} refused: {reason}", call_id=invite.call_id, reason=reason)
        if not invite.answered and not invite.cancelled:
            invite.reject(503, "Voice Bot Unavailable")

    def _connected(self, invite: InviteDetails, bridge: Any) -> defer.Deferred[None] | None:
        if invite.answered or invite.cancelled:
            bridge.close()  # the caller gave up while we connected
            return None

        def answered(session: UnifiedSession) -> defer.Deferred[None]:
            streamed: defer.Deferred[StreamEnd] = bridge(
                session, parameters=self.parameters, fallback_wav=self.fallback
            )
            return streamed.addCallback(self._ended)

        def not_answered(failure: Any) -> None:  # the caller hung up before the ACK
            bridge.close()

        return invite.accept().addCallbacks(answered, not_answered)

    def _ended(self, end: StreamEnd) -> None:
        self.finished += 1


def build(coordinator: Any, settings: dict[str, Any]) -> StreamHandler:
    return StreamHandler(coordinator, settings)
