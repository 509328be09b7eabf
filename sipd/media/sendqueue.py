"""The audio one call waits to send: frames of any length in, one 20 ms slot out per tick.

Why its own object: the application hands :class:`~sipd.media.stream.MediaStream`
frames of whatever length and rate it has, while the media clock takes exactly
one packet's worth of samples per 20 ms slot. Cutting and joining frames, and
knowing which application Deferreds a slot has finished, is bookkeeping apart
from RTP; kept here it is tested on its own and the stream keeps to RTP rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from twisted.internet import defer

from sipd.media.frame import AudioFrame
from sipd.media.resample import StreamResampler, resample_once

__all__ = ["SendQueue"]


class SendQueue:
    """Frames queued by the application, taken a 20 ms slot at a time.

    Each queued frame has a Deferred that fires once its last sample is sent:
    :meth:`take` returns a slot's samples and leaves in :attr:`sent` the
    Deferreds of the frames that slot finished, for the stream to fire after
    the packet is on the wire.
    """

    __slots__ = ("_frames", "_offset", "_resamplers", "frame_samples", "sample_rate", "sent")

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        #: Samples per slot (20 ms at :attr:`sample_rate`).
        self.frame_samples = sample_rate // 50
        self._frames: deque[tuple[NDArray[np.int16], defer.Deferred[None] | None]] = deque()
        self._offset = 0
        self._resamplers: dict[int, StreamResampler] = {}
        #: The Deferreds of the frames the last :meth:`take` finished (fire, then clear).
        self.sent: Sequence[defer.Deferred[None]] = ()

    def push(self, frame: AudioFrame) -> defer.Deferred[None]:
        """Queue a frame (resampled to :attr:`sample_rate`); its Deferred fires once sent."""
        samples = frame.samples
        if frame.sample_rate != self.sample_rate:
            samples = self._convert(samples, frame.sample_rate)
        d: defer.Deferred[None] = defer.Deferred()
        if len(samples) == 0:
            d.callback(None)
            return d
        self._frames.append((samples, d))
        return d

    def _convert(self, samples: NDArray[np.int16], rate: int) -> NDArray[np.int16]:
        """A frame at another rate: a streaming resampler per source rate keeps a run of
        them seamless; a length that does not convert to whole samples goes alone."""
        resamplers = self._resamplers
        if (len(samples) * self.sample_rate) % rate == 0:
            resampler = resamplers.get(rate)
            if resampler is None:
                resampler = resamplers[rate] = StreamResampler(rate, self.sample_rate)
            return resampler(samples)
        out = resample_once(samples, rate, self.sample_rate)
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    @property
    def queued_samples(self) -> int:
        """Samples waiting to be sent."""
        return sum(len(s) for s, _ in self._frames) - self._offset

    def take(self) -> NDArray[np.int16] | None:
        """One slot of samples (the tail padded with silence), None when nothing is queued.

        Sets :attr:`sent` to the Deferreds of the frames this slot finished.
        """
        frames = self._frames
        if not frames:
            self.sent = ()
            return None
        size = self.frame_samples
        head, head_d = frames[0]
        if self._offset == 0 and len(head) == size:
            # The common case: one whole 20 ms frame, no copy.
            frames.popleft()
            self.sent = () if head_d is None else (head_d,)
            return head
        out = np.empty(size, dtype=np.int16)
        filled = 0
        done: list[defer.Deferred[None]] = []
        while filled < size and frames:
            samples, d = frames[0]
            take = min(size - filled, len(samples) - self._offset)
            out[filled : filled + take] = samples[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset >= len(samples):
                frames.popleft()
                self._offset = 0
                if d is not None:
                    done.append(d)
        if filled < size:
            out[filled:] = 0
        self.sent = done
        return out

    def fire_sent(self) -> None:
        """Tell the application the frames of the last slot are on the wire."""
        sent = self.sent
        if sent:
            self.sent = ()
            for d in sent:
                d.callback(None)

    def fail(self, error: Exception) -> None:
        """Fail every frame not sent (those of a slot taken but not sent too)."""
        sent, self.sent = self.sent, ()
        pending = [d for d in sent] + [d for _, d in self._frames if d is not None]
        self._frames.clear()
        self._offset = 0
        for d in pending:
            if not d.called:
                d.errback(error)
