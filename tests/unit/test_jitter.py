"""The clock-free jitter buffer: ordering, duplicates, late packets, gaps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipd.errors import MediaValueError
from sipd.media.jitter import JitterBuffer, JitterItem
from sipd.media.rtp import seq_add


def _push(buf: JitterBuffer, seqs: list[int], start_ts: int = 0) -> list[int]:
    out: list[JitterItem] = []
    for s in seqs:
        out += buf.push(s, start_ts + 160 * s, bytes([s & 0xFF]))
    return [i.sequence for i in out]


def test_in_order_packets_pass_straight_through_after_prefill() -> None:
    """The first depth-1 packets are held; after that each push releases its packet."""
    buf = JitterBuffer(depth=3)
    assert buf.push(10, 1600, b"a") == []
    assert _push(buf, [11]) == []
    assert len(buf) == 2
    assert _push(buf, [12]) == [10, 11, 12]
    assert buf.push(13, 2080, b"d") == [JitterItem(13, 2080, b"d")]
    assert len(buf) == 0


def test_depth_one_never_holds_a_packet() -> None:
    """With a depth of one packet there is no reordering window and no prefill."""
    buf = JitterBuffer(depth=1)
    assert _push(buf, [4, 6, 5, 7]) == [4, 6, 7]
    assert (buf.lost, buf.late) == (1, 1)


def test_start_up_reordering_is_repaired() -> None:
    """The first packet to arrive need not be the first sent."""
    buf = JitterBuffer(depth=3)
    assert _push(buf, [2, 1, 3]) == [1, 2, 3]
    assert buf.reordered == 1


def test_reordered_packets_come_out_in_order() -> None:
    """A swapped pair is held until the gap fills, then both are released."""
    buf = JitterBuffer(depth=3)
    assert _push(buf, [1, 3]) == [1]
    assert len(buf) == 1
    assert _push(buf, [2]) == [2, 3]
    assert buf.reordered == 1 and buf.lost == 0


def test_duplicates_are_dropped_and_counted() -> None:
    """A copy of a held or already-played packet is dropped."""
    buf = JitterBuffer(depth=4)
    assert _push(buf, [1, 1, 3, 3, 2, 2, 4]) == [1, 2, 3, 4]
    assert _push(buf, [2]) == []
    assert buf.duplicates == 4
    assert buf.late == 0


def test_gap_is_given_up_once_the_window_passes_it() -> None:
    """A missing packet is skipped as lost when a packet `depth` ahead arrives."""
    buf = JitterBuffer(depth=3)
    assert _push(buf, [1, 3, 4]) == [1]
    assert _push(buf, [5]) == [3, 4, 5]
    assert buf.lost == 1


def test_late_packet_after_its_slot_is_dropped() -> None:
    """A packet arriving after its slot was skipped is counted late, not played."""
    buf = JitterBuffer(depth=2)
    assert _push(buf, [1, 3, 4]) == [1, 3, 4]
    assert _push(buf, [2]) == []
    assert buf.late == 1 and buf.lost == 1 and buf.duplicates == 0


def test_wraps_from_65535_to_0() -> None:
    """Ordering and gap detection work across the 16-bit wrap."""
    buf = JitterBuffer(depth=4)
    assert _push(buf, [65533, 65535, 65534, 1, 0]) == [65533, 65534, 65535, 0, 1]
    assert _push(buf, [3, 4, 5]) == []
    assert _push(buf, [6]) == [3, 4, 5, 6]
    assert buf.lost == 1
    assert _push(buf, [65535]) == []
    assert buf.duplicates == 1
    assert _push(buf, [2]) == []
    assert buf.late == 1


def test_flush_releases_everything_in_order_counting_holes() -> None:
    """At call end the held packets come out, and the holes between them are lost."""
    buf = JitterBuffer(depth=10)
    assert _push(buf, [1, 4, 3, 7]) == []
    assert [i.sequence for i in buf.flush()] == [1, 3, 4, 7]
    assert buf.lost == 3  # 2, 5 and 6
    assert buf.flush() == []


def test_huge_jump_resynchronises_instead_of_counting_loss() -> None:
    """A sender restart far ahead is followed, not counted as thousands lost."""
    buf = JitterBuffer(depth=4)
    assert _push(buf, [100, 101, 102, 103, 105]) == [100, 101, 102, 103]
    assert _push(buf, [20000, 20001]) == [105, 20000, 20001]
    assert buf.resyncs == 1
    assert buf.lost == 1


def test_restart_far_behind_is_followed_after_two_packets() -> None:
    """One packet far behind is late; a second consecutive one confirms a restart."""
    buf = JitterBuffer(depth=2)
    assert _push(buf, [1000, 1001, 1002]) == [1000, 1001, 1002]
    assert _push(buf, [500]) == []
    assert _push(buf, [501, 502]) == [501, 502]
    assert (buf.late, buf.resyncs, buf.lost) == (1, 1, 0)


def test_depth_must_be_positive() -> None:
    """A buffer without a slot is a configuration mistake."""
    with pytest.raises(MediaValueError):
        JitterBuffer(0)


def test_stats_snapshot_counts_everything() -> None:
    """stats reports received, released and every drop reason."""
    buf = JitterBuffer(depth=2)
    _push(buf, [5, 5, 7, 8, 6])
    s = buf.stats
    assert (s.received, s.released, s.duplicates, s.late, s.lost) == (5, 3, 1, 1, 1)


@st.composite
def shuffled_runs(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    depth = draw(st.integers(1, 8))
    start = draw(st.integers(0, 0xFFFF))
    length = draw(st.integers(1, 60))
    offsets = list(range(length))
    arrival: list[int] = []
    for block in range(0, length, depth):
        chunk = offsets[block : block + depth]
        arrival += draw(st.permutations(chunk))
    return depth, start, [seq_add(start, o) for o in arrival]


@given(shuffled_runs())
def test_any_permutation_within_the_depth_window_is_restored(
    case: tuple[int, int, list[int]],
) -> None:
    """Packets shuffled within windows of `depth` come out complete and in order."""
    depth, start, arrival = case
    buf = JitterBuffer(depth)
    out = _push(buf, arrival) + [i.sequence for i in buf.flush()]
    assert out == [seq_add(start, i) for i in range(len(arrival))]
    assert (buf.lost, buf.late, buf.duplicates) == (0, 0, 0)
