"""MediaStream: paced sending, silence/pause, DTMF, latching, jitter buffer, RTCP, close.

The stream is sans-I/O, so these tests drive it by hand: every 20 ms slot is
one ``tick()``, datagrams go to lists, and "now" is a number the test moves.
What goes out is parsed back with the RTP/RTCP parsers (tested on their own
against RFC layouts); payloads are compared with the G.711 round trip of what
was queued.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.typing import NDArray
from twisted.internet import defer
from twisted.python.failure import Failure

from sipd.errors import CallStateError
from sipd.media import g711
from sipd.media.dtmf import DtmfEvent
from sipd.media.frame import AudioFrame
from sipd.media.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_from_unix,
    ntp_short,
    parse_compound,
)
from sipd.media.rtp import RtpPacket, seq_add, ts_add, ts_diff
from sipd.media.stream import Addr, MediaStream
from sipd.media.tones import ToneGenerator, dominant_frequency, tone

REMOTE: Addr = ("192.0.2.10", 40000)
REMOTE_SSRC = 0x5EED0001
DTMF_PT = 101


@dataclass
class Wire:
    """Collects what a stream sends, and holds the fake time it reads."""

    now: float = 1_700_000_000.0
    rtp: list[tuple[RtpPacket, Addr]] = field(default_factory=list)
    rtcp: list[tuple[bytes, Addr]] = field(default_factory=list)

    def send_rtp(self, data: bytes, addr: Addr) -> None:
        self.rtp.append((RtpPacket.parse(data), addr))

    def send_rtcp(self, data: bytes, addr: Addr) -> None:
        self.rtcp.append((data, addr))

    def clock(self) -> float:
        return self.now

    @property
    def packets(self) -> list[RtpPacket]:
        return [p for p, _ in self.rtp]


def make_stream(
    wire: Wire,
    *,
    remote: Addr | None = REMOTE,
    silence_when_idle: bool = True,
    dtmf: bool = True,
    jitter_depth: int = 3,
) -> MediaStream:
    return MediaStream(
        codec="PCMU",
        payload_type=0,
        remote=remote,
        send_rtp=wire.send_rtp,
        send_rtcp=wire.send_rtcp,
        now=wire.clock,
        dtmf_payload_type=DTMF_PT if dtmf else None,
        jitter_depth=jitter_depth,
        silence_when_idle=silence_when_idle,
    )


def ulaw_round_trip(samples: NDArray[np.int16]) -> NDArray[np.int16]:
    """What a PCMU receiver decodes for ``samples``."""
    return g711.decode("PCMU", g711.encode("PCMU", samples))


def decoded(packet: RtpPacket) -> NDArray[np.int16]:
    return g711.decode("PCMU", packet.payload)


def rtp_bytes(
    seq: int, ts: int, *, ssrc: int = REMOTE_SSRC, payload: bytes | None = None, pt: int = 0
) -> bytes:
    if payload is None:
        payload = g711.encode("PCMU", np.full(160, seq % 100, dtype=np.int16))
    return bytes(RtpPacket(payload_type=pt, sequence=seq, timestamp=ts, ssrc=ssrc, payload=payload))


# -- pacing ---------------------------------------------------------------------------------
def test_each_tick_sends_one_packet_with_the_next_sequence_and_timestamp() -> None:
    """Queued frames leave one per tick: seq +1, timestamp +160, only the first marked."""
    wire = Wire()
    stream = make_stream(wire)
    gen = ToneGenerator(440)
    frames = [gen.next_frame() for _ in range(5)]
    sends = [stream.queue_audio(f) for f in frames]
    assert wire.rtp == []  # nothing leaves before the clock ticks
    for i in range(5):
        stream.tick()
        assert len(wire.rtp) == i + 1
    packets = wire.packets
    assert all(addr == REMOTE for _, addr in wire.rtp)
    assert [p.marker for p in packets] == [True, False, False, False, False]
    assert all(p.payload_type == 0 and p.ssrc == stream.sender.ssrc for p in packets)
    for a, b in itertools.pairwise(packets):
        assert b.sequence == seq_add(a.sequence, 1)
        assert ts_diff(b.timestamp, a.timestamp) == 160
    for frame, packet in zip(frames, packets, strict=True):
        assert np.array_equal(decoded(packet), ulaw_round_trip(frame.samples))
    assert all(d.called for d in sends)
    assert stream.stats.packets_sent == 5 and stream.stats.octets_sent == 5 * 160


def test_sequence_number_wraps_from_65535_to_0() -> None:
    """The 16-bit sequence number wraps; the timestamp keeps counting."""
    wire = Wire()
    stream = make_stream(wire)
    stream.sender.sequence = 0xFFFE
    for _ in range(3):
        stream.tick()
    assert [p.sequence for p in wire.packets] == [0xFFFE, 0xFFFF, 0]


def test_send_deferred_fires_when_the_last_sample_of_the_frame_is_sent() -> None:
    """A 320-sample frame spans two packets; its Deferred fires only after the second."""
    wire = Wire()
    stream = make_stream(wire)
    samples = tone(1000, 0.04)
    d = stream.queue_audio(AudioFrame(samples))
    stream.tick()
    assert not d.called
    stream.tick()
    assert d.called
    assert [len(p.payload) for p in wire.packets] == [160, 160]
    sent = np.concatenate([decoded(p) for p in wire.packets])
    assert np.array_equal(sent, ulaw_round_trip(samples))


def test_short_frames_are_packed_back_to_back_into_20ms_packets() -> None:
    """Frames of 100 samples are joined: packet 1 holds frame 1 and part of frame 2."""
    wire = Wire()
    stream = make_stream(wire)
    chunks = [np.full(100, 1000 * (i + 1), dtype=np.int16) for i in range(3)]
    ds = [stream.queue_audio(AudioFrame(c)) for c in chunks]
    stream.tick()
    # 160 samples out: frame 1 (100) complete, frame 2 has 40 left.
    assert [d.called for d in ds] == [True, False, False]
    stream.tick()
    # 300 samples queued: frame 2 and 3 complete; the rest of packet 2 is silence.
    assert [d.called for d in ds] == [True, True, True]
    sent = np.concatenate([decoded(p) for p in wire.packets])
    expected = np.concatenate([*chunks, np.zeros(20, dtype=np.int16)])
    assert np.array_equal(sent, ulaw_round_trip(expected))
    assert stream.queued_samples == 0


def test_16khz_frames_are_resampled_to_8khz_and_keep_their_pitch() -> None:
    """Four 20 ms frames at 16 kHz make four packets carrying the same 600 Hz tone."""
    wire = Wire()
    stream = make_stream(wire)
    gen = ToneGenerator(600, sample_rate=16000)
    frames = [gen.next_frame(320) for _ in range(4)]
    ds = [stream.queue_audio(f) for f in frames]
    assert stream.queued_samples == 4 * 160
    for _ in range(4):
        stream.tick()
    assert all(d.called for d in ds)
    assert len(wire.packets) == 4
    heard = np.concatenate([decoded(p) for p in wire.packets])
    assert dominant_frequency(heard) == pytest.approx(600, abs=10)


def test_queue_audio_of_an_empty_frame_fires_at_once() -> None:
    """An empty frame has nothing to wait for."""
    stream = make_stream(Wire())
    d = stream.queue_audio(AudioFrame(np.zeros(0, dtype=np.int16)))
    assert d.called


# -- idle: silence or pause -----------------------------------------------------------------
def test_idle_stream_sends_silence_with_continuous_numbering() -> None:
    """With nothing queued each tick still sends a 20 ms packet of silence."""
    wire = Wire()
    stream = make_stream(wire)
    stream.queue_audio(ToneGenerator(440).next_frame())
    for _ in range(4):
        stream.tick()
    packets = wire.packets
    assert len(packets) == 4
    for p in packets[1:]:
        assert np.array_equal(decoded(p), np.zeros(160, dtype=np.int16))
        assert not p.marker
    assert [ts_diff(p.timestamp, packets[0].timestamp) for p in packets] == [0, 160, 320, 480]
    assert [seq_add(packets[0].sequence, i) for i in range(4)] == [p.sequence for p in packets]


def test_pause_mode_sends_nothing_then_resumes_marked_with_the_timestamp_advanced() -> None:
    """silence_when_idle=False: no packets while idle; the next one is marked and the
    timestamp jumps by the time that passed (RFC 3551 §4.1), the sequence does not."""
    wire = Wire()
    stream = make_stream(wire, silence_when_idle=False)
    gen = ToneGenerator(440)
    stream.queue_audio(gen.next_frame())
    stream.tick()
    for _ in range(3):
        stream.tick()
    assert len(wire.packets) == 1
    stream.queue_audio(gen.next_frame())
    stream.queue_audio(gen.next_frame())
    stream.tick()
    stream.tick()
    first, resumed, after = wire.packets
    assert first.marker and resumed.marker and not after.marker
    assert ts_diff(resumed.timestamp, first.timestamp) == 4 * 160  # 4 slots of real time
    assert ts_diff(after.timestamp, resumed.timestamp) == 160
    assert resumed.sequence == seq_add(first.sequence, 1)
    assert after.sequence == seq_add(first.sequence, 2)


def test_a_stream_without_remote_sends_nothing_but_still_consumes_audio() -> None:
    """Before the remote address is known, queued audio is consumed in real time."""
    wire = Wire()
    stream = make_stream(wire, remote=None)
    d = stream.queue_audio(AudioFrame(tone(440, 0.04)))
    stream.tick()
    assert not d.called
    stream.tick()
    assert d.called and wire.rtp == []


def test_on_hold_no_packets_leave_and_the_first_after_resume_is_marked() -> None:
    """sending=False (hold): slots pass silently; on resume the timestamp reflects them."""
    wire = Wire()
    stream = make_stream(wire)
    stream.tick()
    stream.sending = False
    for _ in range(5):
        stream.tick()
    assert len(wire.packets) == 1
    stream.sending = True
    stream.tick()
    before, after = wire.packets
    assert after.marker
    assert ts_diff(after.timestamp, before.timestamp) == 6 * 160
    assert after.sequence == seq_add(before.sequence, 1)


# -- DTMF -----------------------------------------------------------------------------------
def test_dtmf_events_interleave_with_audio_in_one_sequence_space() -> None:
    """A digit is 5 event packets (same timestamp, duration +160 each, first marked, the
    End packet sent 3 times), then audio resumes on the next sequence number with the
    timestamp advanced by the event's duration."""
    wire = Wire()
    stream = make_stream(wire)
    stream.tick()  # one audio (silence) packet first
    d = stream.queue_dtmf("7")
    for _ in range(9):
        stream.tick()
    packets = wire.packets
    audio_before = packets[0]
    events = [p for p in packets if p.payload_type == DTMF_PT]
    audio_after = [p for p in packets[1:] if p.payload_type == 0]
    assert len(events) == 4 + 3
    parsed = [DtmfEvent.parse(p.payload) for p in events]
    assert {e.digit for e in parsed} == {"7"}
    assert [e.duration for e in parsed] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in parsed] == [False] * 4 + [True] * 3
    assert [p.marker for p in events] == [True] + [False] * 6
    start_ts = ts_add(audio_before.timestamp, 160)
    assert {p.timestamp for p in events} == {start_ts}
    # Every packet (audio, events, copies) takes the next sequence number.
    seqs = [p.sequence for p in packets]
    assert seqs == [seq_add(seqs[0], i) for i in range(len(seqs))]
    # Audio comes back after the 5 event slots, 100 ms of clock later.
    assert packets[1 : 1 + 7] == events
    assert len(audio_after) == 4
    assert ts_diff(audio_after[0].timestamp, start_ts) == 5 * 160
    assert d.called


def test_queue_dtmf_fires_once_the_last_end_packet_is_sent() -> None:
    """The Deferred fires on the tick that sends the last digit's End packets."""
    wire = Wire()
    stream = make_stream(wire)
    fired_at: list[int] = []
    d = stream.queue_dtmf("12")
    d.addCallback(lambda _: fired_at.append(len(wire.packets)))
    ticks = 0
    while not d.called and ticks < 100:
        stream.tick()
        ticks += 1
    assert fired_at, "queue_dtmf never fired"
    events = [p for p in wire.packets if p.payload_type == DTMF_PT]
    ends = [p for p in events if DtmfEvent.parse(p.payload).end]
    assert [DtmfEvent.parse(p.payload).digit for p in ends] == ["1"] * 3 + ["2"] * 3
    # The last packet on the wire when it fired is the third End copy of "2".
    assert wire.packets[fired_at[0] - 1] is ends[-1]
    # Digit 1 (5 slots), gap (60 ms = 3 slots of audio), digit 2 (5 slots).
    assert ticks == 5 + 3 + 5


def test_second_dtmf_request_queues_behind_the_first() -> None:
    """Two send_dtmf calls: digits go out in order and each Deferred fires with its last digit."""
    wire = Wire()
    stream = make_stream(wire)
    first = stream.queue_dtmf("4")
    second = stream.queue_dtmf("#")
    for _ in range(5):
        stream.tick()
    assert first.called and not second.called
    for _ in range(20):
        stream.tick()
    assert second.called
    digits = [DtmfEvent.parse(p.payload).digit for p in wire.packets if p.payload_type == DTMF_PT]
    assert digits == ["4"] * 7 + ["#"] * 7


@pytest.mark.parametrize(("ticks", "delivered"), [(0, False), (5, False), (9, True), (12, True)])
def test_dtmf_counts_as_sent_once_the_last_digit_started_when_the_call_ends(
    ticks: int, delivered: bool
) -> None:
    """The peer hangs up on "#" (reported on its first packet) before its End packets:
    send_dtmf("1#") fires normally. Ended before "#" started, it fails with CallStateError.
    "1" takes ticks 1-5, the gap 6-8, so "#" starts on tick 9."""
    stream = make_stream(Wire())
    d = stream.queue_dtmf("1#")
    for _ in range(ticks):
        stream.tick()
    assert not d.called
    stream.close()
    if delivered:
        assert d.called and d.result is None
    else:
        assert _failure_of(d).check(CallStateError)


def test_dtmf_after_a_pause_starts_at_the_current_time() -> None:
    """In pause mode an event after idle slots is stamped with the time it really starts."""
    wire = Wire()
    stream = make_stream(wire, silence_when_idle=False)
    stream.queue_audio(ToneGenerator(440).next_frame())
    stream.tick()
    for _ in range(10):
        stream.tick()  # paused
    stream.queue_dtmf("5")
    for _ in range(5):
        stream.tick()
    audio, *events = wire.packets
    assert len(events) == 7
    # Slots 1..11 elapsed before the event starts at slot 12.
    assert ts_diff(events[0].timestamp, audio.timestamp) == 11 * 160
    stream.queue_audio(ToneGenerator(440).next_frame())
    stream.tick()
    last = wire.packets[-1]
    # Audio may use the inter-digit gap: it starts a talkspurt right after the event.
    assert last.payload_type == 0 and last.marker
    assert ts_diff(last.timestamp, events[0].timestamp) == 5 * 160
    assert last.sequence == seq_add(events[-1].sequence, 1)


def test_dtmf_of_no_digits_fires_at_once() -> None:
    """send_dtmf("") has nothing to wait for and sends nothing."""
    wire = Wire()
    stream = make_stream(wire)
    assert stream.queue_dtmf("").called
    stream.tick()
    assert [p.payload_type for p in wire.packets] == [0]


def test_dtmf_without_negotiated_telephone_event_fails() -> None:
    """No telephone-event payload type: send_dtmf fails with CallStateError."""
    stream = make_stream(Wire(), dtmf=False)
    failure = _failure_of(stream.queue_dtmf("1"))
    assert failure.check(CallStateError)
    assert "telephone-event" in str(failure.value)


def test_dtmf_with_an_invalid_digit_fails_before_sending() -> None:
    """A bad digit fails the Deferred and queues nothing."""
    wire = Wire()
    stream = make_stream(wire)
    _failure_of(stream.queue_dtmf("12x"))
    for _ in range(12):
        stream.tick()
    assert all(p.payload_type == 0 for p in wire.packets)


def test_received_dtmf_digits_reach_the_listeners_once_each() -> None:
    """Digits sent by one stream arrive at another, in order, once per event."""
    wire_a, wire_b = Wire(), Wire()
    a = make_stream(wire_a)
    b = make_stream(wire_b, remote=("192.0.2.20", 50000))
    heard: list[str] = []
    b.dtmf_listeners.append(heard.append)
    a.queue_dtmf("123#*0")
    for _ in range(60):
        a.tick()
    for packet, _ in wire_a.rtp:
        b.rtp_received(bytes(packet), REMOTE)
    assert heard == list("123#*0")
    assert b.current_stats().dtmf_received == 6


# -- receiving: latching and foreign sources --------------------------------------------------
def test_first_packet_fixes_the_ssrc_and_no_latch_when_it_comes_from_the_sdp_address() -> None:
    """Packets from the SDP address are accepted without latching."""
    wire = Wire()
    stream = make_stream(wire)
    stream.rtp_received(rtp_bytes(10, 1600), REMOTE)
    stats = stream.current_stats()
    assert stream.remote_ssrc == REMOTE_SSRC
    assert stats.latched == 0 and stats.packets_received == 1
    assert stream.remote == REMOTE


def test_same_ssrc_from_a_new_source_latches_there() -> None:
    """Symmetric RTP: our packets (and RTCP) now go where the peer's packets come from."""
    wire = Wire()
    stream = make_stream(wire)
    stream.rtp_received(rtp_bytes(10, 1600), REMOTE)
    nat: Addr = ("198.51.100.7", 61000)
    stream.rtp_received(rtp_bytes(11, 1760), nat)
    assert stream.current_stats().latched == 1
    assert stream.remote == nat and stream.remote_rtcp == ("198.51.100.7", 61001)
    stream.tick()
    assert wire.rtp[-1][1] == nat
    stream.rtcp_report()
    assert wire.rtcp[-1][1] == ("198.51.100.7", 61001)
    # Further packets from the latched source do not count as new latches.
    stream.rtp_received(rtp_bytes(12, 1920), nat)
    assert stream.current_stats().latched == 1


def test_first_packet_from_an_unexpected_source_latches_at_once() -> None:
    """A peer behind NAT: its very first packet arrives from elsewhere and is followed."""
    wire = Wire()
    stream = make_stream(wire)
    nat: Addr = ("198.51.100.7", 61000)
    stream.rtp_received(rtp_bytes(10, 1600), nat)
    assert stream.current_stats().latched == 1 and stream.remote == nat


def test_other_ssrc_from_a_foreign_source_is_dropped_and_counted() -> None:
    """A stray stream neither latches nor reaches the jitter buffer."""
    wire = Wire()
    stream = make_stream(wire, jitter_depth=1)
    frames: list[AudioFrame] = []
    stream.frame_listeners.append(frames.append)
    stream.rtp_received(rtp_bytes(10, 1600), REMOTE)
    stray: Addr = ("203.0.113.9", 7000)
    for seq in range(500, 505):
        stream.rtp_received(rtp_bytes(seq, seq * 160, ssrc=0xBAD), stray)
    stats = stream.current_stats()
    assert stats.dropped_foreign == 5
    assert stats.packets_received == 1 and stats.latched == 0
    assert stream.remote == REMOTE and stream.remote_ssrc == REMOTE_SSRC
    assert [f.sequence for f in frames] == [10]


def test_new_ssrc_from_the_current_source_is_a_restart_and_accepted() -> None:
    """The peer restarting its stream (new SSRC, same address) is not foreign."""
    wire = Wire()
    stream = make_stream(wire, jitter_depth=1)
    frames: list[AudioFrame] = []
    stream.frame_listeners.append(frames.append)
    stream.rtp_received(rtp_bytes(10, 1600), REMOTE)
    stream.rtp_received(rtp_bytes(9000, 77, ssrc=0x1234), REMOTE)
    assert stream.remote_ssrc == 0x1234
    assert stream.current_stats().dropped_foreign == 0
    assert [f.sequence for f in frames] == [10, 9000]


def test_malformed_and_unknown_payload_type_packets_are_counted() -> None:
    """Junk is counted as malformed; an unnegotiated payload type is counted and not played."""
    wire = Wire()
    stream = make_stream(wire, jitter_depth=1)
    frames: list[AudioFrame] = []
    stream.frame_listeners.append(frames.append)
    stream.rtp_received(b"\x80\x00\x01", REMOTE)
    stream.rtp_received(rtp_bytes(1, 160, pt=8), REMOTE)
    stats = stream.current_stats()
    assert stats.dropped_malformed == 1 and stats.dropped_payload_type == 1
    assert frames == []


# -- receiving: jitter buffer -----------------------------------------------------------------
def test_reordered_and_duplicate_packets_are_delivered_once_in_order() -> None:
    """Depth 3 absorbs swaps; duplicates are dropped and counted; payloads decode as sent."""
    wire = Wire()
    stream = make_stream(wire, jitter_depth=3)
    frames: list[AudioFrame] = []
    stream.frame_listeners.append(frames.append)
    order = [100, 102, 101, 101, 103, 105, 104, 106, 106, 107, 108]
    for seq in order:
        stream.rtp_received(rtp_bytes(seq, seq * 160), REMOTE)
    stream.close()  # flushes what the buffer still holds
    assert [f.sequence for f in frames] == list(range(100, 109))
    assert [f.timestamp for f in frames] == [s * 160 for s in range(100, 109)]
    for f in frames:
        assert f.sequence is not None
        sent = np.full(160, f.sequence % 100, dtype=np.int16)
        assert np.array_equal(f.samples, ulaw_round_trip(sent))
        assert f.sample_rate == 8000
    stats = stream.current_stats()
    assert stats.duplicates == 2
    assert stats.packets_received == len(order)


def test_a_packet_arriving_after_its_slot_was_skipped_is_late() -> None:
    """Once the buffer gave up on a packet, its late arrival is dropped and counted."""
    wire = Wire()
    stream = make_stream(wire, jitter_depth=2)
    frames: list[AudioFrame] = []
    stream.frame_listeners.append(frames.append)
    for seq in (1, 2, 4, 5, 6):
        stream.rtp_received(rtp_bytes(seq, seq * 160), REMOTE)
    stream.rtp_received(rtp_bytes(3, 3 * 160), REMOTE)
    assert [f.sequence for f in frames] == [1, 2, 4, 5, 6]
    assert stream.current_stats().late == 1


def test_dtmf_packets_do_not_open_holes_in_the_audio_stream() -> None:
    """Event packets share the sequence space; the audio around them plays without loss."""
    wire_a, wire_b = Wire(), Wire()
    a = make_stream(wire_a)
    b = make_stream(wire_b, jitter_depth=3)
    frames: list[AudioFrame] = []
    b.frame_listeners.append(frames.append)
    a.tick()
    a.queue_dtmf("9")
    for _ in range(12):
        a.tick()
    for packet, _ in wire_a.rtp:
        b.rtp_received(bytes(packet), REMOTE)
    b.close()
    audio = [p.sequence for p in wire_a.packets if p.payload_type == 0]
    assert [f.sequence for f in frames] == audio
    assert b.jitter.lost == 0


# -- RTCP -------------------------------------------------------------------------------------
def test_reception_loss_and_jitter_go_into_our_report_and_the_stats() -> None:
    """Packets 100..109 without 103 and 104, one arriving 10 ms late: the RR block and
    current_stats() show the loss (RFC 3550 A.3) and the jitter (A.8)."""
    wire = Wire()
    stream = make_stream(wire)
    t0 = wire.now
    for seq in range(100, 110):
        if seq in (103, 104):
            continue
        wire.now = t0 + (seq - 100) * 0.02 + (0.01 if seq == 106 else 0.0)
        stream.rtp_received(rtp_bytes(seq, seq * 160), REMOTE)
    stats = stream.current_stats()
    assert stats.packets_lost == 2
    # Transit differences (from 101 on; 100 is on probation): 0 except +80 samples
    # at 106 and -80 at 107. J += (|D| - J) / 16 per packet.
    j = 0.0
    for d in (0, 0, 80, 80, 0, 0):
        j += (d - j) / 16
    assert stats.jitter_ms == pytest.approx(j / 8, abs=1e-3)  # float time at 1.7e9 s
    stream.rtcp_report()  # we sent nothing: an RR
    [(data, dest)] = wire.rtcp
    assert dest == (REMOTE[0], REMOTE[1] + 1)
    rr, sdes = parse_compound(data)
    assert isinstance(rr, ReceiverReport) and isinstance(sdes, SourceDescription)
    assert rr.ssrc == stream.sender.ssrc
    [block] = rr.reports
    assert block.ssrc == REMOTE_SSRC
    assert block.cumulative_lost == 2
    assert block.highest_sequence == 109
    # RFC 3550 A.1: packet 100 is the probation packet, so 9 are expected (101..109).
    assert block.fraction_lost == (2 << 8) // 9
    assert stream.current_stats().fraction_lost == pytest.approx(((2 << 8) // 9) / 256)
    assert block.jitter == int(j)


def test_sender_report_carries_our_counts_and_bye_is_appended_on_request() -> None:
    """Once we sent, the report is an SR with our counts and NTP time; bye=True adds BYE."""
    wire = Wire()
    stream = make_stream(wire)
    for _ in range(3):
        stream.tick()
    stream.rtcp_report(bye=True)
    [(data, _)] = wire.rtcp
    sr, sdes, bye = parse_compound(data)
    assert isinstance(sr, SenderReport) and isinstance(bye, Bye)
    assert sr.ssrc == stream.sender.ssrc and sr.packet_count == 3 and sr.octet_count == 480
    assert sr.ntp_timestamp == ntp_from_unix(wire.now)
    assert sr.rtp_timestamp == stream.sender.timestamp
    assert sr.reports == ()
    assert isinstance(sdes, SourceDescription) and sdes.chunks[0].cname == "sipd"
    assert bye.sources == (stream.sender.ssrc,)


def test_report_about_our_stream_gives_remote_loss_jitter_and_rtt() -> None:
    """A peer's RR about our SSRC: fraction 64/256, jitter 80 units, and
    RTT = arrival - LSR - DLSR (RFC 3550 §6.4.1) come out in current_stats()."""
    wire = Wire()
    stream = make_stream(wire)
    our_sr_sent = wire.now
    wire.now = our_sr_sent + 0.75  # the RR arrives 0.75 s later, the peer held it 0.5 s
    block = ReportBlock(
        ssrc=stream.sender.ssrc,
        fraction_lost=64,
        cumulative_lost=3,
        highest_sequence=500,
        jitter=80,
        lsr=ntp_short(ntp_from_unix(our_sr_sent)),
        dlsr=0x8000,
    )
    other = ReportBlock(ssrc=0xDEAD, fraction_lost=255, jitter=9999, lsr=1, dlsr=1)
    data = build_compound([ReceiverReport(ssrc=REMOTE_SSRC, reports=(other, block))])
    stream.rtcp_received(data, (REMOTE[0], REMOTE[1] + 1))
    stats = stream.current_stats()
    assert stats.remote_fraction_lost == 0.25
    assert stats.remote_jitter_ms == 10.0
    assert stats.rtt_ms == pytest.approx(250.0, abs=0.1)


def test_two_streams_measure_round_trip_time_through_sr_and_rr() -> None:
    """A sends an SR, B reports back 0.5 s later: A's RTT is the 2 x 40 ms path delay."""
    wire_a, wire_b = Wire(), Wire()
    a = make_stream(wire_a, remote=("192.0.2.20", 50000))
    b = make_stream(wire_b)
    delay = 0.04
    for _ in range(10):
        a.tick()
        b.tick()
    wire_b.now = wire_a.now + delay
    for packet, _ in wire_a.rtp:
        b.rtp_received(bytes(packet), ("192.0.2.20", 50000))
    for packet, _ in wire_b.rtp:
        a.rtp_received(bytes(packet), REMOTE)
    a.rtcp_report()
    [(sr_data, _)] = wire_a.rtcp
    wire_b.now = wire_a.now + delay
    b.rtcp_received(sr_data, ("192.0.2.20", 50001))
    wire_b.now += 0.5
    b.rtcp_report()
    [(rr_data, _)] = wire_b.rtcp
    wire_a.now = wire_b.now + delay
    a.rtcp_received(rr_data, (REMOTE[0], REMOTE[1] + 1))
    stats = a.current_stats()
    assert stats.rtt_ms == pytest.approx(2 * delay * 1000, abs=0.1)
    assert stats.remote_fraction_lost == 0.0
    # B never saw an SR from... itself: its RTT needs A's block with B's LSR.
    assert b.current_stats().rtt_ms is None


def test_malformed_rtcp_is_counted_not_raised() -> None:
    """A truncated RTCP datagram is counted as malformed."""
    stream = make_stream(Wire())
    stream.rtcp_received(b"\x81\xc9\x00\x07\x01", REMOTE)
    assert stream.current_stats().dropped_malformed == 1


def test_rtcp_muxed_on_the_rtp_port_is_recognised() -> None:
    """An RR arriving on the RTP port (rtcp-mux) is handled as RTCP, not dropped as RTP."""
    stream = make_stream(Wire())
    block = ReportBlock(ssrc=stream.sender.ssrc, fraction_lost=128)
    stream.rtp_received(
        build_compound([ReceiverReport(ssrc=REMOTE_SSRC, reports=(block,))]), REMOTE
    )
    stats = stream.current_stats()
    assert stats.remote_fraction_lost == 0.5
    assert stats.packets_received == 0 and stats.dropped_malformed == 0


# -- close --------------------------------------------------------------------------------------
def test_close_fails_pending_sends_and_delivers_buffered_frames() -> None:
    """On close, unsent audio and DTMF fail with CallStateError and the jitter buffer is
    flushed to the listeners; later sends fail at once and ticks send nothing."""
    wire = Wire()
    stream = make_stream(wire, jitter_depth=5)
    frames: list[AudioFrame] = []
    stream.frame_listeners.append(frames.append)
    for seq in (20, 21, 22):  # still in the start-up prefill of a depth-5 buffer
        stream.rtp_received(rtp_bytes(seq, seq * 160), REMOTE)
    assert frames == []
    sent = stream.queue_audio(ToneGenerator(440).next_frame())
    stream.tick()
    pending = [stream.queue_audio(ToneGenerator(440).next_frame()) for _ in range(2)]
    digits = stream.queue_dtmf("1")
    stream.close()
    assert sent.called
    for d in [*pending, digits]:
        assert _failure_of(d).check(CallStateError)
    assert [f.sequence for f in frames] == [20, 21, 22]
    assert _failure_of(stream.queue_audio(ToneGenerator(440).next_frame())).check(CallStateError)
    assert _failure_of(stream.queue_dtmf("2")).check(CallStateError)
    before = len(wire.rtp)
    stream.tick()
    stream.rtp_received(rtp_bytes(23, 23 * 160), REMOTE)
    assert len(wire.rtp) == before and len(frames) == 3
    stream.close()  # idempotent


def test_send_errors_from_the_socket_do_not_break_the_stream() -> None:
    """An OSError from sendto is swallowed: the packet is not counted, the clock runs on."""
    wire = Wire()
    calls = 0

    def failing_send(data: bytes, addr: Addr) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("network unreachable")
        wire.send_rtp(data, addr)

    stream = MediaStream(
        codec="PCMA",
        payload_type=8,
        remote=REMOTE,
        send_rtp=failing_send,
        send_rtcp=wire.send_rtcp,
        now=wire.clock,
    )
    stream.tick()
    stream.tick()
    [packet] = wire.packets
    assert packet.payload_type == 8 and stream.stats.packets_sent == 1
    silence = g711.decode("PCMA", g711.encode("PCMA", np.zeros(160, dtype=np.int16)))
    assert np.array_equal(g711.decode("PCMA", packet.payload), silence)


def _failure_of(d: defer.Deferred[None]) -> Failure:
    """The Failure a Deferred already failed with (consumed so it is not logged)."""
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, f"{d!r} did not fail"
    return failures[0]


def test_stats_as_dict_lists_every_counter() -> None:
    """as_dict() is what call.stats() builds on: every field, by name."""
    stream = make_stream(Wire())
    stream.tick()
    stats = stream.current_stats().as_dict()
    assert stats["packets_sent"] == 1
    assert stats["rtt_ms"] is None
    assert set(stats) >= {"packets_received", "packets_lost", "jitter_ms", "dropped_foreign"}
    assert math.isfinite(float(stats["jitter_ms"] or 0.0))
