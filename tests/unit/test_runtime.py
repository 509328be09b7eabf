"""The garbage collector settings sipd applies (sipd/runtime.py) and SimplePeer's default.

Each test restores the process's thresholds, whatever it set.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import pytest_twisted

from sipd import SimplePeer
from sipd.runtime import YOUNG_THRESHOLD, raise_young_threshold


@pytest.fixture(autouse=True)
def keep_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def test_a_lower_young_threshold_is_raised_and_the_others_kept() -> None:
    gc.set_threshold(700, 11, 12)
    assert raise_young_threshold() is True
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)


@pytest.mark.parametrize("chosen", [0, YOUNG_THRESHOLD, 50_000])
def test_a_threshold_the_program_chose_is_kept(chosen: int) -> None:
    """0 (automatic collection off) or anything at least as high is the program's choice."""
    gc.set_threshold(chosen, 10, 10)
    assert raise_young_threshold() is False
    assert gc.get_threshold() == (chosen, 10, 10)


def test_a_threshold_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        raise_young_threshold(0)


@pytest_twisted.ensureDeferred
async def test_simple_peer_raises_the_young_threshold_unless_told_not_to() -> None:
    gc.set_threshold(700, 10, 10)
    kept = await SimplePeer.create("kept", 0, tune_gc=False)
    try:
        assert gc.get_threshold() == (700, 10, 10)
        tuned = await SimplePeer.create("tuned", 0)
        await tuned.close()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    finally:
        await kept.close()
