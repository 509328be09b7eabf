"""One media-clock slot for many calls: G.711 frames encoded together, same wire bytes.

The reference is the per-stream path (:meth:`MediaStream.tick`, each frame
encoded alone); the batched path (:func:`tick_streams`, :class:`MediaClock`)
must put the same bytes on the wire with the same sequence numbers and
timestamps, for PCMU and PCMA, beside streams that keep their own path
(G.722, Opus, resampled G.711), with SRTP, DTMF, silence, pauses and holds.
Time is a ``task.Clock``; datagrams go to lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure

from sipd.errors import CallStateError
from sipd.media import g711
from sipd.media.batch import tick_streams
from sipd.media.codecs import CodecPath, codec_by_name
from sipd.media.frame import AudioFrame
from sipd.media.protocol import MediaClock
from sipd.media.rtcp import SenderReport, parse_compound
from sipd.media.rtp import RtpPacket
from sipd.media.sendqueue import SendQueue
from sipd.media.srtp import SrtpContext
from sipd.media.stream import Addr, MediaStream
from sipd.sdp.crypto import SrtpKeys, SrtpSuite

REMOTE = ("192.0.2.7", 40000)
RNG = np.random.default_rng(20260313)


@dataclass
class Wire:
    rtp: list[bytes] = field(default_factory=list)
    rtcp: list[bytes] = field(default_factory=list)

    def send_rtp(self, data: bytes, addr: Addr) -> None:
        self.rtp.append(data)

    def send_rtcp(self, data: bytes, addr: Addr) -> None:
        self.rtcp.append(data)


def random_frames(n: int, size: int = 160) -> list[np.ndarray]:
    return [RNG.integers(-32768, 32768, size, dtype=np.int16) for _ in range(n)]


# -- the encoder ---------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_batched_encode_equals_encoding_each_frame_alone(codec: str) -> None:
    """Random frames, extremes included: one lookup for all gives every frame's own codes."""
    frames = random_frames(40)
    frames.append(np.array([-32768, 32767, 0, -1, 1] * 32, dtype=np.int16))
    codes = g711.encode_frames(codec, frames)
    path = CodecPath(codec_by_name(codec), 8000)  # the per-stream encoder
    alone = g711.ulaw_encode if codec == "PCMU" else g711.alaw_encode
    assert len(codes) == 160 * len(frames)
    for i, frame in enumerate(frames):
        payload = codes[160 * i : 160 * (i + 1)]
        assert payload == path.encode(frame) == alone(frame).tobytes()


def test_batched_encode_of_one_frame_and_of_none() -> None:
    (frame,) = random_frames(1)
    assert g711.encode_frames("pcmu", [frame]) == g711.encode("PCMU", frame)
    assert g711.encode_frames("PCMA", []) == b""


# -- the clock slot ---------------------------------------------------------------------------
def make(codec: str, wire: Wire, clock: task.Clock, **kwargs: object) -> MediaStream:
    spec = codec_by_name(codec)
    return MediaStream(
        codec=codec,
        payload_type=spec.payload_type,
        remote=REMOTE,
        send_rtp=wire.send_rtp,
        send_rtcp=wire.send_rtcp,
        now=clock.seconds,
        dtmf_payload_type=101,
        **kwargs,  # type: ignore[arg-type]
    )


def twin(stream: MediaStream, wire: Wire, clock: task.Clock, codec: str) -> MediaStream:
    """A second stream in the same RTP state (SSRC, sequence, timestamp)."""
    other = make(codec, wire, clock, sample_rate=stream.sample_rate)
    other.silence_when_idle = stream.silence_when_idle
    for name in ("ssrc", "sequence", "timestamp"):
        setattr(other.sender, name, getattr(stream.sender, name))
    return other


def test_batched_slots_send_the_bytes_ticking_each_stream_alone_sends() -> None:
    """PCMU and PCMA streams (audio, silence, pauses, DTMF, hold, SRTP) beside G.722,
    Opus and 16 kHz PCMU: every stream's datagrams equal its twin's, ticked alone."""
    clock = task.Clock()
    setups: list[tuple[str, dict[str, object]]] = [
        ("PCMU", {}),
        ("PCMA", {}),
        ("PCMU", {}),
        ("PCMA", {}),
        ("G722", {}),
        ("opus", {}),
        ("PCMU", {"sample_rate": 16000}),  # resampled: keeps its own path
        ("PCMU", {"silence_when_idle": False}),
        ("PCMA", {}),
    ]
    batched, alone, wires = [], [], []
    for codec, kwargs in setups:
        wire_a, wire_b = Wire(), Wire()
        a = make(codec, wire_a, clock, **kwargs)
        batched.append(a)
        alone.append(twin(a, wire_b, clock, codec))
        wires.append((wire_a, wire_b))
    assert [s.batch_codec for s in batched] == [
        "PCMU", "PCMA", "PCMU", "PCMA", None, None, None, "PCMU", "PCMA"
    ]  # fmt: skip
    key = SrtpKeys.generate(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    peer = SrtpKeys.generate(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    batched[3].srtp, alone[3].srtp = SrtpContext(key, peer), SrtpContext(key, peer)
    fired: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
    for slot in range(60):
        for i in range(len(setups)):
            if i % 3 == slot % 3 and slot < 40:
                # Frames of 20 ms, and of 30 ms now and then (slots join frames).
                n = batched[i].sample_rate // (50 if slot % 4 else 33)
                samples = RNG.integers(-9000, 9000, n).astype(np.int16)
                for side, stream in enumerate((batched[i], alone[i])):
                    d = stream.queue_audio(AudioFrame(samples))
                    d.addCallback(lambda _, s=side, i=i, t=slot: fired[s].append((t, i)))
        for streams in (batched, alone):
            if slot == 5:
                streams[1].queue_dtmf("5#")
                streams[0].queue_dtmf("1")
            if slot == 12:
                streams[2].sending = False  # on hold for a while
            if slot == 20:
                streams[2].sending = True
        tick_streams(batched)
        for stream in alone:
            stream.tick()
    for stream, (wire_a, wire_b) in zip(batched, wires, strict=True):
        assert len(wire_a.rtp) > 10, f"{stream.codec} sent too little"
        assert wire_a.rtp == wire_b.rtp, f"{stream.codec} ({stream.batch_codec}) differs"
    # Every frame's Deferred fired in the same slot (the order within a slot differs).
    assert sorted(fired[0]) == sorted(fired[1]) and len(fired[0]) > 100
    # The twins' senders end in the same state (what RTCP reports).
    for a, b in zip(batched, alone, strict=True):
        assert (a.sender.sequence, a.sender.timestamp, a.sender.packet_count) == (
            b.sender.sequence,
            b.sender.timestamp,
            b.sender.packet_count,
        )


def test_a_stream_closed_by_another_calls_deferred_in_the_same_slot_sends_nothing() -> None:
    """A's frame Deferred hangs B up after B's slot was taken but before it was sent:
    B sends no packet after its close and its frame fails, as if closed before the slot."""
    clock = task.Clock()
    wire_a, wire_b = Wire(), Wire()
    a, b = make("PCMU", wire_a, clock), make("PCMU", wire_b, clock)
    frame = AudioFrame(np.full(160, 1000, dtype=np.int16))
    results: list[object] = []
    a.queue_audio(frame).addCallback(lambda _: b.close())
    b.queue_audio(frame).addBoth(results.append)
    tick_streams([a, b])
    assert len(wire_a.rtp) == 1 and wire_b.rtp == []
    (result,) = results
    assert isinstance(result, Failure) and result.check(CallStateError)
    tick_streams([a, b])  # the closed stream stays silent
    assert len(wire_a.rtp) == 2 and wire_b.rtp == []


def test_a_stream_moved_to_no_address_in_the_same_slot_consumes_its_frame_unsent() -> None:
    clock = task.Clock()
    wire_a, wire_b = Wire(), Wire()
    a, b = make("PCMA", wire_a, clock), make("PCMA", wire_b, clock)
    frame = AudioFrame(np.full(160, -500, dtype=np.int16))
    fired: list[object] = []

    def hold_b(_: object) -> None:
        b.remote = None

    a.queue_audio(frame).addCallback(hold_b)
    b.queue_audio(frame).addCallback(fired.append)
    timestamp = b.sender.timestamp
    tick_streams([a, b])
    assert wire_b.rtp == [] and fired == [None]
    assert b.sender.timestamp == (timestamp + 160) & 0xFFFFFFFF  # the clock ran on
    b.remote = REMOTE
    tick_streams([b])
    assert RtpPacket.parse(wire_b.rtp[0]).marker  # a new talkspurt


def test_a_stream_that_fails_its_slot_does_not_stop_the_others() -> None:
    clock = task.Clock()
    wires = [Wire(), Wire(), Wire()]
    streams = [make("PCMU", wire, clock) for wire in wires]

    def broken(data: bytes, addr: Addr) -> None:
        raise RuntimeError("a bug in a send callable")

    streams[1]._send_rtp = broken
    tick_streams(streams)
    assert [len(w.rtp) for w in wires] == [1, 0, 1]


def test_clock_reports_rtcp_after_the_slots_packets_and_forgets_removed_streams() -> None:
    """Each stream's SR on its RTCP slot counts the packet of that slot; a removed
    stream neither ticks nor reports, and adding a stream twice paces it once."""
    clock = task.Clock()
    media_clock = MediaClock(clock, rtcp_every=5, phases=2)
    wires = [Wire() for _ in range(4)]
    streams = [make("PCMU" if i % 2 else "PCMA", w, clock) for i, w in enumerate(wires)]
    for stream in streams:
        media_clock.add(stream)
    media_clock.add(streams[0])
    assert len(media_clock) == 4
    for _ in range(40):
        clock.advance(0.01)
    for wire in wires:
        assert len(wire.rtp) == 20
        assert len(wire.rtcp) == 4
        for data in wire.rtcp:
            sr = parse_compound(data)[0]
            assert isinstance(sr, SenderReport)
            sent = [RtpPacket.parse(p) for p in wire.rtp[: sr.packet_count]]
            assert sr.rtp_timestamp == (sent[-1].timestamp + 160) & 0xFFFFFFFF
    media_clock.remove(streams[1])
    for _ in range(20):
        clock.advance(0.01)
    assert len(wires[1].rtp) == 20 and len(wires[1].rtcp) == 4
    assert len(wires[0].rtp) == 30 and len(wires[0].rtcp) == 6
    for stream in streams:
        media_clock.remove(stream)
    assert len(media_clock) == 0 and not any(media_clock._reports)


# -- the send queue ---------------------------------------------------------------------------
def test_send_queue_cuts_and_joins_frames_into_slots_and_names_the_finished_ones() -> None:
    queue = SendQueue(8000)
    done: list[int] = []
    for i, n in enumerate((100, 100, 160, 30)):
        queue.push(AudioFrame(np.full(n, i + 1, dtype=np.int16))).addCallback(
            lambda _, i=i: done.append(i)
        )
    assert queue.queued_samples == 390
    first = queue.take()
    assert first is not None and list(first[:100]) == [1] * 100 and list(first[100:]) == [2] * 60
    queue.fire_sent()
    assert done == [0]
    second = queue.take()
    assert second is not None and list(second[:40]) == [2] * 40 and second[40] == 3
    queue.fire_sent()
    third = queue.take()
    assert third is not None and list(third[40:70]) == [4] * 30 and not third[70:].any()
    queue.fire_sent()
    assert done == [0, 1, 2, 3]
    assert queue.take() is None and queue.sent == ()


def test_send_queue_fail_fails_the_taken_slot_and_everything_queued() -> None:
    queue = SendQueue(8000)
    results: list[object] = []
    for _ in range(3):
        queue.push(AudioFrame(np.zeros(160, dtype=np.int16))).addBoth(results.append)
    queue.take()
    queue.fail(CallStateError("ended"))
    assert len(results) == 3 and all(isinstance(r, Failure) for r in results)
    assert queue.queued_samples == 0 and queue.take() is None


def test_send_queue_resamples_other_rates_and_fires_empty_frames_at_once() -> None:
    queue = SendQueue(8000)
    assert queue.push(AudioFrame(np.zeros(0, dtype=np.int16))).called
    d: defer.Deferred[None] = queue.push(AudioFrame(np.zeros(320, dtype=np.int16), 16000))
    assert queue.queued_samples == 160
    assert queue.take() is not None and not d.called
    queue.fire_sent()
    assert d.called
