"""RFC 4733 telephone-events (DTMF digits carried as RTP events), sans-I/O.

Why events and not tones: G.711 carries in-band DTMF poorly through
transcoders and jitter, so RFC 4733 sends the digit itself. Each digit is
one *event*: every packet of it has the same RTP timestamp (the event start),
a growing duration, and the last one has the End bit and is sent three times
because it is the packet a receiver must not miss (§2.5.1.4).
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass

from sipd.errors import MediaValueError, RtpParseError
from sipd.media.rtp import RtpPacket, RtpSender, ts_diff

__all__ = [
    "DEFAULT_PAYLOAD_TYPE",
    "DIGITS",
    "DtmfEvent",
    "DtmfReceiver",
    "DtmfSender",
]

#: Event codes 0..15 (RFC 4733 §3.2): the index of the digit in this string.
DIGITS = "0123456789*#ABCD"
#: Dynamic payload type most peers offer for ``telephone-event/8000``.
DEFAULT_PAYLOAD_TYPE = 101
_EVENT = struct.Struct("!BBH")


@dataclass(slots=True, frozen=True)
class DtmfEvent:
    """The 4-byte telephone-event payload: event, End bit, volume (-dBm0), duration."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise MediaValueError(f"telephone-event code must be 0..255, got {self.event}")
        if not 0 <= self.volume <= 63:
            raise MediaValueError(
                f"telephone-event volume must be 0..63 (-dBm0), got {self.volume}"
            )
        if not 0 <= self.duration <= 0xFFFF:
            raise MediaValueError(f"telephone-event duration must fit 16 bits, got {self.duration}")

    @classmethod
    def from_digit(cls, digit: str, **kwargs: int | bool) -> DtmfEvent:
        """The event for one of ``0-9 * # A-D`` (case-insensitive)."""
        index = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
        if index < 0:
            raise MediaValueError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
        return cls(index, **kwargs)  # type: ignore[arg-type]

    @property
    def digit(self) -> str | None:
        """The DTMF character, or None for other events (flash, tones)."""
        return DIGITS[self.event] if self.event < len(DIGITS) else None

    @classmethod
    def parse(cls, data: bytes) -> DtmfEvent:
        """Parse the first event of a payload (the R bit is ignored on receipt)."""
        if len(data) < _EVENT.size:
            raise RtpParseError(f"telephone-event payload is {len(data)} bytes, needs 4")
        event, flags, duration = _EVENT.unpack_from(data)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


class DtmfSender:
    """Turns a string of digits into RFC 4733 packets, one 20 ms tick at a time.

    It shares the :class:`RtpSender` of the audio stream, so events take the
    next sequence numbers and the media clock keeps running through them. Call
    :meth:`tick` every packetisation interval: it returns the packets to send
    now, or None when the slot is free for ordinary audio (idle or in the
    inter-digit gap) — the caller then sends audio, which advances the clock.
    """

    def __init__(
        self,
        rtp: RtpSender,
        *,
        payload_type: int = DEFAULT_PAYLOAD_TYPE,
        duration_ms: int = 100,
        gap_ms: int = 60,
        volume: int = 10,
        ptime_ms: int = 20,
        clock_rate: int = 8000,
    ) -> None:
        if ptime_ms <= 0 or duration_ms <= 0 or gap_ms < 0:
            raise MediaValueError("DTMF ptime and duration must be positive and the gap >= 0")
        self.rtp = rtp
        self.payload_type = payload_type
        self.volume = volume
        self.ptime_ms = ptime_ms
        self.duration_ms = duration_ms
        self.tone_ticks = max(1, math.ceil(duration_ms / ptime_ms))
        self.gap_ticks = math.ceil(gap_ms / ptime_ms)
        self.set_clock_rate(clock_rate)
        self._queue: deque[str] = deque()
        self._digit: str | None = None
        self._start_ts = 0
        self._tick_in_tone = 0
        self._gap_left = 0

    def set_clock_rate(self, clock_rate: int) -> None:
        """Count durations at ``clock_rate``: RFC 4733 events use the audio codec's RTP
        clock (8000 for G.711 and G.722, 48000 for Opus)."""
        step = clock_rate * self.ptime_ms // 1000
        if self.tone_ticks * step > 0xFFFF:
            raise MediaValueError(
                f"a {self.duration_ms} ms DTMF tone overflows the 16-bit duration "
                f"at {clock_rate} Hz"
            )
        self.step = step

    def send(self, digits: str) -> None:
        """Queue digits (validated now, so a bad string fails before anything is sent)."""
        for d in digits:
            DtmfEvent.from_digit(d)
        self._queue.extend(d.upper() for d in digits)

    @property
    def busy(self) -> bool:
        """True while digits or an inter-digit gap remain."""
        return bool(self._queue) or self._digit is not None or self._gap_left > 0

    def tick(self) -> list[RtpPacket] | None:
        """Packets for this 20 ms slot, or None if the slot is free for audio."""
        if self._digit is None:
            if self._gap_left > 0:
                self._gap_left -= 1
                return None
            if not self._queue:
                return None
            self._digit = self._queue.popleft()
            self._start_ts = self.rtp.timestamp
            self._tick_in_tone = 0
        self._tick_in_tone += 1
        duration = self._tick_in_tone * self.step
        end = self._tick_in_tone >= self.tone_ticks
        event = DtmfEvent.from_digit(self._digit, end=end, volume=self.volume, duration=duration)
        copies = 3 if end else 1
        packets = [
            self.rtp.packet_at(
                bytes(event),
                timestamp=self._start_ts,
                payload_type=self.payload_type,
                marker=self._tick_in_tone == 1 and i == 0,
            )
            for i in range(copies)
        ]
        self.rtp.advance(self.step)
        if end:
            self._digit = None
            self._gap_left = self.gap_ticks
        return packets

    def drain(self) -> list[list[RtpPacket]]:
        """Run every queued digit to the end, one list per tick (empty = gap).

        Gap ticks advance the media clock as if silence had been sent without
        packets, which keeps event timestamps correct for a caller (or test)
        that sends nothing but DTMF.
        """
        ticks: list[list[RtpPacket]] = []
        while self.busy:
            packets = self.tick()
            if packets is None:
                self.rtp.advance(self.step)
                ticks.append([])
            else:
                ticks.append(packets)
        return ticks


class DtmfReceiver:
    """Turns received telephone-event packets into digits, exactly once per event.

    An event is identified by its RTP timestamp (RFC 4733 §2.5.2.1), so the
    first packet seen of an event reports the digit — whether or not it is
    the marked start packet — and every later packet of it (growing
    durations, the three End copies, late retransmissions) is ignored.
    """

    def __init__(self, *, memory: int = 32) -> None:
        self._seen: deque[int] = deque(maxlen=memory)
        self._last_ts: int | None = None

    def receive(self, packet: RtpPacket) -> str | None:
        """Feed one packet of the telephone-event payload type; a new digit or None."""
        return self.receive_payload(packet.timestamp, packet.payload)

    def receive_payload(self, timestamp: int, payload: bytes) -> str | None:
        """Like :meth:`receive`, from the RTP timestamp and raw payload."""
        event = DtmfEvent.parse(payload)
        if timestamp in self._seen:
            return None
        stale = self._last_ts is not None and ts_diff(timestamp, self._last_ts) < 0
        if stale and len(self._seen) == self._seen.maxlen:
            # Older than the newest event and possibly forgotten: a straggler.
            return None
        self._seen.append(timestamp)
        if self._last_ts is None or ts_diff(timestamp, self._last_ts) > 0:
            self._last_ts = timestamp
        return event.digit
