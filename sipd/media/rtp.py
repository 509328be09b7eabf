"""RTP packets (RFC 3550 §5), wrap-around arithmetic and a sans-I/O packetiser.

Why sans-I/O: the packet codec and the sender's sequence/timestamp bookkeeping
are pure functions of their inputs, so they are tested byte for byte without
sockets; the media ``DatagramProtocol`` only moves the bytes.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from sipd.errors import MediaValueError, RtpParseError

__all__ = [
    "RTP_HEADER_SIZE",
    "RtpExtension",
    "RtpPacket",
    "RtpSender",
    "is_rtcp",
    "seq_add",
    "seq_diff",
    "seq_gt",
    "ts_add",
    "ts_diff",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` modulo 2**16."""
    return (seq + n) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_gt(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes after ``b`` (RFC 1982 style)."""
    return seq_diff(a, b) > 0


def ts_add(ts: int, n: int) -> int:
    """``ts + n`` modulo 2**32."""
    return (ts + n) & 0xFFFFFFFF


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 32-bit RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def is_rtcp(data: bytes) -> bool:
    """True when a datagram on a muxed RTP/RTCP port is RTCP (RFC 5761 §4).

    RTCP packet types live in 192..223 (SR=200 … APP=204, feedback 205/206,
    XR 207); RTP payload types 64..95 with the marker bit would collide, which
    is why RFC 5761 forbids those payload types on muxed sessions.
    """
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise MediaValueError(f"RTP {name} must fit in {bits} bits, got {value}")


@dataclass(slots=True, frozen=True)
class RtpExtension:
    """A header extension (RFC 3550 §5.3.1): a profile id and whole 32-bit words."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_range("extension profile", self.profile, 16)
        if len(self.data) % 4 or len(self.data) > 0xFFFF * 4:
            raise MediaValueError(
                f"RTP extension data must be whole 32-bit words, got {len(self.data)} bytes"
            )


@dataclass(slots=True, frozen=True)
class RtpPacket:
    """One RTP packet. ``padding`` is the number of padding octets (0 = none)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        _check_range("payload type", self.payload_type, 7)
        _check_range("sequence number", self.sequence, 16)
        _check_range("timestamp", self.timestamp, 32)
        _check_range("SSRC", self.ssrc, 32)
        if len(self.csrc) > 15:
            raise MediaValueError(f"an RTP packet carries at most 15 CSRCs, got {len(self.csrc)}")
        for c in self.csrc:
            _check_range("CSRC", c, 32)
        _check_range("padding length", self.padding, 8)

    @staticmethod
    def parse_simple(data: bytes) -> tuple[int, bool, int, int, int, bytes] | None:
        """Fast path for the common packet (version 2, no padding, extension or CSRC).

        Returns ``(payload_type, marker, sequence, timestamp, ssrc, payload)``,
        or None when the packet needs the full :meth:`parse`.
        """
        if len(data) < RTP_HEADER_SIZE or data[0] != 0x80:
            return None
        _, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        return b1 & 0x7F, bool(b1 & 0x80), sequence, timestamp, ssrc, data[RTP_HEADER_SIZE:]

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP datagram, checking every length before reading it."""
        if len(data) < RTP_HEADER_SIZE:
            raise RtpParseError(f"RTP packet is {len(data)} bytes, shorter than the 12-byte header")
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RtpParseError(f"RTP version is {b0 >> 6}, expected 2")
        end = len(data)
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or padding > end - RTP_HEADER_SIZE:
                raise RtpParseError(f"RTP padding count {padding} does not fit a {end}-byte packet")
            end -= padding
        pos = RTP_HEADER_SIZE
        cc = b0 & 0x0F
        if pos + 4 * cc > end:
            raise RtpParseError(f"RTP packet too short for its {cc} CSRC(s)")
        csrc = struct.unpack_from(f"!{cc}I", data, pos)
        pos += 4 * cc
        extension = None
        if b0 & 0x10:
            if pos + 4 > end:
                raise RtpParseError("RTP packet too short for its header extension")
            profile, words = _EXT_HEADER.unpack_from(data, pos)
            pos += 4
            if pos + 4 * words > end:
                raise RtpParseError(f"RTP header extension of {words} words overruns the packet")
            extension = RtpExtension(profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension
            parts.append(_EXT_HEADER.pack(ext.profile, len(ext.data) // 4) + ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


class RtpSender:
    """Sans-I/O packetiser for one outgoing RTP stream.

    SSRC, first sequence number and first timestamp are random unless given,
    as RFC 3550 §5.1 asks (it makes known-plaintext attacks on encryption
    harder and lets receivers spot restarts). The marker bit is set on the
    first packet and on the first packet after :meth:`resume` (a talkspurt
    start, RFC 3551 §4.1). Packet and octet counts feed the RTCP sender report.
    """

    def __init__(
        self,
        payload_type: int,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        _check_range("payload type", payload_type, 7)
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.sequence = secrets.randbits(16) if sequence is None else sequence
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp
        _check_range("SSRC", self.ssrc, 32)
        _check_range("sequence number", self.sequence, 16)
        _check_range("timestamp", self.timestamp, 32)
        self.packet_count = 0
        self.octet_count = 0
        self.last_timestamp: int | None = None
        self._marker = True

    def packetize(self, payload: bytes, samples: int = 160) -> RtpPacket:
        """Wrap one frame's payload; then advance the timestamp by ``samples``."""
        packet = self.packet_at(
            payload, timestamp=self.timestamp, payload_type=self.payload_type, marker=self._marker
        )
        self._marker = False
        self.advance(samples)
        return packet

    def packetize_bytes(self, payload: bytes, samples: int = 160) -> bytes:
        """Like :meth:`packetize`, straight to wire bytes (the per-packet hot path).

        Builds the fixed 12-byte header with one ``struct.pack``; every field
        comes from this sender's own state, so it needs no validation.
        """
        b1 = self.payload_type | (0x80 if self._marker else 0)
        self._marker = False
        ts = self.timestamp
        data = _HEADER.pack(0x80, b1, self.sequence, ts, self.ssrc) + payload
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packet_count = (self.packet_count + 1) & 0xFFFFFFFF
        self.octet_count = (self.octet_count + len(payload)) & 0xFFFFFFFF
        self.last_timestamp = ts
        self.timestamp = (ts + samples) & 0xFFFFFFFF
        return data

    def packet_at(
        self, payload: bytes, *, timestamp: int, payload_type: int, marker: bool = False
    ) -> RtpPacket:
        """Build the next packet of this stream with an explicit timestamp and type.

        Used for RFC 4733 events, which share the sequence space of the audio
        but keep the event's start timestamp on every packet. The stream's own
        timestamp is not moved.
        """
        packet = RtpPacket(
            payload_type=payload_type,
            sequence=self.sequence,
            timestamp=timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=marker,
        )
        self.sequence = seq_add(self.sequence, 1)
        self.packet_count = (self.packet_count + 1) & 0xFFFFFFFF
        self.octet_count = (self.octet_count + len(payload)) & 0xFFFFFFFF
        self.last_timestamp = timestamp
        return packet

    def advance(self, samples: int) -> None:
        """Move the media clock on by ``samples`` without sending (silence, events)."""
        if samples < 0:
            raise MediaValueError(f"the RTP clock cannot go back by {samples} samples")
        self.timestamp = ts_add(self.timestamp, samples)

    def resume(self, elapsed_samples: int = 0) -> None:
        """Start a new talkspurt after a pause of ``elapsed_samples``: next packet is marked."""
        self.advance(elapsed_samples)
        self._marker = True
