"""The helpers of ``bench/soak.sh``: how a call's end is classified, and the figures.

``bench/soak_peer.py`` tells a call ended by the media timer or the session
timer from one its caller hung up by the text of ``session.failure``; these
tests take that text from the shipped state table, so rewording a row's
message cannot silently turn the soak's timer counts into "other".
"""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from sipd.config import default_state_table_path
from sipd.errors import CallFailed

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


soak_peer = _load("soak_peer")
soak_report = _load("soak_report")


def _row_messages(event: str) -> set[str]:
    """The error messages of the state table's rows for ``event``, filled in."""
    table = yaml.safe_load(default_state_table_path().read_text(encoding="utf-8"))
    fill: defaultdict[str, str] = defaultdict(lambda: "x")
    return {
        row["error"]["message"].format_map(fill)
        for row in table["transitions"]
        if row.get("event") == event and row.get("error")
    }


@pytest.mark.parametrize(
    ("event", "reason"), [("MediaTimeout", "media_timer"), ("SessionExpired", "session_timer")]
)
def test_timer_ends_are_recognised_from_the_state_table(event: str, reason: str) -> None:
    messages = _row_messages(event)
    assert messages, f"no row of the state table reports an error for {event}"
    for message in messages:
        assert soak_peer.classify(CallFailed(message)) == reason, message


def test_other_ends() -> None:
    assert soak_peer.classify(None) == "bye"
    assert soak_peer.classify(CallFailed("no ACK for the 200 OK")) == "other"


def _samples(tmp_path: Path, rows: list[tuple[int, int, str]]) -> list[dict[str, object]]:
    path = tmp_path / "samples.tsv"
    lines = ["t_s\trss_kb\tcpu_pct\tlag_max_ms\tphase"]
    lines += [f"{t}\t{rss}\t40\t1.5\t{phase}" for t, rss, phase in rows]
    path.write_text("\n".join(lines) + "\n")
    return soak_report.read_samples(path)


def test_rss_growth_from_the_base_minute_to_the_end_of_the_load(tmp_path: Path) -> None:
    samples = _samples(
        tmp_path,
        [
            (30, 900, "load"),
            (300, 1000, "load"),
            (330, 1010, "load"),
            (600, 1040, "load"),
            (601, 1041, "load-end"),
            (640, 500, "drained"),
        ],
    )
    assert samples[0]["lag_max_ms"] == 1.5
    growth, base_t, base_kb, end_kb = soak_report.rss_growth(samples, 5)
    assert (base_t, base_kb, end_kb) == (300, 1000, 1041)
    assert growth == pytest.approx(4.1)


def test_sipp_counts_read_the_last_line_and_failure_causes(tmp_path: Path) -> None:
    path = tmp_path / "stat.csv"
    header = "StartTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C);FailedUnexpectedMessage(C)"
    path.write_text(f"{header}\nx;10;9;1;1\nx;20;17;3;3\n")
    counts = soak_report.sipp_counts(path)
    assert counts == {"ok": 17, "failed": 3, "created": 20, "FailedUnexpectedMessage": 3}
    assert soak_report.sipp_counts(tmp_path / "missing.csv")["ok"] == 0


def test_vanished_and_timer_ended_calls_are_matched(tmp_path: Path) -> None:
    (tmp_path / "vanish.log").write_text("VANISH 1-9@127.0.0.1\nVANISH 2-9@127.0.0.1\n")
    (tmp_path / "ends.txt").write_text(
        "media_timer sipp 1-9@127.0.0.1\nmedia_timer media abc\nother sipp 3-9@127.0.0.1\n"
    )
    assert soak_report.vanished_ids(tmp_path / "vanish.log") == {"1-9@127.0.0.1", "2-9@127.0.0.1"}
    assert soak_report.timer_ended_ids(tmp_path / "ends.txt") == {"1-9@127.0.0.1": "media_timer"}
