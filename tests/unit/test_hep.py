"""sipd.capture.hep: HEP v3 packets against a layout written out by hand.

The expected bytes below are spelled chunk by chunk from the HEP v3 layout
(vendor 0; type; length including the 6-byte chunk header; value, network
byte order), not produced by the encoder under test.
"""

from __future__ import annotations

import struct

import pytest

from sipd.capture.hep import HepError, HepSender, hep3_packet, parse_hep_address
from sipd.capture.records import Direction, RtpRecord, WireMessage

MESSAGE = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nCall-ID: c1\r\n\r\n"


def test_an_ipv4_udp_sip_message_matches_the_hand_written_layout() -> None:
    record = WireMessage(
        1700000000.5, Direction.OUT, "udp", ("127.0.0.1", 5060), ("10.0.0.2", 5070), MESSAGE, "c1"
    )
    expected_chunks = (
        bytes.fromhex("0000 0001 0007 02")  # IP family: IPv4
        + bytes.fromhex("0000 0002 0007 11")  # protocol: UDP (17)
        + bytes.fromhex("0000 0003 000a 7f000001")  # source 127.0.0.1 (we sent it)
        + bytes.fromhex("0000 0004 000a 0a000002")  # destination 10.0.0.2
        + bytes.fromhex("0000 0007 0008 13c4")  # source port 5060
        + bytes.fromhex("0000 0008 0008 13ce")  # destination port 5070
        + bytes.fromhex("0000 0009 000a 6553f100")  # 1700000000 s
        + bytes.fromhex("0000 000a 000a 0007a120")  # 500000 µs
        + bytes.fromhex("0000 000b 0007 01")  # protocol type: SIP
        + bytes.fromhex("0000 000c 000a 000007d1")  # capture agent 2001
        + bytes.fromhex("0000 000f") + struct.pack("!H", 6 + len(MESSAGE)) + MESSAGE
        + bytes.fromhex("0000 0011 0008") + b"c1"  # correlation id: the Call-ID
    )  # fmt: skip
    expected = b"HEP3" + struct.pack("!H", 6 + len(expected_chunks)) + expected_chunks
    assert hep3_packet(record, 2001) == expected


def test_an_incoming_ipv6_tcp_message_uses_the_ipv6_chunks_and_the_given_correlation() -> None:
    record = WireMessage(
        10.000001, Direction.IN, "tls", ("::1", 5061), ("2001:db8::7", 40000), b"x"
    )
    packet = hep3_packet(record, 1, correlation_id="leg-a")
    chunks = _chunks(packet)
    assert chunks[1] == b"\x0a"  # IPv6
    assert chunks[2] == b"\x06"  # TCP
    assert chunks[5] == bytes.fromhex("20010db8000000000000000000000007")  # source: the peer
    assert chunks[6] == bytes(15) + b"\x01"
    assert struct.unpack("!H", chunks[7])[0] == 40000
    assert struct.unpack("!H", chunks[8])[0] == 5061
    assert struct.unpack("!I", chunks[10])[0] == 1
    assert chunks[17] == b"leg-a"
    assert 3 not in chunks and 4 not in chunks


def test_an_rtp_record_is_protocol_type_4_without_a_correlation_id() -> None:
    record = RtpRecord(1.0, Direction.OUT, ("127.0.0.1", 40000), ("127.0.0.1", 40002), b"\x80")
    chunks = _chunks(hep3_packet(record, 7))
    assert chunks[11] == b"\x04"
    assert chunks[15] == b"\x80"
    assert 17 not in chunks


def test_a_message_too_big_for_one_packet_is_refused_clearly() -> None:
    record = WireMessage(
        1.0, Direction.OUT, "tcp", ("127.0.0.1", 1), ("127.0.0.1", 2), bytes(70000)
    )
    with pytest.raises(HepError, match="does not fit"):
        hep3_packet(record, 1)


def test_hep_addresses_parse_and_bad_ones_say_how_to_write_them() -> None:
    assert parse_hep_address("127.0.0.1:9060") == ("127.0.0.1", 9060)
    assert parse_hep_address("[::1]:9060") == ("::1", 9060)
    for bad in ("127.0.0.1", "host:", ":9060", "1.2.3.4:99999"):
        with pytest.raises(HepError, match="host:port"):
            parse_hep_address(bad)


def test_a_record_that_cannot_be_encoded_is_counted_not_raised() -> None:
    from twisted.internet import reactor

    sender = HepSender(reactor, ("127.0.0.1", 9), node_id=1)
    try:
        odd = WireMessage(1.0, Direction.OUT, "udp", ("not an ip", 1), ("127.0.0.1", 2), b"x")
        sender.send(odd)
        assert (sender.sent, sender.errors) == (0, 1)
    finally:
        sender.close()


def _chunks(packet: bytes) -> dict[int, bytes]:
    assert packet[:4] == b"HEP3"
    assert struct.unpack("!H", packet[4:6])[0] == len(packet)
    chunks, offset = {}, 6
    while offset < len(packet):
        vendor, kind, length = struct.unpack_from("!HHH", packet, offset)
        assert vendor == 0 and length >= 6
        chunks[kind] = packet[offset + 6 : offset + length]
        offset += length
    assert offset == len(packet)
    return chunks
