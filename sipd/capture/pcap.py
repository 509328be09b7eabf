"""A call's records as a classic pcap file that Wireshark, tshark and sngrep open.

The file is built from what sipd recorded at its transport edge, not from a
packet capture, so the frames are synthesised around the recorded bytes:

* link type Ethernet (``LINKTYPE_ETHERNET``) with fixed, locally administered
  MAC addresses (``02:00:00:00:00:01`` for sipd's side, ``…:02`` for the
  peer): every reader, sngrep included, knows Ethernet;
* IPv4 or IPv6 from the record's addresses (a mixed pair is written as IPv6
  with the IPv4 address mapped), with valid header checksums;
* UDP datagrams for SIP over UDP and for RTP/RTCP;
* for SIP over TCP and TLS, TCP segments (PSH+ACK, no handshake) with one
  sequence number space per connection and direction, so tshark's
  SIP-over-TCP reassembly follows them; a message longer than one MSS is cut
  into several segments as the wire would have carried it.

**TLS is not reproduced**: a TLS message is written as the plain SIP it
carried, on the TCP connection's ports (usually 5061), which is what a
reader of the capture wants to see. Point Wireshark's SIP dissector at that
port (``-d tcp.port==5061,sip``) if it tries to read it as TLS.

Records are written in time order (a stable sort, so records with equal
times keep the order given): pass a call's SIP and RTP records together.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Iterable

from sipd.capture.records import Address, Direction, RtpRecord, WireMessage

__all__ = ["LINKTYPE_ETHERNET", "PCAP_CONTENT_TYPE", "pcap_bytes"]

#: The media type of a pcap file (for a download's Content-Type).
PCAP_CONTENT_TYPE = "application/vnd.tcpdump.pcap"
#: pcap's link-layer header type for Ethernet II frames.
LINKTYPE_ETHERNET = 1
_MAGIC = 0xA1B2C3D4  # microsecond timestamps
_SNAPLEN = 262144
_MAC_LOCAL = bytes.fromhex("020000000001")
_MAC_REMOTE = bytes.fromhex("020000000002")
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_UDP = 17
_TCP = 6
_TCP_PSH_ACK = 0x18
#: Payload bytes per TCP segment (1500-byte MTU less the IP and TCP headers).
_MSS_V4 = 1460
_MSS_V6 = 1440

Record = WireMessage | RtpRecord
_Packed = tuple[bytes, bytes]  # (source, destination) as 4 or 16 bytes


def pcap_bytes(records: Iterable[Record]) -> bytes:
    """The pcap file (global header and one frame per datagram or segment)."""
    out = [struct.pack("<IHHiIII", _MAGIC, 2, 4, 0, 0, _SNAPLEN, LINKTYPE_ETHERNET)]
    writer = _Writer()
    for record in sorted(records, key=lambda r: r.time):
        for frame in writer.frames(record):
            seconds, micros = _timestamp(record.time)
            out.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
            out.append(frame)
    return b"".join(out)


class _Writer:
    """Frames for records, keeping each TCP connection's sequence numbers."""

    def __init__(self) -> None:
        # (source, destination) -> the next sequence number that direction sends.
        self._next_seq: dict[tuple[Address, Address], int] = {}
        self._ip_id = 0

    def frames(self, record: Record) -> list[bytes]:
        src, dst = record.source, record.destination
        packed = _addresses(src[0], dst[0])
        outbound = record.direction is Direction.OUT
        stream = isinstance(record, WireMessage) and record.transport in ("tcp", "tls")
        if not stream:
            udp = _udp(packed, src[1], dst[1], record.data)
            return [self._frame(packed, _UDP, udp, outbound)]
        mss = _MSS_V4 if len(packed[0]) == 4 else _MSS_V6
        seq = self._seq(src, dst)
        ack = self._seq(dst, src)
        frames = []
        data = record.data
        for start in range(0, max(len(data), 1), mss):
            chunk = data[start : start + mss]
            tcp = _tcp(packed, src[1], dst[1], seq, ack, chunk)
            frames.append(self._frame(packed, _TCP, tcp, outbound))
            seq = (seq + len(chunk)) & 0xFFFFFFFF
        self._next_seq[(src, dst)] = seq
        return frames

    def _seq(self, src: Address, dst: Address) -> int:
        key = (src, dst)
        seq = self._next_seq.get(key)
        if seq is None:
            # A fixed initial number per direction: the same records give the same file.
            seq = self._next_seq[key] = zlib.crc32(repr(key).encode())
        return seq

    def _frame(self, packed: _Packed, proto: int, payload: bytes, outbound: bool) -> bytes:
        src, dst = packed
        macs = _MAC_REMOTE + _MAC_LOCAL if outbound else _MAC_LOCAL + _MAC_REMOTE
        if len(src) == 4:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            header = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), self._ip_id, 0x4000, 64, proto, 0,
                src, dst,
            )  # fmt: skip
            checksum = _checksum(header)
            header = header[:10] + struct.pack("!H", checksum) + header[12:]
            return macs + struct.pack("!H", _ETHERTYPE_IPV4) + header + payload
        header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, 64, src, dst)
        return macs + struct.pack("!H", _ETHERTYPE_IPV6) + header + payload


def _udp(packed: _Packed, sport: int, dport: int, data: bytes) -> bytes:
    length = 8 + len(data)
    if length > 0xFFFF:
        raise ValueError(f"a {len(data)}-byte datagram does not fit in one UDP packet")
    header = struct.pack("!HHHH", sport, dport, length, 0)
    checksum = _checksum(_pseudo(packed, _UDP, length) + header + data) or 0xFFFF
    return header[:6] + struct.pack("!H", checksum) + data


def _tcp(packed: _Packed, sport: int, dport: int, seq: int, ack: int, data: bytes) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, _TCP_PSH_ACK, 65535, 0, 0)
    checksum = _checksum(_pseudo(packed, _TCP, len(header) + len(data)) + header + data)
    return header[:16] + struct.pack("!H", checksum) + header[18:] + data


def _pseudo(packed: _Packed, proto: int, length: int) -> bytes:
    """The pseudo-header the UDP/TCP checksum covers (RFC 768, RFC 8200 §8.1)."""
    src, dst = packed
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _addresses(src: str, dst: str) -> _Packed:
    """Both addresses packed, as IPv4 when both are IPv4, else as IPv6."""
    a, b = _ip(src), _ip(dst)
    if a.version == b.version:
        return a.packed, b.packed
    return _v6(a).packed, _v6(b).packed


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of a record; a name or garbage becomes the unspecified address
    (a capture is still worth downloading when one record's address is odd)."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return ipaddress.IPv6Address("::") if ":" in text else ipaddress.IPv4Address("0.0.0.0")


def _v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address("::ffff:" + str(address))


def _timestamp(when: float) -> tuple[int, int]:
    seconds = int(when)
    micros = round((when - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return max(seconds, 0), max(micros, 0)
