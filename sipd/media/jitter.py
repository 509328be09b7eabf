"""A pure, clock-free jitter buffer that puts RTP payloads back in order.

Why clock-free: the buffer's only job here is ordering — reorder, drop
duplicates and late packets, skip gaps once waiting longer cannot help. The
20 ms playout clock lives in the media protocol, so this class is a plain
function of the packets pushed in and is tested without time at all.

Policy: packets are released as soon as they are next in sequence. A missing
packet is waited for until a packet ``depth`` or more sequence numbers ahead
of it arrives; then it is counted lost and skipped. So any reordering in
which no packet overtakes one ``depth`` or more places behind it loses
nothing. At start-up the first packet to arrive may not be the first sent,
so the start is fixed only once the packets seen span ``depth`` sequence
numbers (a prefill of ``depth - 1`` packets); after that an in-order stream
passes straight through with no delay.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sipd.errors import MediaValueError
from sipd.media.rtp import seq_add, seq_diff

__all__ = [
    "JitterBuffer",
    "JitterItem",
    "JitterStats",
]

#: A jump this far ahead is a sender restart, not loss (RFC 3550 A.1 MAX_DROPOUT).
MAX_DROPOUT = 3000
#: Packets further behind than this may be a restart (confirmed by a second one).
MAX_MISORDER = 100


@dataclass(slots=True, frozen=True)
class JitterItem:
    """One payload released in order."""

    sequence: int
    timestamp: int
    payload: bytes


@dataclass(slots=True, frozen=True)
class JitterStats:
    """Counters since the buffer was created."""

    received: int
    released: int
    duplicates: int
    late: int
    reordered: int
    lost: int
    resyncs: int


class JitterBuffer:
    """Reorders packets within a window of ``depth`` sequence numbers."""

    def __init__(self, depth: int = 4) -> None:
        if depth < 1:
            raise MediaValueError(f"jitter buffer depth must be at least 1 packet, got {depth}")
        self.depth = depth
        self._pending: dict[int, JitterItem] = {}
        self._next: int | None = None
        self._highest: int | None = None
        self._played: deque[int] = deque(maxlen=max(64, 4 * depth))
        self._played_set: set[int] = set()
        self._bad_seq: int | None = None
        self.received = 0
        self.released = 0
        self.duplicates = 0
        self.late = 0
        self.reordered = 0
        self.lost = 0
        self.resyncs = 0

    @property
    def stats(self) -> JitterStats:
        return JitterStats(
            self.received,
            self.released,
            self.duplicates,
            self.late,
            self.reordered,
            self.lost,
            self.resyncs,
        )

    def __len__(self) -> int:
        """Packets held waiting for an earlier one."""
        return len(self._pending)

    def push(self, sequence: int, timestamp: int, payload: bytes) -> list[JitterItem]:
        """Add a packet; return the payloads now ready, in sequence order."""
        self.received += 1
        if self._highest is None:
            self._highest = sequence
        if sequence in self._pending or sequence in self._played_set:
            self.duplicates += 1
            return []
        ahead = 0 if self._next is None else seq_diff(sequence, self._next)
        if ahead < 0 and not (ahead < -MAX_MISORDER and sequence == self._bad_seq):
            if ahead < -MAX_MISORDER:
                self._bad_seq = seq_add(sequence, 1)
            self.late += 1
            return []
        out: list[JitterItem] = []
        if ahead >= MAX_DROPOUT or ahead < 0:
            # A jump far ahead, or two consecutive packets far behind: the
            # sender restarted its sequence (RFC 3550 A.1 does the same).
            out = self.flush()
            self._restart(sequence)
        elif seq_diff(sequence, self._highest) < 0:
            self.reordered += 1
        else:
            self._highest = sequence
        self._pending[sequence] = JitterItem(sequence, timestamp, payload)
        if self._next is None:
            # Start-up: the first packet to arrive need not be the first sent, so
            # wait until the packets seen span the window before fixing the start.
            earliest = self._earliest(self._highest)
            if seq_diff(self._highest, earliest) < self.depth - 1:
                return out
            self._next = earliest
        out.extend(self._release())
        return out

    def _restart(self, sequence: int) -> None:
        self.resyncs += 1
        self._next = self._highest = sequence
        self._played.clear()
        self._played_set.clear()
        self._bad_seq = None

    def _earliest(self, reference: int) -> int:
        return min(self._pending, key=lambda s: seq_diff(s, reference))

    def _release(self) -> list[JitterItem]:
        assert self._next is not None and self._highest is not None
        out: list[JitterItem] = []
        while self._pending:
            item = self._pending.pop(self._next, None)
            if item is not None:
                out.append(self._play(item))
                self._next = seq_add(self._next, 1)
                continue
            if seq_diff(self._highest, self._next) < self.depth:
                break
            # Give up on the missing packet(s): jump to the next held packet or to
            # the bottom of the window, whichever comes first.
            earliest = self._earliest(self._next)
            floor = seq_add(self._highest, 1 - self.depth)
            target = earliest if seq_diff(earliest, floor) <= 0 else floor
            gap = seq_diff(target, self._next)
            if gap >= MAX_DROPOUT:
                self.resyncs += 1  # a restart seen during start-up, not loss
            else:
                self.lost += gap
            self._next = target
        return out

    def _play(self, item: JitterItem) -> JitterItem:
        if len(self._played) == self._played.maxlen:
            self._played_set.discard(self._played[0])
        self._played.append(item.sequence)
        self._played_set.add(item.sequence)
        self.released += 1
        return item

    def flush(self) -> list[JitterItem]:
        """Release everything held, in order, counting the holes as lost (call end)."""
        out: list[JitterItem] = []
        if not self._pending:
            return out
        if self._next is None:
            assert self._highest is not None
            self._next = self._earliest(self._highest)
        start = self._next
        for seq in sorted(self._pending, key=lambda s: seq_diff(s, start)):
            gap = seq_diff(seq, self._next)
            self.lost += gap
            out.append(self._play(self._pending[seq]))
            self._next = seq_add(seq, 1)
        self._pending.clear()
        return out
