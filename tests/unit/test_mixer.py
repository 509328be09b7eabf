"""The conference mixer: mix-minus sums, the soft limiter, and the 20 ms clock.

Oracles: sums are checked against numpy int64 arithmetic done here, tones
against an FFT of what each participant was sent, and the clock with
``twisted.internet.task.Clock``. The participants are small stand-ins for a
call that hold a real :class:`AudioSubscription` and keep what they are sent.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.typing import NDArray
from twisted.internet import defer, task

from sipd.errors import SipdValueError
from sipd.media.fanout import AudioSubscription
from sipd.media.frame import FRAME_SAMPLES, AudioFrame
from sipd.media.mixer import Conference, Limiter, mix_minus
from sipd.media.tones import ToneGenerator, dominant_frequency, tone


class Member:
    """A stand-in call: frames pushed into ``speak`` reach the conference."""

    def __init__(self) -> None:
        self.subs: list[AudioSubscription] = []
        self.sent: list[AudioFrame] = []
        self.is_ended = False
        self._end: defer.Deferred[None] = defer.Deferred()

    def subscribe_to_audio(self) -> AudioSubscription:
        sub = AudioSubscription()
        self.subs.append(sub)
        return sub

    def speak(self, frame: AudioFrame) -> None:
        for sub in self.subs:
            sub.push(frame)

    def send_audio(self, frame: AudioFrame) -> defer.Deferred[None]:
        self.sent.append(frame)
        return defer.succeed(None)

    def wait_for_end(self) -> defer.Deferred[None]:
        return self._end

    def end(self) -> None:
        self.is_ended = True
        for sub in self.subs:
            sub.end()
        self._end.callback(None)

    def heard(self) -> NDArray[np.int16]:
        return np.concatenate([f.samples for f in self.sent])


def _frame(value: int) -> NDArray[np.int16]:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


def test_each_output_is_the_sum_of_the_others() -> None:
    """Mix-minus: participant i gets the sum of every input except its own."""
    rng = np.random.default_rng(7)
    inputs = [rng.integers(-3000, 3000, FRAME_SAMPLES).astype(np.int16) for _ in range(4)]
    outputs = mix_minus(list(inputs))
    for i, out in enumerate(outputs):
        expected = sum(x.astype(np.int64) for j, x in enumerate(inputs) if j != i)
        assert out is not None
        assert out.dtype == np.int16
        np.testing.assert_array_equal(out, expected)


def test_silent_participants_count_as_nothing_and_a_lone_speaker_hears_nothing() -> None:
    """None inputs add nothing; an output with nobody else speaking is None."""
    a = _frame(1000)
    outputs = mix_minus([a, None, None])
    assert outputs[0] is None
    np.testing.assert_array_equal(outputs[1], a)
    np.testing.assert_array_equal(outputs[2], a)
    assert mix_minus([None, None]) == [None, None]


def test_short_and_long_frames_are_fitted_to_one_slot() -> None:
    """A short frame is padded with silence, a long one cut, to 160 samples."""
    short = np.full(100, 10, dtype=np.int16)
    long = np.full(200, 20, dtype=np.int16)
    out = mix_minus([short, long, None])[2]
    assert out is not None and len(out) == FRAME_SAMPLES
    assert out[0] == 30 and out[99] == 30 and out[100] == 20 and out[-1] == 20


def test_loud_sums_are_scaled_to_fit_without_wrapping_or_flat_tops() -> None:
    """Three in-phase loud tones: the mix keeps its sign and shape, peaking at full scale."""
    loud = tone(400, FRAME_SAMPLES / 8000, amplitude=0.9)
    out = mix_minus([loud, loud, loud, None])[3]
    assert out is not None
    total = 3 * loud.astype(np.int64)
    # No wrap-around: every sample has the sign of the true sum.
    assert np.all(np.sign(out) == np.sign(total))
    # Scaled, not clipped: the waveform is the true sum times one gain.
    gain = 32767 / np.max(np.abs(total))
    np.testing.assert_allclose(out, total * gain, atol=1.0)
    assert np.max(np.abs(out)) == 32767
    # Only the true peaks reach full scale; bare clipping would flatten many more.
    peaks = np.count_nonzero(np.abs(total) == np.max(np.abs(total)))
    assert np.count_nonzero(np.abs(out) == 32767) == peaks
    assert np.count_nonzero(np.abs(np.clip(total, -32767, 32767)) == 32767) > 3 * peaks


def test_the_limiter_attacks_at_once_and_releases_slowly() -> None:
    """After an overload the gain stays below 1 and climbs back over several frames."""
    limiter = Limiter(release=0.25)
    limiter.process(np.full(FRAME_SAMPLES, 65534, dtype=np.int32))
    assert limiter.gain == pytest.approx(0.5)
    gains = []
    for _ in range(6):
        out = limiter.process(np.full(FRAME_SAMPLES, 1000, dtype=np.int32))
        gains.append(limiter.gain)
        assert int(out[0]) == round(1000 * limiter.gain)
    assert all(a < b for a, b in itertools.pairwise(gains))
    assert 0.5 < gains[0] < 1.0 and gains[-1] < 1.0
    with pytest.raises(SipdValueError):
        Limiter(release=0)


def test_conference_on_its_clock_lets_each_hear_the_others_not_themselves() -> None:
    """Three tones in, one 20 ms clock: each member receives the other two tones only."""
    clock = task.Clock()
    conf = Conference(clock=clock)
    freqs = [300.0, 1000.0, 2200.0]
    members = [Member() for _ in freqs]
    gens = [ToneGenerator(f, amplitude=0.2) for f in freqs]
    for m in members:
        conf.add(m)
    assert len(conf) == 3
    for _ in range(50):
        for m, g in zip(members, gens, strict=True):
            m.speak(g.next_frame())
        clock.advance(0.02)
    assert conf.slots == 50
    for i, m in enumerate(members):
        heard = m.heard().astype(np.float64)
        assert len(heard) == 50 * FRAME_SAMPLES
        spectrum = np.abs(np.fft.rfft(heard))
        bins = np.fft.rfftfreq(len(heard), 1 / 8000)
        level = {f: float(spectrum[np.argmin(np.abs(bins - f))]) for f in freqs}

        others = [f for j, f in enumerate(freqs) if j != i]
        own = freqs[i]
        for f in others:
            assert level[f] > 100 * level[own], (i, f, own)
    conf.close()
    assert clock.getDelayedCalls() == []
    assert conf.done.called


def test_a_backlog_is_trimmed_so_latency_stays_bounded() -> None:
    """Frames piled up beyond max_backlog are dropped, oldest first."""
    clock = task.Clock()
    conf = Conference(clock=clock, max_backlog=2)
    a, b = Member(), Member()
    conf.add(a)
    conf.add(b)
    for value in range(1, 11):
        a.speak(AudioFrame(_frame(value)))
    clock.advance(0.02)
    # Ten frames waited; the eight oldest went, the ninth is mixed now.
    assert [int(f.samples[0]) for f in b.sent] == [9]
    clock.advance(0.02)
    assert [int(f.samples[0]) for f in b.sent] == [9, 10]
    conf.close()


def test_an_ended_call_leaves_and_the_clock_stops_with_the_last() -> None:
    """A call that ends is removed by itself; with nobody left no timer remains."""
    clock = task.Clock()
    conf = Conference(clock=clock)
    a, b = Member(), Member()
    conf.add(a)
    conf.add(b)
    conf.add(a)  # already in: no second seat
    assert len(conf) == 2
    a.end()
    assert conf.participants == [b]
    b.speak(AudioFrame(_frame(5)))
    clock.advance(0.02)
    assert a.sent == []  # ended, and alone b hears nothing
    conf.remove(b)
    assert len(conf) == 0 and clock.getDelayedCalls() == []
    assert b.subs[0].ended  # its subscription was closed
    with pytest.raises(SipdValueError):
        conf.add(a)  # an ended call cannot join
    conf.close()
    with pytest.raises(SipdValueError):
        conf.add(Member())


def test_dominant_frequency_of_a_two_party_mix_is_the_other_party() -> None:
    """With two members the mix is a plain exchange: each hears the other's tone."""
    clock = task.Clock()
    conf = Conference(clock=clock)
    a, b = Member(), Member()
    conf.add(a)
    conf.add(b)
    ga, gb = ToneGenerator(440), ToneGenerator(880)
    for _ in range(25):
        a.speak(ga.next_frame())
        b.speak(gb.next_frame())
        clock.advance(0.02)
    assert dominant_frequency(a.heard()) == pytest.approx(880, abs=5)
    assert dominant_frequency(b.heard()) == pytest.approx(440, abs=5)
    conf.close()
