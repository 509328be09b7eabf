"""MediaClock (one 20 ms LoopingCall for every stream) and the RTP/RTCP protocols.

Time is a ``task.Clock``; streams are real :class:`MediaStream` objects whose
datagrams go to lists, so what is counted is what would be on the wire.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import pytest
from twisted.internet import task

from sipd.config import SipdConfig
from sipd.errors import ConfigError
from sipd.media.protocol import MAX_CATCH_UP, RTCP_EVERY, MediaClock, RtcpProtocol, RtpProtocol
from sipd.media.rtcp import ReceiverReport, ReportBlock, SenderReport, build_compound
from sipd.media.rtcp import parse_compound as parse_rtcp
from sipd.media.rtp import RtpPacket
from sipd.media.stream import Addr, MediaStream
from sipd.session.media_adapter import MediaAdapter

SLOT = 0.02


@dataclass
class Wire:
    """What one stream sends, with the clock slot each datagram left in."""

    clock: task.Clock
    rtp: list[tuple[float, bytes]] = field(default_factory=list)
    rtcp: list[tuple[float, bytes]] = field(default_factory=list)

    def send_rtp(self, data: bytes, addr: Addr) -> None:
        self.rtp.append((self.clock.seconds(), data))

    def send_rtcp(self, data: bytes, addr: Addr) -> None:
        self.rtcp.append((self.clock.seconds(), data))


def make_stream(clock: task.Clock) -> tuple[MediaStream, Wire]:
    wire = Wire(clock)
    stream = MediaStream(
        codec="PCMU",
        payload_type=0,
        remote=("192.0.2.1", 30000),
        send_rtp=wire.send_rtp,
        send_rtcp=wire.send_rtcp,
        now=clock.seconds,
    )
    return stream, wire


def advance_slots(clock: task.Clock, n: int) -> None:
    """Let ``n`` slots pass one by one, as a punctual reactor would.

    Each step lands just past the next slot boundary (adding 0.02 250 times
    in floating point falls short of 5.0 and would skip a slot).
    """
    for _ in range(n):
        target = (math.floor(clock.seconds() / SLOT + 1e-6) + 1) * SLOT
        clock.advance(target - clock.seconds() + 1e-9)


def test_every_stream_sends_one_packet_per_20ms_slot() -> None:
    """Two streams on one clock each send one packet per slot, nothing before the first."""
    clock = task.Clock()
    media_clock = MediaClock(clock)
    (a, wire_a), (b, wire_b) = make_stream(clock), make_stream(clock)
    media_clock.add(a)
    media_clock.add(b)
    assert len(media_clock) == 2
    clock.advance(SLOT / 2)
    assert wire_a.rtp == [] and wire_b.rtp == []
    advance_slots(clock, 10)
    assert len(wire_a.rtp) == len(wire_b.rtp) == 10
    # One packet per 20 ms, sequence numbers consecutive.
    times = [t for t, _ in wire_a.rtp]
    assert [round(t2 - t1, 6) for t1, t2 in itertools.pairwise(times)] == [SLOT] * 9
    seqs = [RtpPacket.parse(d).sequence for _, d in wire_a.rtp]
    assert seqs == [(seqs[0] + i) % 65536 for i in range(10)]
    assert len(clock.getDelayedCalls()) == 1  # one timer for all streams
    media_clock.remove(a)
    media_clock.remove(b)


def test_a_late_reactor_is_caught_up_by_ticking_the_missed_slots() -> None:
    """100 ms without a turn: the next turn sends 5 packets with consecutive timestamps."""
    clock = task.Clock()
    media_clock = MediaClock(clock)
    stream, wire = make_stream(clock)
    media_clock.add(stream)
    advance_slots(clock, 1)
    clock.advance(5 * SLOT)
    assert len(wire.rtp) == 6
    stamps = [RtpPacket.parse(d).timestamp for _, d in wire.rtp]
    assert [(s - stamps[0]) % 2**32 for s in stamps] == [160 * i for i in range(6)]
    assert media_clock.late_slots == 4
    assert media_clock.slots == 6
    media_clock.remove(stream)


def test_catching_up_is_capped_and_the_clock_slips_beyond() -> None:
    """A 1 s stall is not replayed as a 50-packet burst: at most MAX_CATCH_UP slots are."""
    clock = task.Clock()
    media_clock = MediaClock(clock)
    stream, wire = make_stream(clock)
    media_clock.add(stream)
    clock.advance(50 * SLOT)
    assert len(wire.rtp) == MAX_CATCH_UP
    assert media_clock.late_slots == 49
    advance_slots(clock, 2)
    assert len(wire.rtp) == MAX_CATCH_UP + 2  # back to one per slot
    media_clock.remove(stream)


def test_rtcp_goes_out_every_250_slots_staggered_by_when_a_stream_joined() -> None:
    """Default interval 5 s (250 slots); a stream added 3 slots later reports 3 slots later."""
    clock = task.Clock()
    media_clock = MediaClock(clock)
    assert media_clock.rtcp_every == RTCP_EVERY == 250
    a, wire_a = make_stream(clock)
    b, wire_b = make_stream(clock)
    media_clock.add(a)
    advance_slots(clock, 3)
    media_clock.add(b)
    advance_slots(clock, 246)  # slot 249
    assert wire_a.rtcp == [] and wire_b.rtcp == []
    advance_slots(clock, 1)  # slot 250
    assert len(wire_a.rtcp) == 1 and wire_b.rtcp == []
    advance_slots(clock, 3)  # slot 253
    assert len(wire_a.rtcp) == 1 and len(wire_b.rtcp) == 1
    advance_slots(clock, 250)  # slot 503
    assert len(wire_a.rtcp) == 2 and len(wire_b.rtcp) == 2
    assert [round(t / SLOT) for t, _ in wire_a.rtcp] == [250, 500]
    assert [round(t / SLOT) for t, _ in wire_b.rtcp] == [253, 503]
    sr = parse_rtcp(wire_a.rtcp[0][1])[0]
    assert isinstance(sr, SenderReport) and sr.packet_count == 250
    media_clock.remove(a)
    media_clock.remove(b)


def test_rtcp_interval_is_configurable() -> None:
    """rtcp_every=25 (0.5 s): reports every 25 slots; SipdConfig.rtcp_interval sets it."""
    clock = task.Clock()
    media_clock = MediaClock(clock, rtcp_every=25)
    stream, wire = make_stream(clock)
    media_clock.add(stream)
    advance_slots(clock, 100)
    assert [round(t / SLOT) for t, _ in wire.rtcp] == [25, 50, 75, 100]
    media_clock.remove(stream)
    adapter = MediaAdapter(SipdConfig(rtcp_interval=0.5), clock)
    assert adapter.clock_loop.rtcp_every == 25
    assert MediaAdapter(SipdConfig(), clock).clock_loop.rtcp_every == 250


@pytest.mark.parametrize("bad", [0, -1.0, "5"])
def test_rtcp_interval_must_be_a_positive_number(bad: object) -> None:
    """A zero, negative or non-numeric interval is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match="rtcp_interval"):
        SipdConfig(rtcp_interval=bad)  # type: ignore[arg-type]


def test_the_loop_stops_with_the_last_stream_and_restarts_with_the_next() -> None:
    """No stream, no timer: removing the last leaves no delayed call; adding starts it again."""
    clock = task.Clock()
    media_clock = MediaClock(clock)
    a, wire_a = make_stream(clock)
    b, _ = make_stream(clock)
    assert clock.getDelayedCalls() == []
    media_clock.add(a)
    media_clock.add(b)
    advance_slots(clock, 2)
    media_clock.remove(a)
    assert len(clock.getDelayedCalls()) == 1  # b still runs
    advance_slots(clock, 2)
    assert len(wire_a.rtp) == 2  # a is no longer ticked
    media_clock.remove(b)
    assert clock.getDelayedCalls() == []
    media_clock.remove(b)  # removing twice is harmless
    assert len(media_clock) == 0
    media_clock.add(a)
    advance_slots(clock, 1)
    assert len(wire_a.rtp) == 3
    media_clock.remove(a)
    assert clock.getDelayedCalls() == []


def test_a_failing_stream_does_not_stop_the_clock_or_the_others() -> None:
    """One stream raising from tick() is logged; the other streams keep their pace."""
    clock = task.Clock()
    media_clock = MediaClock(clock)

    def broken(data: bytes, addr: Addr) -> None:
        raise RuntimeError("boom")

    bad = MediaStream(
        codec="PCMU",
        payload_type=0,
        remote=("192.0.2.1", 30000),
        send_rtp=broken,
        send_rtcp=broken,
        now=clock.seconds,
    )
    good, wire = make_stream(clock)
    media_clock.add(bad)
    media_clock.add(good)
    advance_slots(clock, 5)
    assert len(wire.rtp) == 5
    assert len(clock.getDelayedCalls()) == 1
    media_clock.remove(bad)
    media_clock.remove(good)
    assert clock.getDelayedCalls() == []


# -- the protocols --------------------------------------------------------------------------
class FakeUdpTransport:
    """Records writes like a UDP port would send them."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, Addr]] = []

    def write(self, data: bytes, addr: Addr) -> None:
        self.written.append((data, addr))


def test_rtp_protocol_hands_datagrams_to_its_stream_and_counts_early_ones() -> None:
    """Before the stream is attached datagrams are counted and dropped; then they are played."""
    clock = task.Clock()
    stream, _ = make_stream(clock)
    frames: list[object] = []
    stream.frame_listeners.append(frames.append)
    stream.jitter.depth = 1
    proto = RtpProtocol()
    packet = RtpPacket(payload_type=0, sequence=1, timestamp=160, ssrc=7, payload=bytes(160))
    proto.datagramReceived(bytes(packet), ("192.0.2.1", 30000))
    assert proto.received_early == 1
    proto.stream = stream
    proto.datagramReceived(bytes(packet), ("192.0.2.1", 30000))
    assert stream.current_stats().packets_received == 1 and len(frames) == 1


def test_protocols_send_through_their_transport_and_feed_rtcp_to_the_stream() -> None:
    """send() writes to the port; junk RTCP is counted, a report reaches the stream."""
    clock = task.Clock()
    stream, _ = make_stream(clock)
    rtp, rtcp = RtpProtocol(), RtcpProtocol()
    rtp.send(b"nothing yet", ("192.0.2.1", 1))  # no transport: ignored
    transport = FakeUdpTransport()
    rtp.makeConnection(transport)  # type: ignore[arg-type]
    rtp.send(b"x", ("192.0.2.1", 30000))
    assert transport.written == [(b"x", ("192.0.2.1", 30000))]
    rtp.stream = rtcp.stream = stream
    rtcp.datagramReceived(b"\x00", ("192.0.2.1", 30001))
    assert stream.current_stats().dropped_malformed == 1
    block = ReportBlock(ssrc=stream.sender.ssrc, fraction_lost=32)
    rr = build_compound([ReceiverReport(ssrc=99, reports=(block,))])
    rtcp.datagramReceived(rr, ("192.0.2.1", 30001))
    assert stream.current_stats().remote_fraction_lost == 0.125
