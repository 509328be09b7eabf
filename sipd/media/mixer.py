"""A conference: N calls, each hearing everyone but themselves.

Design: the mixer runs on its own 20 ms clock (a ``LoopingCall`` on an
injected ``IReactorTime``), not on frame arrival. Frames arrive from N
independent RTP streams whose packets never line up; a fixed clock takes at
most one frame per participant per slot, so one talker's burst cannot speed
the conference up and a silent participant cannot stall it. Each slot:

1. take the oldest waiting frame of every participant (a participant whose
   backlog grew beyond ``max_backlog`` frames — clock drift, a burst after a
   network hiccup — has the excess dropped, oldest first, to keep latency low);
2. add every frame into one int32 total (32 int16 inputs cannot overflow it);
3. for each participant, subtract its own frame ("mix-minus"), so nobody
   hears themselves, and pass the result through a :class:`Limiter`;
4. queue the result on that call (skipped when that call's send queue is
   already ``max_backlog`` frames deep, so the two clocks cannot drift apart).

The pure part (steps 2-3) is :func:`mix_minus`, testable without a reactor.

Clipping protection is a soft limiter, not wrap-around and not bare
clipping: when a slot's peak would exceed full scale, the gain drops at once
to the value that fits it (no sample is ever clipped, the waveform keeps its
shape), then recovers slowly over the following slots so the level does not
pump from one 20 ms frame to the next.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from sipd.errors import SipdValueError
from sipd.logs import Logger
from sipd.media.fanout import AudioSubscription
from sipd.media.frame import FRAME_SAMPLES, AudioFrame
from sipd.media.resample import StreamResampler

__all__ = ["Conference", "ConferenceMember", "Limiter", "mix_minus"]

_log = Logger()
#: The largest magnitude an int16 sample may have (symmetric, so -32768 is never produced).
FULL_SCALE = 32767


class ConferenceMember(Protocol):
    """What the conference needs from a call (``UnifiedSession`` has all of it)."""

    @property
    def is_ended(self) -> bool: ...

    def subscribe_to_audio(self) -> AudioSubscription: ...

    def send_audio(self, frame: AudioFrame) -> defer.Deferred[None]: ...

    def wait_for_end(self) -> defer.Deferred[None]: ...


class Limiter:
    """A peak limiter with instant attack and slow release, for one output.

    ``release`` is how much of the distance back to unity gain is recovered
    per frame (0.05: about 1 s to recover from a loud burst at 20 ms frames).
    """

    def __init__(self, release: float = 0.05) -> None:
        if not 0.0 < release <= 1.0:
            raise SipdValueError(f"limiter release must be within (0, 1], got {release}")
        self.release = release
        self.gain = 1.0

    def process(self, total: NDArray[np.int32]) -> NDArray[np.int16]:
        """Scale ``total`` so it fits int16; returns the limited samples."""
        peak = int(np.max(np.abs(total))) if total.size else 0
        fit = FULL_SCALE / peak if peak > FULL_SCALE else 1.0
        if fit < self.gain:
            self.gain = fit  # attack: at once, so this frame fits
        else:
            self.gain = min(fit, self.gain + (1.0 - self.gain) * self.release)
        if self.gain >= 1.0:
            return total.astype(np.int16)
        scaled = np.rint(total * self.gain)
        # rint can round a peak just past full scale; the clip only catches that.
        out: NDArray[np.int16] = np.clip(scaled, -FULL_SCALE, FULL_SCALE).astype(np.int16)
        return out


def _fit(samples: NDArray[np.int16], n: int) -> NDArray[np.int16]:
    if len(samples) == n:
        return samples
    if len(samples) > n:
        return samples[:n]
    return np.concatenate([samples, np.zeros(n - len(samples), dtype=np.int16)])


def mix_minus(
    inputs: list[NDArray[np.int16] | None],
    limiters: list[Limiter] | None = None,
    n: int = FRAME_SAMPLES,
) -> list[NDArray[np.int16] | None]:
    """For each input, the sum of all *other* inputs, limited to int16.

    ``None`` is a participant with no frame this slot (silent). The output for
    a participant is ``None`` when nobody else had a frame, so the caller can
    let that call's own idle policy (silence or nothing) apply. ``limiters``
    carries each output's gain from one slot to the next (fresh ones if None).
    """
    if limiters is None:
        limiters = [Limiter() for _ in inputs]
    if len(limiters) != len(inputs):
        raise SipdValueError(f"{len(inputs)} inputs but {len(limiters)} limiters")
    frames = [None if x is None else _fit(x, n).astype(np.int32) for x in inputs]
    present = [f for f in frames if f is not None]
    if not present:
        return [None] * len(inputs)
    total: NDArray[np.int32] = np.sum(present, axis=0, dtype=np.int32)
    outputs: list[NDArray[np.int16] | None] = []
    for own, limiter in zip(frames, limiters, strict=True):
        others = len(present) - (own is not None)
        if others == 0:
            outputs.append(None)
            continue
        mixed = total - own if own is not None else total
        outputs.append(limiter.process(mixed))
    return outputs


class _Seat:
    __slots__ = ("limiter", "member", "resampler", "source", "subscription")

    def __init__(self, source: object, member: ConferenceMember) -> None:
        self.source = source
        self.member = member
        self.subscription = member.subscribe_to_audio()
        self.limiter = Limiter()
        self.resampler: StreamResampler | None = None


def _member(call: object) -> ConferenceMember:
    """The session behind a ``Call`` (or the object itself if it is one)."""
    member: Any = getattr(call, "session", call)
    return member  # type: ignore[no-any-return]


class Conference:
    """Mixes the audio of any number of calls; see the module docstring.

    ``add(call)`` and ``remove(call)`` take a ``Call`` or a ``UnifiedSession``.
    A call that ends leaves the conference by itself. ``close()`` removes
    everyone (calls stay up) and stops the clock; ``done`` then fires.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime | None = None,
        ptime: float = 0.02,
        max_backlog: int = 3,
        sample_rate: int = 8000,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        if max_backlog < 1:
            raise SipdValueError(f"max_backlog must be at least 1 frame, got {max_backlog}")
        self._clock = clock
        self.ptime = ptime
        self.max_backlog = max_backlog
        #: The rate the conference mixes at; members' frames at other rates (peers
        #: created with another ``sample_rate``) are resampled to it.
        self.sample_rate = sample_rate
        self._seats: list[_Seat] = []
        self._loop: task.LoopingCall | None = None
        self.closed = False
        #: Slots mixed so far.
        self.slots = 0
        #: Fires (with None) when the conference is closed.
        self.done: defer.Deferred[None] = defer.Deferred()

    def __repr__(self) -> str:
        return f"<Conference {len(self._seats)} participant(s)>"

    def __len__(self) -> int:
        return len(self._seats)

    @property
    def participants(self) -> list[object]:
        """The calls in the conference, as they were added."""
        return [seat.source for seat in self._seats]

    def _find(self, call: object) -> _Seat | None:
        member = _member(call)
        return next((s for s in self._seats if s.member is member), None)

    def add(self, call: object) -> None:
        """Let ``call`` hear and be heard by everyone else in the conference."""
        if self.closed:
            raise SipdValueError("this conference is closed; create a new one")
        member = _member(call)
        if self._find(member) is not None:
            return
        if member.is_ended:
            raise SipdValueError(f"cannot add {call!r} to a conference: the call has ended")
        self._seats.append(_Seat(call, member))
        member.wait_for_end().addCallback(lambda _: self.remove(member))
        if self._loop is None:
            loop = task.LoopingCall(self._tick)
            loop.clock = self._clock
            self._loop = loop
            loop.start(self.ptime, now=False).addErrback(
                lambda f: _log.failure("conference mixer stopped", f)
            )

    def remove(self, call: object) -> None:
        """Take ``call`` out (it stays up); the clock stops with the last one."""
        seat = self._find(call)
        if seat is None:
            return
        self._seats.remove(seat)
        seat.subscription.close()
        if not self._seats:
            self._stop_loop()

    def close(self) -> None:
        """Remove every participant and stop mixing."""
        if self.closed:
            return
        self.closed = True
        for seat in list(self._seats):
            self.remove(seat.member)
        self._stop_loop()
        if not self.done.called:
            self.done.callback(None)

    def _stop_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _take(self, seat: _Seat) -> NDArray[np.int16] | None:
        sub = seat.subscription
        while len(sub) > self.max_backlog:
            sub.try_get()  # drop the oldest: latency over completeness
        frame = sub.try_get()
        if frame is None:
            return None
        if frame.sample_rate != self.sample_rate:
            resampler = seat.resampler
            if resampler is None or resampler.in_rate != frame.sample_rate:
                resampler = seat.resampler = StreamResampler(frame.sample_rate, self.sample_rate)
            return resampler(frame.samples)
        return frame.samples

    def _tick(self) -> None:
        self.slots += 1
        seats = list(self._seats)
        inputs = [self._take(seat) for seat in seats]
        n = self.sample_rate // 50
        outputs = mix_minus(inputs, [seat.limiter for seat in seats], n)
        for seat, out in zip(seats, outputs, strict=True):
            if out is None or seat.member.is_ended:
                continue
            media = getattr(seat.member, "media", None)
            stream = getattr(media, "stream", None)
            backlog = getattr(stream, "queued_samples", 0)
            if backlog >= getattr(stream, "sample_rate", 8000) // 50 * self.max_backlog:
                continue
            frame = AudioFrame.trusted(out, self.sample_rate)
            seat.member.send_audio(frame).addErrback(lambda f: None)
