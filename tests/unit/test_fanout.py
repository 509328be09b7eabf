"""Received audio fan-out: bounded subscriptions, the digit queue, WAV recording.

Recordings are read back with the standard library's ``wave`` module, an
oracle independent of sipd's own WAV code.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from twisted.internet import task

from sipd.config import SipdConfig
from sipd.media.fanout import AudioSubscription, DigitQueue, WavRecorder
from sipd.media.frame import AudioFrame
from sipd.media.rtp import RtpPacket
from sipd.session.media_adapter import MediaAdapter, MediaSession


def frame(value: int, *, ts: int | None = None, seq: int | None = None, n: int = 160) -> AudioFrame:
    return AudioFrame(np.full(n, value, dtype=np.int16), 8000, ts, seq)


def read_back(path: Path) -> NDArray[np.int16]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


# -- AudioSubscription ------------------------------------------------------------------------
def test_subscription_hands_out_frames_in_order_then_none_after_the_end() -> None:
    """Queued frames come out first-in first-out; after end() and once empty, None."""
    sub = AudioSubscription()
    for i in range(3):
        sub.push(frame(i, seq=i))
    sub.end()
    got = [sub.get() for _ in range(5)]
    assert all(d.called for d in got)
    results: list[AudioFrame | None] = [d.result for d in got]
    assert [f.sequence if f is not None else None for f in results] == [0, 1, 2, None, None]
    sub.push(frame(9))  # after the end nothing is queued
    assert sub.try_get() is None


def test_waiting_get_receives_the_next_pushed_frame() -> None:
    """A get() made before a frame arrives fires with that frame."""
    sub = AudioSubscription()
    d = sub.get()
    assert not d.called
    f = frame(5, seq=1)
    sub.push(f)
    assert d.called and d.result is f
    assert len(sub) == 0


def test_end_answers_every_waiting_get_with_none() -> None:
    """Readers blocked on get() learn of the call's end."""
    sub = AudioSubscription()
    waiters = [sub.get(), sub.get()]
    sub.end()
    assert [d.result for d in waiters] == [None, None]


def test_subscription_is_bounded_and_counts_overflow() -> None:
    """A reader that never reads keeps the newest maxlen frames; the rest are counted."""
    sub = AudioSubscription(maxlen=4)
    for i in range(10):
        sub.push(frame(i, seq=i))
    assert len(sub) == 4
    assert sub.overflow == 6
    seqs = []
    while (f := sub.try_get()) is not None:
        seqs.append(f.sequence)
    assert seqs == [6, 7, 8, 9]


def test_cancelled_get_does_not_swallow_a_frame() -> None:
    """A reader that gives up (cancel, timeout) leaves the next frame for the queue."""
    sub = AudioSubscription()
    d = sub.get()
    d.cancel()
    d.addErrback(lambda _: None)
    f = frame(3, seq=3)
    sub.push(f)
    assert sub.try_get() is f


def test_close_unsubscribes_and_drops_queued_frames() -> None:
    """close() empties the queue and ends it."""
    sub = AudioSubscription()
    sub.push(frame(1))
    sub.close()
    assert sub.try_get() is None
    assert sub.get().result is None


# -- DigitQueue -------------------------------------------------------------------------------
def test_digit_queue_keeps_order_and_ends_with_none() -> None:
    """Digits come out in the order received; waiters get the next one; end gives None."""
    q = DigitQueue()
    early = q.get()
    for digit in "123#":
        q.push(digit)
    assert early.result == "1"
    assert [q.try_get(), q.get().result, q.try_get()] == ["2", "3", "#"]
    assert q.try_get() is None
    waiting = q.get()
    q.end()
    assert waiting.result is None
    assert q.get().result is None


def test_cancelled_digit_wait_leaves_the_digit_queued() -> None:
    """A cancelled recv_dtmf does not eat the next digit."""
    q = DigitQueue()
    d = q.get()
    d.cancel()
    d.addErrback(lambda _: None)
    q.push("5")
    assert q.try_get() == "5"


# -- WavRecorder ------------------------------------------------------------------------------
def test_recorder_writes_contiguous_frames_as_they_are(tmp_path: Path) -> None:
    """Frames with consecutive timestamps are written back to back; done fires on close."""
    path = tmp_path / "rec.wav"
    rec = WavRecorder(path)
    frames = [frame(100 * (i + 1), ts=1000 + 160 * i) for i in range(3)]
    for f in frames:
        rec.write(f)
    assert not rec.done.called
    rec.close()
    assert rec.done.called
    assert np.array_equal(read_back(path), np.concatenate([f.samples for f in frames]))
    assert rec.duration == 3 * 0.02


def test_recorder_fills_timestamp_gaps_with_silence(tmp_path: Path) -> None:
    """Two lost packets (320 samples) become 40 ms of silence, keeping the timeline."""
    path = tmp_path / "gap.wav"
    rec = WavRecorder(path)
    rec.write(frame(500, ts=0))
    rec.write(frame(600, ts=160 * 3))
    rec.close()
    expected = np.concatenate([np.full(160, 500), np.zeros(320), np.full(160, 600)]).astype(
        np.int16
    )
    assert np.array_equal(read_back(path), expected)


def test_recorder_fills_gaps_across_the_timestamp_wrap(tmp_path: Path) -> None:
    """A gap spanning 2**32 -> 0 is measured modulo 2**32."""
    path = tmp_path / "wrap.wav"
    rec = WavRecorder(path)
    rec.write(frame(1, ts=2**32 - 160))
    rec.write(frame(2, ts=160))  # slot 0 (one packet) is missing
    rec.close()
    samples = read_back(path)
    assert len(samples) == 3 * 160
    assert np.array_equal(samples[160:320], np.zeros(160, dtype=np.int16))


def test_recorder_does_not_fill_huge_jumps_and_drops_frames_from_the_past(
    tmp_path: Path,
) -> None:
    """A jump of minutes (a new stream) is not padded; an overlapping old frame is dropped."""
    path = tmp_path / "jump.wav"
    rec = WavRecorder(path)
    rec.write(frame(1, ts=0))
    rec.write(frame(2, ts=8000 * 60))  # one minute later: no minute of silence
    rec.write(frame(3, ts=8000 * 60 - 160))  # from before the previous frame
    rec.write(frame(4, ts=8000 * 60 + 160))
    rec.close()
    expected = np.concatenate([np.full(160, v) for v in (1, 2, 4)]).astype(np.int16)
    assert np.array_equal(read_back(path), expected)


def test_recorder_appends_frames_without_timestamps(tmp_path: Path) -> None:
    """Frames that carry no RTP timestamp are simply appended."""
    path = tmp_path / "plain.wav"
    rec = WavRecorder(path)
    rec.write(frame(7, n=80))
    rec.write(frame(8, n=80))
    rec.close()
    assert np.array_equal(read_back(path), np.repeat([7, 8], 80).astype(np.int16))


def test_recorder_ignores_writes_after_close_and_closes_once(tmp_path: Path) -> None:
    """After close the file is final; closing again changes nothing."""
    path = tmp_path / "closed.wav"
    rec = WavRecorder(path)
    rec.write(frame(1, ts=0))
    rec.close()
    rec.write(frame(2, ts=160))
    rec.close()
    assert len(read_back(path)) == 160


def test_empty_recording_is_a_valid_wav_file(tmp_path: Path) -> None:
    """A call that received nothing still leaves a readable, empty WAV file."""
    path = tmp_path / "empty.wav"
    rec = WavRecorder(path)
    rec.close()
    assert len(read_back(path)) == 0


# -- MediaSession fan-out -----------------------------------------------------------------------
def test_call_queue_overflow_is_reported_in_the_call_stats(tmp_path: Path) -> None:
    """Frames the call's own recv_audio queue had to drop show in stats().recv_queue_overflow;
    every subscriber and recorder still gets each frame."""
    adapter = MediaAdapter(SipdConfig(jitter_depth=1), task.Clock())
    media = MediaSession(adapter, "m1", 20000)  # not bound: fed by hand below
    sub = media.subscribe()
    read_by_sub = 0
    recording = media.record(tmp_path / "r.wav")
    for seq in range(503):  # nobody reads: the call's queue holds 500
        packet = RtpPacket(
            payload_type=0, sequence=seq, timestamp=160 * seq, ssrc=1, payload=bytes([0xFF]) * 160
        )
        media.stream.rtp_received(bytes(packet), ("192.0.2.1", 4000))
        if sub.try_get() is not None:  # this reader keeps up
            read_by_sub += 1
    assert media.stats().recv_queue_overflow == 3
    assert len(media.queue) == 500 and sub.overflow == 0 and read_by_sub == 503
    media.stop()
    assert recording.called and len(read_back(tmp_path / "r.wav")) == 503 * 160
    assert sub.get().result is None


def test_a_listener_gets_queued_frames_then_each_new_one_then_none() -> None:
    """listen(): no Deferred per frame; what was queued comes first, the end as None."""
    sub = AudioSubscription()
    sub.push(frame(1, seq=1))
    got: list[AudioFrame | None] = []
    sub.listen(got.append)
    sub.push(frame(2, seq=2))
    assert [f.sequence for f in got if f is not None] == [1, 2] and len(sub) == 0
    sub.end()
    assert got[-1] is None and len(got) == 3
    sub.push(frame(3, seq=3))
    assert len(got) == 3


def test_a_failing_listener_does_not_break_the_push() -> None:
    sub = AudioSubscription()

    def broken(f: AudioFrame | None) -> None:
        raise ValueError("bug")

    sub.listen(broken)
    sub.push(frame(1))  # logged, not raised into the media path
    assert len(sub) == 0
