"""One call's audio bridged to a WebSocket bot: the Twisted edge of the protocol.

The rules (message fields, re-framing, marks, ``clear``) live in
:mod:`sipd.streaming.protocol`; this module only moves data between the
call's session and the socket (:mod:`sipd.streaming.websocket`) and decides
when the stream ends:

* the caller hangs up: ``stop`` is sent and sipd closes the socket (some bots
  ignore ``stop`` and only end on the close);
* the bot closes the socket: the call is hung up, after an optional fallback
  WAV file;
* the call's audio is fed to the session at most ``lead`` frames ahead of the
  wire, so ``clear`` stops playback within ``lead`` × 20 ms.
"""

from __future__ import annotations

import math
import os
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from twisted.internet import defer
from twisted.python.failure import Failure

from sipd.logs import Logger
from sipd.media.fanout import AudioSubscription
from sipd.media.frame import AudioFrame
from sipd.media.resample import StreamResampler
from sipd.streaming.protocol import (
    BotClear,
    BotMark,
    BotMedia,
    BotMessage,
    MessageBuilder,
    Playback,
    StreamProtocolError,
    StreamSpec,
    parse_bot_binary,
    parse_bot_text,
)

__all__ = ["BotSocket", "StreamBridge", "StreamEnd", "StreamedSession"]

_log = Logger()
#: The call's rate when the peer does not say (the session converts from it).
_CALL_RATE = 8000


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a stream ended: who ended it, why, and what went through it."""

    #: "caller" (hung up), "bot" (closed the socket) or "local" (sipd ended it).
    ended_by: str
    reason: str
    frames_to_bot: int
    frames_from_bot: int
    marks_returned: int
    #: Caller frames dropped because the bot read too slowly.
    dropped_to_bot: int
    #: Bot samples dropped because the playback queue was full.
    dropped_from_bot: int
    #: Bot messages that broke the protocol (ignored).
    bad_messages: int
    #: Quiet bot samples skipped to catch up with a live stream running late.
    caught_up: int = 0


class BotSocket(Protocol):
    """What the bridge needs of the WebSocket (see :mod:`sipd.streaming.websocket`)."""

    url: str

    def send_text(self, text: str) -> None: ...
    def send_binary(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def attach(
        self,
        on_text: Callable[[str | bytes], None],
        on_binary: Callable[[bytes], None],
        on_close: Callable[[str], None],
        on_writable: Callable[[bool], None],
    ) -> None: ...


class StreamedSession(Protocol):
    """The session calls offered to the bridge (a :class:`~sipd.UnifiedSession`)."""

    id: str

    @property
    def call_id(self) -> str | None: ...
    @property
    def remote_uri(self) -> str: ...
    @property
    def local_uri(self) -> str: ...
    @property
    def is_ended(self) -> bool: ...
    def send_audio(self, frame: AudioFrame) -> defer.Deferred[None]: ...
    def subscribe_to_audio(self) -> AudioSubscription: ...
    def on_dtmf(self, callback: Callable[[str], None]) -> None: ...
    def wait_for_end(self) -> defer.Deferred[None]: ...
    def hangup(self) -> defer.Deferred[None]: ...
    def play_wav(self, path: str | os.PathLike[str]) -> defer.Deferred[None]: ...


class _Resampler:
    """Rate conversion for one direction (soxr via :class:`StreamResampler`), or none.

    Input is converted in lengths that map to whole output samples (a bot's
    odd-length 16 kHz chunk keeps its last sample for the next one), so no
    sample is lost or invented at chunk edges.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self._convert = StreamResampler(from_rate, to_rate) if from_rate != to_rate else None
        self._step = from_rate // math.gcd(from_rate, to_rate)
        self._held = np.zeros(0, dtype=np.int16)

    def __call__(self, samples: NDArray[np.int16]) -> NDArray[np.int16]:
        if self._convert is None:
            return samples
        if len(self._held):
            samples = np.concatenate([self._held, samples])
        usable = len(samples) - len(samples) % self._step
        self._held = samples[usable:]
        return self._convert(samples[:usable])


class StreamBridge:
    """Carries one answered call's audio, DTMF and end to a connected bot socket."""

    def __init__(
        self,
        session: StreamedSession,
        socket: BotSocket,
        spec: StreamSpec,
        *,
        parameters: dict[str, Any] | None = None,
        fallback_wav: str | os.PathLike[str] | None = None,
        lead: int = 1,
        max_playback: float = 60.0,
        max_pending_to_bot: int = 250,
    ) -> None:
        self.session = session
        self.socket = socket
        self.spec = spec
        self.parameters = dict(parameters or {})
        self.fallback_wav = fallback_wav
        self.lead = lead
        self.builder = MessageBuilder(
            spec,
            stream_sid="MZ" + uuid.uuid4().hex,
            call_sid=session.call_id or str(session.id),
        )
        # The rate the call's audio API works at (a peer's sample_rate setting).
        config = getattr(getattr(session, "services", None), "config", None)
        self.call_rate = int(getattr(config, "sample_rate", None) or _CALL_RATE)
        self.call_frame = self.call_rate // 50
        self.playback = Playback(self.call_frame, int(max_playback * self.call_rate))
        self._from_bot_rate = _Resampler(spec.sample_rate, self.call_rate)
        self._to_bot_rates: dict[int, _Resampler] = {}
        self._in_flight = 0
        self._writable = True
        self._pending: deque[str | bytes] = deque()
        self._max_pending = max_pending_to_bot
        self._subscription: AudioSubscription | None = None
        self._done: defer.Deferred[StreamEnd] = defer.Deferred()
        self._ended: tuple[str, str] | None = None
        self.frames_to_bot = 0
        self.frames_from_bot = 0
        self.marks_returned = 0
        self.dropped_to_bot = 0
        self.bad_messages = 0

    # -- life -------------------------------------------------------------------------------
    def run(self) -> defer.Deferred[StreamEnd]:
        """Start streaming; fires with :class:`StreamEnd` once the stream is over."""
        self.socket.attach(
            self._on_text, self._on_binary, self._on_socket_closed, self._on_writable
        )
        self._send(self.builder.connected())
        self._send(
            self.builder.start(
                from_number=_number(self.session.remote_uri),
                to_number=_number(self.session.local_uri),
                parameters=self.parameters,
            )
        )
        self.session.on_dtmf(self._on_dtmf)
        self._subscription = self.session.subscribe_to_audio()
        self._subscription.listen(self._on_frame)
        self.session.wait_for_end().addBoth(self._on_call_ended)
        return self._done

    def _finish(self, ended_by: str, reason: str) -> None:
        if self._ended is not None:
            return
        self._ended = (ended_by, reason)
        if self._subscription is not None:
            self._subscription.close()
        self.playback.clear()
        _log.info(
            "stream {sid} to {url} ended by {by}: {reason}",
            sid=self.builder.stream_sid,
            url=self.socket.url,
            by=ended_by,
            reason=reason,
        )
        self._done.callback(
            StreamEnd(
                ended_by=ended_by,
                reason=reason,
                frames_to_bot=self.frames_to_bot,
                frames_from_bot=self.frames_from_bot,
                marks_returned=self.marks_returned,
                dropped_to_bot=self.dropped_to_bot,
                dropped_from_bot=self.playback.overflow,
                bad_messages=self.bad_messages,
                caught_up=self.playback.caught_up,
            )
        )

    def _on_call_ended(self, _: object) -> None:
        if self._ended is not None:
            return
        # The caller hung up: ``stop``, then sipd closes the socket itself.
        self._send(self.builder.stop(), force=True)
        self.socket.close()
        self._finish("caller", "the caller hung up")

    def _on_socket_closed(self, why: str) -> None:
        if self._ended is not None:
            return
        reason = f"the bot closed the WebSocket ({why})"
        self._finish("bot", reason)
        if self.session.is_ended:
            return
        if self.fallback_wav is not None:
            d = self.session.play_wav(self.fallback_wav)
            d.addErrback(self._fallback_failed)
            d.addBoth(lambda _: self.session.hangup())
        else:
            self.session.hangup().addErrback(lambda f: None)

    def _fallback_failed(self, failure: Failure) -> None:
        _log.warn("stream fallback {path} not played: {e}", path=self.fallback_wav, e=failure.value)

    # -- caller -> bot -------------------------------------------------------------------------
    def _on_frame(self, frame: AudioFrame | None) -> None:
        """Each received frame goes to the bot as soon as it is decoded (a listener
        on the subscription: no Deferred, no queue, no wait for the next tick)."""
        if frame is None or self._ended is not None:
            return
        rate = frame.sample_rate
        if rate == self.spec.sample_rate:
            samples = frame.samples
        else:
            resampler = self._to_bot_rates.get(rate)
            if resampler is None:
                resampler = self._to_bot_rates[rate] = _Resampler(rate, self.spec.sample_rate)
            samples = resampler(frame.samples)
            if not len(samples):
                return
        self.frames_to_bot += 1
        self._send(self.builder.media(samples), droppable=True)

    def _on_dtmf(self, digit: str) -> None:
        if self._ended is None:
            self._send(self.builder.dtmf(digit))

    def _send(self, msg: str | bytes, *, droppable: bool = False, force: bool = False) -> None:
        """Send now, or hold while the socket pushes back (bounded: oldest media dropped)."""
        if (self._writable and not self._pending) or force:
            self._write(msg)
            return
        if droppable and len(self._pending) >= self._max_pending:
            for i, held in enumerate(self._pending):
                if _is_media(held):
                    del self._pending[i]
                    break
            else:
                self.dropped_to_bot += 1  # only control messages held: drop this one
                return
            self.dropped_to_bot += 1
        self._pending.append(msg)

    def _write(self, msg: str | bytes) -> None:
        if isinstance(msg, str):
            self.socket.send_text(msg)
        else:
            self.socket.send_binary(msg)

    def _on_writable(self, writable: bool) -> None:
        self._writable = writable
        while self._writable and self._pending:
            self._write(self._pending.popleft())

    # -- bot -> caller -----------------------------------------------------------------------------
    def _on_text(self, text: str | bytes) -> None:
        try:
            message = parse_bot_text(text, self.spec)
        except StreamProtocolError as exc:
            self._bad(str(exc))
            return
        self._handle(message)

    def _on_binary(self, data: bytes) -> None:
        if self.spec.sample_rate == 8000 and self.spec.protocol != "linear16":
            self._bad("a binary frame in the media-stream protocol (audio goes in JSON text)")
            return
        self._handle(parse_bot_binary(data))

    def _bad(self, why: str) -> None:
        self.bad_messages += 1
        if self.bad_messages == 1:
            _log.warn("stream {url}: {why} (ignored)", url=self.socket.url, why=why)

    def _handle(self, message: BotMessage) -> None:
        if self._ended is not None:
            return
        if isinstance(message, BotMedia):
            self.frames_from_bot += 1
            self.playback.push(self._from_bot_rate(message.samples))
            self._pump()
        elif isinstance(message, BotMark):
            self._return_marks(self.playback.mark(message.name))
        elif isinstance(message, BotClear):
            self._return_marks(self.playback.clear())

    def _return_marks(self, names: list[str]) -> None:
        for name in names:
            self.marks_returned += 1
            self._send(self.builder.mark(name))

    def _pump(self) -> None:
        """Hand frames to the session, at most ``lead`` ahead of the wire."""
        while self._in_flight < self.lead and self._ended is None:
            samples = self.playback.take(allow_partial=self._in_flight == 0)
            if samples is None:
                return
            self._in_flight += 1
            d = self.session.send_audio(AudioFrame.trusted(samples, self.call_rate))
            d.addCallbacks(self._played, self._not_played)

    def _played(self, _: object) -> None:
        self._in_flight -= 1
        self._return_marks(self.playback.played(self.call_frame))
        self._pump()

    def _not_played(self, failure: Failure) -> None:
        self._in_flight -= 1  # the call ended: _on_call_ended finishes the stream


def _is_media(msg: str | bytes) -> bool:
    """Caller audio (droppable under pressure), not a control message."""
    return isinstance(msg, bytes) or msg.startswith('{"event":"media"')


def _number(uri: str) -> str:
    """The user part of a SIP URI (what bots call a phone number), else the URI."""
    text = uri.strip("<>")
    if ":" in text:
        text = text.split(":", 1)[1]
    user, at, _ = text.partition("@")
    return user if at and user else uri
