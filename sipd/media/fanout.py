"""Received audio, handed out to whoever listens: queues, subscribers, recorders.

A call's received frames go to its own ``recv_audio`` queue, to any number of
independent subscriber queues (``session.subscribe_to_audio()``) and to WAV
recorders. Queues are bounded — an application that never reads must not
grow without limit — and each reader learns of the call's end by getting
``None``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

import numpy as np
from twisted.internet import defer

from sipd.logs import Logger
from sipd.media.frame import SAMPLE_RATE, AudioFrame
from sipd.media.rtp import ts_diff
from sipd.media.wav import WavWriter

__all__ = ["AudioSubscription", "DigitQueue", "WavRecorder"]

_log = Logger()

#: Gaps longer than this (in seconds) are not filled with silence in recordings.
_MAX_GAP_SECONDS = 2


class AudioSubscription:
    """An independent, bounded stream of received frames.

    Read it with :meth:`get` / :meth:`try_get`, or hand it a callback with
    :meth:`listen` to be called with each frame as it arrives: a media bridge
    forwarding 50 frames a second per call skips a Deferred per frame that way.
    """

    def __init__(self, maxlen: int = 500) -> None:
        self._frames: deque[AudioFrame] = deque(maxlen=maxlen)
        self._waiters: deque[defer.Deferred[AudioFrame | None]] = deque()
        self._listener: Callable[[AudioFrame | None], None] | None = None
        self.ended = False
        self.overflow = 0

    def listen(self, callback: Callable[[AudioFrame | None], None]) -> None:
        """Call ``callback(frame)`` for every frame from now on (queued ones first), and
        ``callback(None)`` once at the end; :meth:`get` is not used alongside."""
        self._listener = callback
        while self._frames:
            callback(self._frames.popleft())
        if self.ended:
            self._listener = None
            callback(None)

    def push(self, frame: AudioFrame) -> None:
        if self.ended:
            return
        listener = self._listener
        if listener is not None:
            try:
                listener(frame)
            except Exception:  # one reader's bug must not starve the call's others
                _log.failure("audio listener {listener} failed", listener=listener)
            return
        if self._waiters:
            self._waiters.popleft().callback(frame)
            return
        if len(self._frames) == self._frames.maxlen:
            self.overflow += 1
        self._frames.append(frame)

    def end(self) -> None:
        """No more frames will come: waiters (now and later) get None."""
        self.ended = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener(None)
        while self._waiters:
            self._waiters.popleft().callback(None)

    def get(self) -> defer.Deferred[AudioFrame | None]:
        """The next frame, or None once the call has ended and the queue is empty."""
        if self._frames:
            return defer.succeed(self._frames.popleft())
        if self.ended:
            return defer.succeed(None)
        d: defer.Deferred[AudioFrame | None] = defer.Deferred(
            lambda d: self._waiters.remove(d) if d in self._waiters else None
        )
        self._waiters.append(d)
        return d

    def try_get(self) -> AudioFrame | None:
        """The next frame if one is queued, else None (never waits)."""
        return self._frames.popleft() if self._frames else None

    def __len__(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        """Stop receiving (an unsubscribe)."""
        self._frames.clear()
        self.end()


class DigitQueue:
    """Received DTMF digits, in order, for ``recv_dtmf``."""

    def __init__(self) -> None:
        self._digits: deque[str] = deque(maxlen=256)
        self._waiters: deque[defer.Deferred[str | None]] = deque()
        self.ended = False

    def push(self, digit: str) -> None:
        while self._waiters:
            d = self._waiters.popleft()
            if not d.called:
                d.callback(digit)
                return
        self._digits.append(digit)

    def end(self) -> None:
        self.ended = True
        while self._waiters:
            self._waiters.popleft().callback(None)

    def get(self) -> defer.Deferred[str | None]:
        if self._digits:
            return defer.succeed(self._digits.popleft())
        if self.ended:
            return defer.succeed(None)
        d: defer.Deferred[str | None] = defer.Deferred(
            lambda d: self._waiters.remove(d) if d in self._waiters else None
        )
        self._waiters.append(d)
        return d

    def try_get(self) -> str | None:
        return self._digits.popleft() if self._digits else None


class WavRecorder:
    """Writes received frames to a WAV file, filling RTP timestamp gaps with silence.

    Filling gaps (lost packets, a peer that pauses instead of sending silence)
    keeps the recording's duration equal to the time the call lasted.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> None:
        self.path = os.fspath(path)
        self.sample_rate = sample_rate
        #: The RTP clock rate of the frames' timestamps (the codec's: 8000 for G.711
        #: and G.722, 48000 for Opus), set by the media session that feeds us.
        self.clock_rate = sample_rate
        self._writer = WavWriter(self.path, sample_rate)
        self._next_ts: int | None = None
        self.samples = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def write(self, frame: AudioFrame) -> None:
        if self._writer.closed:
            return
        n = len(frame.samples)
        if frame.timestamp is not None:
            if self._next_ts is not None:
                gap = ts_diff(frame.timestamp, self._next_ts)
                if gap > 0 and self.clock_rate != self.sample_rate:
                    gap = gap * self.sample_rate // self.clock_rate
                if 0 < gap <= _MAX_GAP_SECONDS * self.sample_rate:
                    self._writer.write(np.zeros(gap, dtype=np.int16))
                    self.samples += gap
                elif gap < 0:
                    return  # a frame from the past (restart overlap): drop it
            units = n
            if self.clock_rate != self.sample_rate:
                units = n * self.clock_rate // self.sample_rate
            self._next_ts = (frame.timestamp + units) & 0xFFFFFFFF
        self._writer.write(frame.samples)
        self.samples += n

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    def close(self) -> None:
        """Finalise the file; ``done`` fires."""
        if not self._writer.closed:
            self._writer.close()
        if not self.done.called:
            self.done.callback(None)
