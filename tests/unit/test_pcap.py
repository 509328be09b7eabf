"""sipd.capture.pcap: the byte layout of the pcap files, checked field by field.

The pcap global header and record headers (little-endian, microseconds),
Ethernet II with the fixed MACs, IPv4/IPv6 headers with valid checksums,
UDP datagrams and TCP segments whose sequence numbers follow each
connection's bytes in each direction.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct

from sipd.capture.pcap import LINKTYPE_ETHERNET, pcap_bytes
from sipd.capture.records import Direction, RtpRecord, WireMessage

INVITE = b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nCall-ID: abc\r\nContent-Length: 0\r\n\r\n"
OK = b"SIP/2.0 200 OK\r\nCall-ID: abc\r\nContent-Length: 0\r\n\r\n"
LOCAL = ("127.0.0.1", 5060)
REMOTE = ("127.0.0.2", 5070)


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(seconds, microseconds, frame) of each record; checks the lengths agree."""
    out, offset = [], 24
    while offset < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, offset)
        assert incl == orig
        offset += 16
        out.append((sec, usec, data[offset : offset + incl]))
        offset += incl
    assert offset == len(data)
    return out


def internet_checksum_ok(data: bytes) -> bool:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_the_global_header_is_classic_pcap_with_ethernet() -> None:
    data = pcap_bytes([])
    assert len(data) == 24
    magic, major, minor, zone, sigfigs, snaplen, link = struct.unpack("<IHHiIII", data)
    assert (magic, major, minor, zone, sigfigs) == (0xA1B2C3D4, 2, 4, 0, 0)
    assert snaplen >= 65535
    assert link == LINKTYPE_ETHERNET == 1


def test_a_udp_message_is_ethernet_ipv4_udp_with_valid_checksums() -> None:
    record = WireMessage(1700000000.25, Direction.OUT, "udp", LOCAL, REMOTE, INVITE, "abc")
    [(sec, usec, frame)] = frames(pcap_bytes([record]))
    assert (sec, usec) == (1700000000, 250000)
    # Ethernet: destination (the peer's MAC) then source (ours), IPv4.
    assert frame[0:6] == bytes.fromhex("020000000002")
    assert frame[6:12] == bytes.fromhex("020000000001")
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert ip[0] == 0x45
    assert struct.unpack("!H", ip[2:4])[0] == 20 + 8 + len(INVITE)
    assert ip[9] == 17  # UDP
    assert ip[12:16] == bytes([127, 0, 0, 1]) and ip[16:20] == bytes([127, 0, 0, 2])
    assert internet_checksum_ok(ip)
    udp = frame[34:]
    sport, dport, length, _ = struct.unpack("!HHHH", udp[:8])
    assert (sport, dport, length) == (5060, 5070, 8 + len(INVITE))
    assert udp[8:] == INVITE
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, length)
    assert internet_checksum_ok(pseudo + udp)


def test_an_incoming_message_goes_from_the_remote_side() -> None:
    record = WireMessage(1.0, Direction.IN, "udp", LOCAL, REMOTE, OK)
    [(_, _, frame)] = frames(pcap_bytes([record]))
    assert frame[0:6] == bytes.fromhex("020000000001")  # to us
    assert frame[26:30] == bytes([127, 0, 0, 2])  # IPv4 source: the peer
    assert struct.unpack("!HH", frame[34:38]) == (5070, 5060)


def test_ipv6_records_get_an_ipv6_header() -> None:
    record = RtpRecord(2.5, Direction.OUT, ("::1", 40000), ("::1", 40002), b"\x80" + bytes(171))
    [(_, _, frame)] = frames(pcap_bytes([record]))
    assert frame[12:14] == b"\x86\xdd"
    ip = frame[14:54]
    assert ip[0] >> 4 == 6
    assert struct.unpack("!H", ip[4:6])[0] == 8 + 172  # payload length
    assert ip[6] == 17
    assert ipaddress.IPv6Address(ip[8:24]) == ipaddress.IPv6Address("::1")
    udp = frame[54:]
    pseudo = ip[8:40] + struct.pack("!I3xB", len(udp), 17)
    assert internet_checksum_ok(pseudo + udp)
    assert struct.unpack("!H", udp[6:8])[0] != 0  # mandatory over IPv6


def test_a_mixed_pair_is_written_as_ipv6_with_the_ipv4_address_mapped() -> None:
    record = WireMessage(1.0, Direction.IN, "udp", ("::", 5060), ("127.0.0.1", 5070), OK)
    [(_, _, frame)] = frames(pcap_bytes([record]))
    assert frame[12:14] == b"\x86\xdd"
    assert ipaddress.IPv6Address(frame[22:38]) == ipaddress.IPv6Address("::ffff:127.0.0.1")


def test_tcp_sequence_numbers_follow_each_direction_of_a_connection() -> None:
    big = b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000
    records = [
        WireMessage(1.0, Direction.OUT, "tcp", LOCAL, REMOTE, INVITE),
        WireMessage(1.1, Direction.IN, "tcp", LOCAL, REMOTE, OK),
        WireMessage(1.2, Direction.OUT, "tls", LOCAL, REMOTE, big),
        WireMessage(1.3, Direction.IN, "tcp", LOCAL, REMOTE, OK),
    ]
    out = frames(pcap_bytes(records))
    # The 3,059-byte message is cut into segments of at most 1,460 bytes.
    assert len(out) == 1 + 1 + 3 + 1
    segments = []
    for _, _, frame in out:
        ip = frame[14:34]
        assert ip[9] == 6 and internet_checksum_ok(ip)
        tcp = frame[34:]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
        assert internet_checksum_ok(pseudo + tcp)
        sport, dport, seq, ack, offset, flags = struct.unpack("!HHIIBB", tcp[:14])
        assert offset >> 4 == 5 and flags == 0x18  # 20-byte header, PSH+ACK
        segments.append((sport, dport, seq, ack, tcp[20:]))
    ours = [s for s in segments if s[0] == 5060]
    theirs = [s for s in segments if s[0] == 5070]
    for stream in (ours, theirs):
        for before, after in itertools.pairwise(stream):
            assert after[2] == (before[2] + len(before[4])) & 0xFFFFFFFF
    assert b"".join(s[4] for s in ours) == INVITE + big
    assert max(len(s[4]) for s in ours) == 1460
    # Each segment acknowledges what the other side had sent before it.
    assert theirs[0][3] == (ours[0][2] + len(INVITE)) & 0xFFFFFFFF
    assert theirs[1][3] == (ours[-1][2] + len(ours[-1][4])) & 0xFFFFFFFF
    assert ours[1][3] == (theirs[0][2] + len(OK)) & 0xFFFFFFFF


def test_records_are_written_in_time_order_and_the_file_is_deterministic() -> None:
    late = WireMessage(5.0, Direction.IN, "udp", LOCAL, REMOTE, OK)
    early = WireMessage(4.0, Direction.OUT, "udp", LOCAL, REMOTE, INVITE)
    data = pcap_bytes([late, early])
    assert [f[2][42:] for f in frames(data)] == [INVITE, OK]
    assert data == pcap_bytes([late, early])


def test_a_timestamp_that_rounds_up_carries_into_the_seconds() -> None:
    record = WireMessage(9.9999996, Direction.OUT, "udp", LOCAL, REMOTE, INVITE)
    [(sec, usec, _)] = frames(pcap_bytes([record]))
    assert (sec, usec) == (10, 0)
