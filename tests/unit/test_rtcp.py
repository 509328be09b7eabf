"""RTCP packets (RFC 3550 §6) and reception statistics (Appendix A)."""

from __future__ import annotations

import struct

import pytest

from sipd.errors import MediaValueError, RtpParseError
from sipd.media.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpUnknown,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_from_unix,
    ntp_short,
    parse_compound,
    round_trip_time,
    unix_from_ntp,
)

NTP_1970 = 2_208_988_800

# RR from SSRC 0x01020304 with one block: fraction 0x40, lost -1, ext seq 0x10005,
# jitter 0x20, LSR aabbccdd, DLSR 1 s (0x00010000).
RR_BYTES = bytes.fromhex("81c90007010203041122334440ffffff0001000500000020aabbccdd00010000")
SDES_BYTES = bytes.fromhex("81ca000501020304010a") + b"alice@host" + bytes(4)
BYE_BYTES = bytes.fromhex("81cb00020102030403") + b"bye"


def test_ntp_conversion_of_known_instants() -> None:
    """Unix 0 is NTP 2208988800.0; half a second is 0x80000000 in the fraction."""
    assert ntp_from_unix(0.0) == NTP_1970 << 32
    assert ntp_from_unix(1.5) == ((NTP_1970 + 1) << 32) | 0x80000000
    assert ntp_short(ntp_from_unix(1.5)) == (((NTP_1970 + 1) & 0xFFFF) << 16) | 0x8000
    assert unix_from_ntp(ntp_from_unix(1_700_000_000.25)) == pytest.approx(1_700_000_000.25)


def test_receiver_report_parses_field_by_field() -> None:
    """An RR with one report block, including a negative cumulative loss."""
    [rr] = parse_compound(RR_BYTES)
    assert isinstance(rr, ReceiverReport)
    assert rr.ssrc == 0x01020304
    assert rr.reports == (ReportBlock(0x11223344, 0x40, -1, 0x10005, 0x20, 0xAABBCCDD, 0x10000),)
    assert bytes(rr) == RR_BYTES


def test_sdes_cname_is_padded_to_a_word_with_a_null_item() -> None:
    """SDES with one CNAME chunk serialises to the hand-built bytes and back."""
    sdes = SourceDescription.cname_for(0x01020304, "alice@host")
    assert bytes(sdes) == SDES_BYTES
    [parsed] = parse_compound(SDES_BYTES)
    assert isinstance(parsed, SourceDescription)
    assert parsed.chunks[0].cname == "alice@host"
    assert parsed == sdes


def test_bye_with_reason() -> None:
    """BYE carries the leaving SSRCs and a length-prefixed reason."""
    assert bytes(Bye((0x01020304,), "bye")) == BYE_BYTES
    assert parse_compound(BYE_BYTES) == [Bye((0x01020304,), "bye")]
    assert parse_compound(bytes(Bye((1, 2)))) == [Bye((1, 2))]


def test_compound_sr_sdes_bye_round_trips() -> None:
    """A compound datagram keeps its packets and their order; unknown types are kept raw."""
    sr = SenderReport(
        ssrc=7,
        ntp_timestamp=ntp_from_unix(1000.0),
        rtp_timestamp=123456,
        packet_count=50,
        octet_count=8000,
        reports=(ReportBlock(9, 12, 300, 70000, 15, 1, 2), ReportBlock(10, cumulative_lost=-5)),
    )
    app = RtcpUnknown(204, 1, struct.pack("!I", 7) + b"name" + b"data")
    packets = [sr, SourceDescription.cname_for(7, "x@y"), app, Bye((7,))]
    data = build_compound(packets)
    assert parse_compound(data) == packets
    assert len(bytes(sr)) == 28 + 2 * 24


def test_multi_item_sdes_chunks() -> None:
    """Several chunks and items are parsed, each chunk ending on a word boundary."""
    sdes = SourceDescription(
        (SdesChunk(1, ((1, b"a@b"), (2, b"Alice"))), SdesChunk(2, ((1, b"cc@d"),)))
    )
    assert parse_compound(bytes(sdes)) == [sdes]
    assert sdes.chunks[1].cname == "cc@d"
    assert SdesChunk(3, ((2, b"n"),)).cname is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x81\xc9", "shorter than a header"),
        (bytes.fromhex("41c90001") + bytes(4), "version is 1"),
        (bytes.fromhex("81c90009") + bytes(8), "beyond the end"),
        (bytes.fromhex("81c90001") + bytes(4), "truncated"),
        (bytes.fromhex("80c80001") + bytes(4), "SR"),
        (bytes.fromhex("81ca0002") + bytes.fromhex("000000010105") + b"ab", "overruns"),
        (bytes.fromhex("81ca0001") + bytes.fromhex("00000001"), "no terminating"),
        (bytes.fromhex("a0c90001") + bytes.fromhex("00000009"), "padding"),
        (bytes.fromhex("80c900"), "shorter"),
        (RR_BYTES + b"\x81", "trailing"),
    ],
)
def test_malformed_rtcp_raises_parse_errors(data: bytes, why: str) -> None:
    """Every length is checked before it is read."""
    with pytest.raises(RtpParseError, match=why):
        parse_compound(data)


def test_padding_is_stripped() -> None:
    """A padded RR parses as the unpadded one."""
    padded = bytes.fromhex("a1c90008") + RR_BYTES[4:] + bytes.fromhex("00000004")
    assert parse_compound(padded) == parse_compound(RR_BYTES)


def test_report_block_range_checks() -> None:
    """Cumulative loss is a signed 24-bit field and fraction an 8-bit one."""
    with pytest.raises(MediaValueError):
        ReportBlock(1, cumulative_lost=1 << 23)
    with pytest.raises(MediaValueError):
        ReportBlock(1, fraction_lost=256)
    assert ReportBlock(1, cumulative_lost=-(1 << 23)).cumulative_lost == -(1 << 23)


# --- reception statistics ----------------------------------------------------


def _feed(stats: ReceptionStats, seqs: list[int], ts_step: int = 160) -> None:
    for i, seq in enumerate(seqs):
        stats.update(seq, seq * ts_step, i * 0.02)


def test_probation_needs_two_sequential_packets() -> None:
    """A.1: the first packet is not counted; the second in sequence validates the source."""
    stats = ReceptionStats(ssrc=1)
    assert stats.update(10, 0, 0.0) is False
    assert stats.update(11, 160, 0.02) is True
    assert (stats.received, stats.expected, stats.base_seq) == (1, 1, 11)

    wobbly = ReceptionStats(ssrc=2)
    assert wobbly.update(10, 0, 0.0) is False
    assert wobbly.update(50, 0, 0.0) is False  # not sequential: probation restarts
    assert wobbly.update(51, 0, 0.0) is True


def test_loss_and_fraction_lost_over_intervals() -> None:
    """A.3: 2 of 9 expected lost gives 56/256; the next interval is computed afresh."""
    stats = ReceptionStats(ssrc=1)
    _feed(stats, [0, 1, 2, 4, 5, 6, 8, 9])
    assert (stats.expected, stats.received, stats.lost) == (9, 7, 2)
    assert stats.fraction_lost() == (2 << 8) // 9 == 56
    assert stats.fraction_lost() == 0  # nothing new
    for seq in (10, 11, 13):
        stats.update(seq, seq * 160, seq * 0.02)
    block = stats.report_block(now=1.0)
    assert block.fraction_lost == 64  # 1 of 4
    assert block.cumulative_lost == 3
    assert block.highest_sequence == 13


def test_extended_sequence_counts_wrap_cycles() -> None:
    """A.1: crossing 65535 -> 0 adds a cycle; a hole across the wrap is one loss."""
    stats = ReceptionStats(ssrc=1)
    _feed(stats, [65530, 65531, 65532, 65533, 65534, 0, 1, 2, 3, 4, 5])
    assert stats.cycles == 1 << 16
    assert stats.extended_max == 0x10005
    assert (stats.expected, stats.received, stats.lost) == (11, 10, 1)
    assert stats.report_block(0.0).highest_sequence == 0x00010005


def test_duplicates_make_cumulative_loss_negative() -> None:
    """Received beyond expected is reported as a negative loss, encoded in 24 bits."""
    stats = ReceptionStats(ssrc=1)
    _feed(stats, [0, 1, 2, 3, 4, 5, 3])
    assert stats.lost == -1
    block = stats.report_block(0.0)
    assert bytes(block)[5:8] == b"\xff\xff\xff"
    assert block.fraction_lost == 0


def test_sequence_restart_is_accepted_after_two_packets() -> None:
    """A.1: a big jump is dropped once, then two sequential packets re-initialise."""
    stats = ReceptionStats(ssrc=1)
    _feed(stats, [100, 101, 102])
    assert stats.update(40000, 0, 1.0) is False
    assert stats.update(40001, 160, 1.02) is True
    assert (stats.base_seq, stats.received, stats.expected) == (40001, 1, 1)


def test_interarrival_jitter_matches_a_hand_computation() -> None:
    """A.8: J += (|D| - J)/16 in timestamp units over transit differences."""
    stats = ReceptionStats(ssrc=1, clock_rate=8000)
    arrivals = [0.0, 0.020, 0.045, 0.060, 0.080]  # transits (from 2nd): 0, 40, 0, 0
    for seq, arrival in enumerate(arrivals):
        stats.update(seq, seq * 160, arrival)
    j = 0.0
    j += (40 - j) / 16  # 2.5
    j += (40 - j) / 16  # 4.84375
    j += (0 - j) / 16  # 4.541015625
    assert stats.jitter == pytest.approx(j) == pytest.approx(4.541015625)
    assert stats.report_block(1.0).jitter == 4


def test_jitter_is_unaffected_by_timestamp_wrap() -> None:
    """A perfectly paced stream across the 32-bit timestamp wrap has zero jitter."""
    stats = ReceptionStats(ssrc=1, min_sequential=0)
    start = 0xFFFFFF00
    for i in range(6):
        stats.update(i, (start + 160 * i) & 0xFFFFFFFF, 5.0 + 0.02 * i)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    """§6.4.1: RTT = A - LSR - DLSR; SR at t=1000, held 0.5 s, report back at 1000.75."""
    peer = ReceptionStats(ssrc=0xCAFE)
    peer.on_sender_report(ntp_from_unix(1000.0), arrival=5000.0)  # peer's own clock
    block = peer.report_block(now=5000.5)
    assert block.dlsr == 32768
    assert block.lsr == ntp_short(ntp_from_unix(1000.0))
    assert round_trip_time(block, arrival=1000.75) == pytest.approx(0.25)
    hand = ReportBlock(0xCAFE, lsr=ntp_short(ntp_from_unix(1000.0)), dlsr=0x00010000)
    assert round_trip_time(hand, arrival=1001.125) == pytest.approx(0.125)


def test_round_trip_time_is_unknown_without_an_sr() -> None:
    """LSR 0 means the peer has had no SR from us yet; skew below zero reports 0."""
    assert round_trip_time(ReportBlock(1), arrival=1000.0) is None
    early = ReportBlock(1, lsr=ntp_short(ntp_from_unix(1000.0)), dlsr=65536)
    assert round_trip_time(early, arrival=1000.5) == 0.0
