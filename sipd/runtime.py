"""Process-wide settings for a long-running, busy sipd process.

CPython's cyclic garbage collector walks every tracked object of the oldest
generation on each full pass. A UA carrying hundreds of calls a second keeps
tens of thousands of objects alive (calls, transactions that linger 32 s
after each call), and objects that live longer than a few milliseconds are
promoted to the oldest generation quickly at the default thresholds (700,
10, 10), so full passes come every few seconds and each one stalls the event
loop for tens to hundreds of milliseconds: answers come late and overload
control sees lag that is only the collector.

:func:`tune_collector` is what the daemon does at start (the bench peers that
stand for it do the same): it collects once, freezes what start-up created
(modules, classes, the state table: never garbage, now never walked again),
and raises the young generation's threshold so that a call's short-lived
objects die before they are promoted. Calls themselves leave no cyclic
garbage (the coordinator breaks their cycles when they end), so the
collector has little to find.

A library user's process is the user's: ``SimplePeer.create`` does only the
mildest part, :func:`raise_young_threshold` (never lowering a threshold the
program chose, never freezing the program's objects), because near its
capacity a peer at CPython's defaults failed calls one rate step below the
tuned benchmark peer (bench/cps.sh --peer simple, issue 13).
``SimplePeer.create(..., tune_gc=False)`` leaves the collector alone.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "raise_young_threshold", "tune_collector"]

#: Allocations (minus frees) between two collections of the young generation.
YOUNG_THRESHOLD = 10_000


def tune_collector(young: int = YOUNG_THRESHOLD) -> tuple[int, int, int]:
    """Freeze start-up objects and raise the young threshold; returns the old thresholds.

    Call it once the process has loaded what it needs (the daemon: when its
    service starts). The middle and old thresholds keep their defaults.
    """
    if young < 1:
        raise ValueError(f"young threshold must be at least 1, got {young}")
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, old[1], old[2])
    return old


def raise_young_threshold(young: int = YOUNG_THRESHOLD) -> bool:
    """Raise the young generation's threshold to ``young`` if it is lower; True if raised.

    A threshold already at least ``young``, or 0 (automatic collection off),
    is the program's choice and is kept; so are the older generations'.
    """
    if young < 1:
        raise ValueError(f"young threshold must be at least 1, got {young}")
    current = gc.get_threshold()
    if current[0] == 0 or current[0] >= young:
        return False
    gc.set_threshold(young, *current[1:])
    return True
