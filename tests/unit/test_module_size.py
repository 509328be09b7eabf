"""No module in sipd/ grows past ~600 lines: when one does, it holds two things.

The limit has a little slack (620) so that a docstring does not force a split;
a module over it fails the suite, naming the file and its length.
"""

from __future__ import annotations

from pathlib import Path

LIMIT = 620
ROOT = Path(__file__).resolve().parents[2] / "sipd"


def test_no_module_is_over_the_limit() -> None:
    too_long = {
        str(path.relative_to(ROOT.parent)): count
        for path in sorted(ROOT.rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert not too_long, f"modules over {LIMIT} lines (split them by responsibility): {too_long}"


def test_the_check_sees_the_modules() -> None:
    # A wrong ROOT would make the check above pass vacuously.
    assert len(list(ROOT.rglob("*.py"))) > 50
