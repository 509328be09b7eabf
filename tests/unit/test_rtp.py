"""RTP packets (RFC 3550 §5), wrap-around helpers and the packetiser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipd.errors import MediaValueError, RtpParseError, SipdError
from sipd.media.rtp import (
    RtpExtension,
    RtpPacket,
    RtpSender,
    is_rtcp,
    seq_add,
    seq_diff,
    seq_gt,
    ts_add,
    ts_diff,
)

# A PCMU packet as it appears on the wire: V=2, PT 0, seq 0x1234, ts 0xa0, SSRC deadbeef.
PCMU_PACKET = bytes.fromhex("80001234000000a0deadbeef") + b"\xff" * 160


def test_parses_a_plain_pcmu_packet() -> None:
    """A minimal header is decoded field by field."""
    p = RtpPacket.parse(PCMU_PACKET)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc) == (0, 0x1234, 0xA0, 0xDEADBEEF)
    assert p.marker is False
    assert p.payload == b"\xff" * 160
    assert (p.csrc, p.extension, p.padding) == ((), None, 0)


def test_serialises_back_to_the_same_bytes() -> None:
    """parse then bytes() reproduces the datagram exactly."""
    assert bytes(RtpPacket.parse(PCMU_PACKET)) == PCMU_PACKET


def test_parses_marker_csrc_extension_and_padding() -> None:
    """All optional header parts are decoded and padding is stripped."""
    data = (
        bytes([0x80 | 0x20 | 0x10 | 2, 0x80 | 101])
        + bytes.fromhex("ffff0000032001020304")
        + bytes.fromhex("0000001100000022")  # two CSRCs
        + bytes.fromhex("bede000110aa0000")  # one-word extension
        + b"\x01\x02\x03\x04"  # payload
        + b"\x00\x00\x03"  # three padding octets
    )
    p = RtpPacket.parse(data)
    assert p.marker is True
    assert p.payload_type == 101
    assert p.sequence == 0xFFFF
    assert p.timestamp == 800
    assert p.csrc == (0x11, 0x22)
    assert p.extension == RtpExtension(0xBEDE, bytes.fromhex("10aa0000"))
    assert p.payload == b"\x01\x02\x03\x04"
    assert p.padding == 3
    assert bytes(p) == data


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x80\x00\x00", "shorter"),
        (bytes.fromhex("40001234000000a0deadbeef"), "version is 1"),
        (bytes.fromhex("a0001234000000a0deadbeef") + b"\x00", "padding count 0"),
        (bytes.fromhex("a0001234000000a0deadbeef") + b"\x05", "padding count 5"),
        (bytes.fromhex("82001234000000a0deadbeef") + b"\x00" * 4, "2 CSRC"),
        (bytes.fromhex("90001234000000a0deadbeef") + b"\xbe", "header extension"),
        (
            bytes.fromhex("90001234000000a0deadbeef") + bytes.fromhex("bede0002") + b"\x00" * 4,
            "2 words",
        ),
    ],
)
def test_malformed_packets_raise_parse_errors(data: bytes, why: str) -> None:
    """Each length and the version are checked before anything is unpacked."""
    with pytest.raises(RtpParseError, match=why) as info:
        RtpPacket.parse(data)
    assert isinstance(info.value, SipdError)


def test_constructor_rejects_out_of_range_fields() -> None:
    """A packet that could not be serialised cannot be built."""
    with pytest.raises(MediaValueError):
        RtpPacket(payload_type=128, sequence=0, timestamp=0, ssrc=0)
    with pytest.raises(MediaValueError):
        RtpPacket(payload_type=0, sequence=65536, timestamp=0, ssrc=0)
    with pytest.raises(MediaValueError):
        RtpPacket(payload_type=0, sequence=0, timestamp=0, ssrc=0, csrc=tuple(range(16)))
    with pytest.raises(MediaValueError):
        RtpExtension(1, b"\x00\x00")


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension,
        profile=st.integers(0, 0xFFFF),
        data=st.integers(0, 4).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    padding=st.integers(0, 255),
)


@given(packets)
def test_any_packet_round_trips(packet: RtpPacket) -> None:
    """Serialising then parsing any valid packet gives it back unchanged."""
    assert RtpPacket.parse(bytes(packet)) == packet


def test_sequence_arithmetic_wraps_at_16_bits() -> None:
    """65535 + 1 is 0, and 0 comes after 65535."""
    assert seq_add(65535, 1) == 0
    assert seq_add(65530, 10) == 4
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 90) == 10
    assert seq_gt(2, 65534)
    assert not seq_gt(65534, 2)
    assert not seq_gt(7, 7)


def test_timestamp_arithmetic_wraps_at_32_bits() -> None:
    """Timestamps wrap modulo 2**32 and differences are signed."""
    assert ts_add(0xFFFFFF60, 160) == 0
    assert ts_diff(80, 0xFFFFFFB0) == 160
    assert ts_diff(0xFFFFFFB0, 80) == -160


def test_is_rtcp_separates_muxed_rtcp_from_rtp() -> None:
    """Packet types 200..204 (and the whole RFC 5761 RTCP range) are RTCP; audio is not."""
    for pt in range(200, 205):
        assert is_rtcp(bytes([0x80, pt, 0, 1]))
    assert not is_rtcp(PCMU_PACKET)
    assert not is_rtcp(bytes([0x80, 0x80 | 101]))  # marked telephone-event
    assert not is_rtcp(bytes([0x80]))
    assert not is_rtcp(bytes([0x00, 200]))  # wrong version


def test_sender_advances_sequence_and_timestamp_per_frame() -> None:
    """Each 160-sample payload takes the next sequence number and 160 timestamp units."""
    sender = RtpSender(0, ssrc=0x1234, sequence=65534, timestamp=0xFFFFFF00)
    sent = [sender.packetize(bytes([i]) * 160) for i in range(4)]
    assert [p.sequence for p in sent] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in sent] == [0xFFFFFF00, 0xFFFFFFA0, 0x40, 0xE0]
    assert {p.ssrc for p in sent} == {0x1234}
    assert {p.payload_type for p in sent} == {0}
    assert [p.marker for p in sent] == [True, False, False, False]
    assert (sender.packet_count, sender.octet_count) == (4, 640)


def test_sender_marks_the_first_packet_after_a_pause() -> None:
    """resume() sets the marker on the next packet and moves the clock over the pause."""
    sender = RtpSender(8, ssrc=1, sequence=10, timestamp=1000)
    sender.packetize(b"\xd5" * 160)
    sender.packetize(b"\xd5" * 160)
    sender.resume(elapsed_samples=800)
    after = sender.packetize(b"\xd5" * 160)
    following = sender.packetize(b"\xd5" * 160)
    assert after.marker and not following.marker
    assert after.sequence == 12
    assert after.timestamp == 1000 + 320 + 800


def test_sender_picks_random_initial_values() -> None:
    """SSRC, sequence and timestamp start random (RFC 3550 §5.1), so two senders differ."""
    a, b = RtpSender(0), RtpSender(0)
    assert (a.ssrc, a.sequence, a.timestamp) != (b.ssrc, b.sequence, b.timestamp)
    first = a.packetize(b"")
    assert first.sequence == seq_add(a.sequence, -1)
