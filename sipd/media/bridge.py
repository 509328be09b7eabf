"""Connect two calls' audio: what one side says, the other hears.

Frames are PCM between the two streams, so a PCMU call bridged to a PCMA
call is transcoded for free: each side encodes with its own codec.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from sipd.logs import Logger
from sipd.media.fanout import AudioSubscription
from sipd.media.frame import AudioFrame

__all__ = ["Bridge", "bridge", "unbridge"]

_log = Logger()
#: Do not queue more than this much audio towards one side (clock drift guard).
_MAX_BACKLOG_SECONDS = 0.2


def _session(call: Any) -> Any:
    return getattr(call, "session", call)


class Bridge:
    """A running bridge; :meth:`stop` (or :func:`unbridge`) ends it."""

    def __init__(self, a: Any, b: Any, *, hangup_other: bool = True) -> None:
        self.a = _session(a)
        self.b = _session(b)
        # Each side names the other (the console links them as legs of one call).
        for one, other in ((self.a, self.b), (self.b, self.a)):
            if hasattr(one, "bridged_with"):
                one.bridged_with = getattr(other, "id", None)
        self.hangup_other = hangup_other
        self.active = True
        self._subs = [self.a.subscribe_to_audio(), self.b.subscribe_to_audio()]
        self.frames = [0, 0]
        #: Fires when the bridge has stopped (either side ended or stop()).
        self.done: defer.Deferred[None] = defer.Deferred()
        defer.ensureDeferred(self._pump(self._subs[0], self.b, 0))
        defer.ensureDeferred(self._pump(self._subs[1], self.a, 1))
        self.a.wait_for_end().addCallback(lambda _: self._ended(self.b))
        self.b.wait_for_end().addCallback(lambda _: self._ended(self.a))

    async def _pump(self, source: AudioSubscription, target: Any, index: int) -> None:
        while self.active:
            frame = await source.get()
            if frame is None or not self.active:
                return
            media = getattr(target, "media", None)
            stream = None if media is None else media.stream
            if stream is not None and (
                stream.queued_samples > stream.sample_rate * _MAX_BACKLOG_SECONDS
            ):
                continue
            self.frames[index] += 1
            # Without the RTP fields; at its own rate (the target resamples if it differs).
            target.send_audio(AudioFrame.trusted(frame.samples, frame.sample_rate)).addErrback(
                lambda f: None
            )

    def _ended(self, other: Any) -> None:
        if not self.active:
            return
        self.stop()
        if self.hangup_other and not other.is_ended:
            other.hangup()

    def stop(self) -> None:
        """Stop forwarding audio (both calls stay up)."""
        if not self.active:
            return
        self.active = False
        for sub in self._subs:
            sub.close()
        if not self.done.called:
            self.done.callback(None)


def bridge(a: Any, b: Any, *, hangup_other: bool = True) -> Bridge:
    """Bridge two calls (``Call`` or ``UnifiedSession``); ends when either ends."""
    return Bridge(a, b, hangup_other=hangup_other)


def unbridge(b: Bridge) -> None:
    """Stop a bridge, leaving both calls up."""
    b.stop()
