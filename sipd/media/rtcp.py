"""RTCP packets (RFC 3550 §6) and receiver statistics (Appendix A), sans-I/O.

Why: RTCP is how each side learns loss, jitter and round-trip time of the
stream it sends. Packets are slotted dataclasses with ``parse``/``__bytes__``;
:class:`ReceptionStats` follows the appendix algorithms (A.1 sequence
validation, A.3 loss, A.8 jitter) with arrival time passed in, so it is
tested with hand-computed numbers and no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sipd.errors import MediaValueError, RtpParseError

__all__ = [
    "Bye",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpPacket",
    "RtcpUnknown",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "build_compound",
    "ntp_from_unix",
    "ntp_short",
    "parse_compound",
    "round_trip_time",
    "unix_from_ntp",
]

#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800
PT_SR, PT_RR, PT_SDES, PT_BYE = 200, 201, 202, 203
SDES_CNAME = 1

_HEADER = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IB3sIIII")
_SR_INFO = struct.Struct("!IQIII")


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for Unix time ``t``."""
    return round((t + NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    """Unix time for a 64-bit NTP timestamp."""
    return ntp / (1 << 32) - NTP_UNIX_OFFSET


def ntp_short(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 seconds): the LSR/DLSR unit."""
    return (ntp >> 16) & 0xFFFFFFFF


# --- packets -----------------------------------------------------------------


def _header(pt: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        body += bytes(4 - len(body) % 4)
    return _HEADER.pack(0x80 | count, pt, len(body) // 4) + body


@dataclass(slots=True, frozen=True)
class ReportBlock:
    """Reception report about one source (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fraction_lost <= 255:
            raise MediaValueError(f"fraction lost is 8-bit, got {self.fraction_lost}")
        if not -(1 << 23) <= self.cumulative_lost < (1 << 23):
            raise MediaValueError(f"cumulative lost is signed 24-bit, got {self.cumulative_lost}")

    @classmethod
    def parse(cls, data: bytes, pos: int = 0) -> ReportBlock:
        if pos + _BLOCK.size > len(data):
            raise RtpParseError("RTCP report block truncated")
        ssrc, fraction, lost, ext_seq, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        cumulative = int.from_bytes(lost, "big", signed=True)
        return cls(ssrc, fraction, cumulative, ext_seq, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = self.cumulative_lost.to_bytes(3, "big", signed=True)
        return _BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            lost,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


def _blocks(data: bytes, pos: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock.parse(data, pos + i * _BLOCK.size) for i in range(count))


@dataclass(slots=True, frozen=True)
class SenderReport:
    """SR (PT 200): what the sender sent, plus its reception reports."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SenderReport:
        if len(body) < _SR_INFO.size + count * _BLOCK.size:
            raise RtpParseError(f"RTCP SR with {count} report(s) is truncated")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        return cls(ssrc, ntp, rtp_ts, packets, octets, _blocks(body, _SR_INFO.size, count))

    def __bytes__(self) -> bytes:
        info = _SR_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        body = info + b"".join(bytes(r) for r in self.reports)
        return _header(PT_SR, len(self.reports), body)


@dataclass(slots=True, frozen=True)
class ReceiverReport:
    """RR (PT 201): reception reports from a participant that is not sending."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> ReceiverReport:
        if len(body) < 4 + count * _BLOCK.size:
            raise RtpParseError(f"RTCP RR with {count} report(s) is truncated")
        (ssrc,) = struct.unpack_from("!I", body)
        return cls(ssrc, _blocks(body, 4, count))

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _header(PT_RR, len(self.reports), body)


@dataclass(slots=True, frozen=True)
class SdesChunk:
    """The SDES items of one source: ``(item type, value)`` pairs."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None

    def __bytes__(self) -> bytes:
        out = bytearray(struct.pack("!I", self.ssrc))
        for kind, value in self.items:
            if len(value) > 255:
                raise MediaValueError(f"SDES item {kind} is {len(value)} bytes, max 255")
            out += bytes([kind, len(value)]) + value
        out += bytes(4 - len(out) % 4)  # the terminating null item plus word padding
        return bytes(out)


@dataclass(slots=True, frozen=True)
class SourceDescription:
    """SDES (PT 202): typically the CNAME that ties a source to a participant."""

    chunks: tuple[SdesChunk, ...] = ()

    @classmethod
    def cname_for(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls((SdesChunk(ssrc, ((SDES_CNAME, cname.encode()),)),))

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SourceDescription:
        chunks = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise RtpParseError("RTCP SDES chunk truncated")
            (ssrc,) = struct.unpack_from("!I", body, pos)
            pos += 4
            items = []
            while True:
                if pos >= len(body):
                    raise RtpParseError("RTCP SDES chunk has no terminating null item")
                kind = body[pos]
                if kind == 0:
                    pos = (pos + 4) & ~3  # skip the null item and pad to the word
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise RtpParseError("RTCP SDES item overruns the packet")
                length = body[pos + 1]
                items.append((kind, bytes(body[pos + 2 : pos + 2 + length])))
                pos += 2 + length
            chunks.append(SdesChunk(ssrc, tuple(items)))
        return cls(tuple(chunks))

    def __bytes__(self) -> bytes:
        return _header(PT_SDES, len(self.chunks), b"".join(bytes(c) for c in self.chunks))


@dataclass(slots=True, frozen=True)
class Bye:
    """BYE (PT 203): these sources are leaving, with an optional reason."""

    sources: tuple[int, ...]
    reason: str | None = None

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> Bye:
        if len(body) < 4 * count:
            raise RtpParseError(f"RTCP BYE with {count} source(s) is truncated")
        sources = struct.unpack_from(f"!{count}I", body)
        reason = None
        pos = 4 * count
        if pos < len(body):
            length = body[pos]
            if pos + 1 + length > len(body):
                raise RtpParseError("RTCP BYE reason overruns the packet")
            reason = body[pos + 1 : pos + 1 + length].decode("utf-8", "replace")
        return cls(tuple(sources), reason)

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason is not None:
            text = self.reason.encode()[:255]
            body += bytes([len(text)]) + text
        return _header(PT_BYE, len(self.sources), body)


@dataclass(slots=True, frozen=True)
class RtcpUnknown:
    """Any other RTCP packet type (APP, feedback, XR), kept as raw body bytes."""

    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _header(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP datagram into its packets (RFC 3550 §6.1)."""
    packets: list[RtcpPacket] = []
    pos = 0
    if len(data) < 4:
        raise RtpParseError(f"RTCP datagram of {len(data)} bytes is shorter than a header")
    while pos < len(data):
        if pos + 4 > len(data):
            raise RtpParseError("RTCP compound packet has trailing bytes")
        b0, pt, words = _HEADER.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtpParseError(f"RTCP version is {b0 >> 6}, expected 2")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtpParseError(f"RTCP packet type {pt} claims {4 * words} bytes beyond the end")
        body = data[pos + 4 : end]
        if b0 & 0x20:
            if not body or body[-1] == 0 or body[-1] > len(body):
                raise RtpParseError("RTCP padding count does not fit the packet")
            body = body[: len(body) - body[-1]]
        count = b0 & 0x1F
        packets.append(_parse_one(pt, count, bytes(body)))
        pos = end
    return packets


def _parse_one(pt: int, count: int, body: bytes) -> RtcpPacket:
    if pt == PT_SR:
        return SenderReport.parse_body(count, body)
    if pt == PT_RR:
        return ReceiverReport.parse_body(count, body)
    if pt == PT_SDES:
        return SourceDescription.parse_body(count, body)
    if pt == PT_BYE:
        return Bye.parse_body(count, body)
    return RtcpUnknown(pt, count, body)


def build_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """Concatenate packets into one compound datagram."""
    return b"".join(bytes(p) for p in packets)


def round_trip_time(block: ReportBlock, arrival: float) -> float | None:
    """RTT in seconds from a report about our stream arriving at Unix time ``arrival``.

    RFC 3550 §6.4.1: RTT = A - LSR - DLSR in 16.16 NTP short units. None when
    the peer has not yet received an SR from us (LSR = 0); a negative result
    (clock skew) is reported as 0.0.
    """
    if block.lsr == 0:
        return None
    a = ntp_short(ntp_from_unix(arrival))
    units = (a - block.lsr - block.dlsr) & 0xFFFFFFFF
    if units >= 0x80000000:
        return 0.0
    return units / 65536.0


# --- receiver statistics (RFC 3550 Appendix A) -------------------------------

_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2


class ReceptionStats:
    """Statistics of one received source: A.1 validation, A.3 loss, A.8 jitter.

    Feed every RTP packet with :meth:`update`; feed the source's SRs with
    :meth:`on_sender_report`; call :meth:`report_block` when sending an RR/SR.
    """

    def __init__(
        self, ssrc: int, clock_rate: int = 8000, min_sequential: int = MIN_SEQUENTIAL
    ) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.min_sequential = min_sequential
        self.probation = min_sequential
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = _SEQ_MOD + 1
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self._transit: float | None = None
        self._started = False
        self._lsr = 0
        self._sr_arrival: float | None = None

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, seq: int, rtp_timestamp: int, arrival: float) -> bool:
        """Account one packet arriving at ``arrival`` seconds; False if not (yet) valid."""
        if not self._started:
            self._started = True
            self._init_seq(seq)
            self.probation = self.min_sequential
            if self.probation:
                self.max_seq = (seq - 1) % _SEQ_MOD
        if not self._update_seq(seq):
            return False
        self._update_jitter(rtp_timestamp, arrival)
        return True

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self.max_seq) % _SEQ_MOD
        if self.probation:
            if seq == (self.max_seq + 1) % _SEQ_MOD:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # Two sequential packets after a big jump: the source restarted.
                self._init_seq(seq)
                self._transit = None
            else:
                self.bad_seq = (seq + 1) % _SEQ_MOD
                return False
        self.received += 1
        return True

    def _update_jitter(self, rtp_timestamp: int, arrival: float) -> None:
        transit = arrival * self.clock_rate - rtp_timestamp
        if self._transit is not None:
            d = transit - self._transit
            d = (d + (1 << 31)) % (1 << 32) - (1 << 31)  # RTP timestamp wrap
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.received else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost, clamped to the signed 24-bit field."""
        return max(-(1 << 23), min((1 << 23) - 1, self.expected - self.received))

    def fraction_lost(self) -> int:
        """Loss since the last call, in 1/256 (A.3); starts a new interval."""
        expected_interval = self.expected - self.expected_prior
        self.expected_prior = self.expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval

    def on_sender_report(self, ntp_timestamp: int, arrival: float) -> None:
        """Remember the source's last SR for the LSR/DLSR fields."""
        self._lsr = ntp_short(ntp_timestamp)
        self._sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """The report block to send at ``now``; starts a new loss interval."""
        dlsr = 0
        if self._sr_arrival is not None:
            dlsr = max(0, round((now - self._sr_arrival) * 65536)) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=self.fraction_lost(),
            cumulative_lost=self.lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self._lsr,
            dlsr=dlsr,
        )
