"""Figures of a ``bench/soak.sh`` run, from the files it left in its work directory.

Reads ``samples.tsv`` (the script's RSS/CPU samples), ``ua.out`` and
``media.out`` (the ``FINAL <json>`` counts of bench/soak_peer.py), sipp's
``stat.csv`` (-trace_stat), ``vanish.log`` (a ``VANISH <Call-ID>`` line per
caller that vanished) and ``ends.txt`` (the UA's non-BYE call ends, ``<reason>
<kind> <Call-ID>``). Prints per-minute RSS and CPU, the counts, a ``CHECK`` line
and, last::

    RESULT minutes=<M> calls=<N> vanished=<V> ended_by_timer=<T>
        unexpected_failures=<F> rss_growth_pct_5_to_end=<X>

(one line).

Usage: ``soak_report.py --work DIR --duration-min M --base-min B --sipp-rc RC --planned N
--sample-s S``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

TIMERS = ("media_timer", "session_timer")


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The script's samples: t_s, rss_kb, cpu_pct... (``?`` kept as None)."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    with path.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                parsed[key] = value if key == "phase" else _number(value)
            rows.append(parsed)
    return rows


def _number(value: str | None) -> int | float | None:
    """``"12"`` -> 12, ``"1.5"`` -> 1.5, anything else -> None."""
    for kind in (int, float):
        try:
            return kind(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return None


def last_json(path: Path, tag: str) -> dict[str, Any]:
    """The JSON of the last ``<tag> {...}`` line of ``path`` ({} if none)."""
    found: dict[str, Any] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(tag + " "):
                try:
                    found = json.loads(line[len(tag) + 1 :])
                except ValueError:
                    continue
    return found


def sipp_counts(path: Path) -> dict[str, int]:
    """sipp's cumulative counters (``ok``, ``failed``, ``created`` and every
    ``Failed...(C)`` cause) from the last line of its statistics CSV."""
    result = {"ok": 0, "failed": 0, "created": 0}
    if not path.exists():
        return result
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return result
    header, last = lines[0].split(";"), lines[-1].split(";")
    names = {"SuccessfulCall(C)": "ok", "FailedCall(C)": "failed", "TotalCallCreated": "created"}
    for index, name in enumerate(header):
        if index >= len(last):
            break
        key = names.get(name)
        if key is None and name.startswith("Failed") and name.endswith("(C)"):
            key = name[:-3]
        if key is None:
            continue
        with contextlib.suppress(ValueError):
            result[key] = int(last[index])
    return result


def vanished_ids(path: Path) -> set[str]:
    ids: set[str] = set()
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "VANISH":
                ids.add(parts[1])
    return ids


def timer_ended_ids(path: Path) -> dict[str, str]:
    """Call-ID -> reason for the sipp calls the UA's timers ended."""
    ended: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1] == "sipp" and parts[0] in TIMERS:
                ended[parts[2].strip()] = parts[0]
    return ended


def rss_growth(samples: list[dict[str, Any]], base_min: int) -> tuple[float, int, int, int]:
    """(growth %, base t, base RSS kB, end RSS kB) over the load's samples."""
    load = [s for s in samples if s.get("phase") in ("load", "load-end") and s.get("rss_kb")]
    if not load:
        return float("nan"), 0, 0, 0
    after = [s for s in load if s["t_s"] >= base_min * 60 - 2]
    base = after[0] if after else load[0]
    end = load[-1]
    growth = 100.0 * (end["rss_kb"] - base["rss_kb"]) / base["rss_kb"]
    return growth, base["t_s"], base["rss_kb"], end["rss_kb"]


def per_minute(samples: list[dict[str, Any]], sample_s: int) -> list[str]:
    """A line per whole minute of the load (its sample nearest the minute, CPU
    and lag over the minute), then the end-of-load and drained samples."""

    def show(value: Any) -> str:
        return "?" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    lines = [
        f"{'minute':>6} {'rss_mb':>7} {'cpu%':>5} {'live':>5} {'streaming':>9} {'media_up':>8} "
        f"{'sipp_ok':>8} {'sipp_fail':>9} {'lag_ms':>7} {'503s':>5} {'wait%':>5} {'load1':>5}"
        "  phase"
    ]
    load = [s for s in samples if s.get("t_s") is not None and s.get("phase") == "load"]
    others = [s for s in samples if s.get("t_s") is not None and s.get("phase") != "load"]
    last_minute = max((s["t_s"] for s in load), default=0) // 60
    rows: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []
    for minute in range(1, last_minute + 1):
        near = [s for s in load if abs(s["t_s"] - 60 * minute) <= sample_s // 2 + 5]
        if not near:
            continue
        pick = min(near, key=lambda s: abs(s["t_s"] - 60 * minute))
        window = [s for s in load if 60 * (minute - 1) < s["t_s"] <= pick["t_s"]]
        rows.append((str(minute), pick, window or [pick]))
    for s in others:
        rows.append((f"{s['t_s'] / 60:.1f}", s, [s]))
    for label, s, window in rows:
        cpus = [g["cpu_pct"] for g in window if g.get("cpu_pct") is not None]
        lags = [g["lag_max_ms"] for g in window if g.get("lag_max_ms") is not None]
        cpu = f"{sum(cpus) / len(cpus):.0f}" if cpus else "?"
        waits = [g["runq_wait_pct"] for g in window if g.get("runq_wait_pct") is not None]
        wait = f"{sum(waits) / len(waits):.0f}" if waits else "?"
        lag = f"{max(lags):.0f}" if lags else "?"
        rss = (s.get("rss_kb") or 0) / 1024
        lines.append(
            f"{label:>6} {rss:>7.1f} {cpu:>5} {show(s.get('live')):>5} "
            f"{show(s.get('streaming')):>9} {show(s.get('media_up')):>8} "
            f"{show(s.get('sipp_ok')):>8} {show(s.get('sipp_failed')):>9} {lag:>7} "
            f"{show(s.get('refused_503')):>5} {wait:>5} {show(s.get('load1')):>5}  {s.get('phase')}"
        )
    return lines


def report(args: argparse.Namespace) -> int:
    work = Path(args.work)
    samples = read_samples(work / "samples.tsv")
    ua = last_json(work / "ua.out", "FINAL") or last_json(work / "ua.out", "STATS")
    media = last_json(work / "media.out", "FINAL") or last_json(work / "media.out", "STATS")
    sipp = sipp_counts(work / "stat.csv")
    vanished = vanished_ids(work / "vanish.log")
    timer_ended = timer_ended_ids(work / "ends.txt")
    growth, base_t, base_kb, end_kb = rss_growth(samples, args.base_min)

    print(
        "per minute (the UA process: RSS at the minute; CPU % of one core, event-loop lag and "
        "share of time spent waiting for a CPU over the minute; INVITEs refused with 503 so far; "
        "the machine's 1-min load average):"
    )
    for line in per_minute(samples, args.sample_s):
        print("  " + line)
    load_cpu = [
        s["cpu_pct"] for s in samples if s.get("phase") == "load" and s.get("cpu_pct") is not None
    ]
    if load_cpu:
        print(
            f"UA CPU during the load: mean {sum(load_cpu) / len(load_cpu):.0f} %, "
            f"max {max(load_cpu)} %"
        )
    waits = [
        s["runq_wait_pct"]
        for s in samples
        if s.get("phase") == "load" and s.get("runq_wait_pct") is not None
    ]
    loads = [s["load1"] for s in samples if s.get("phase") == "load" and s.get("load1") is not None]
    if waits and loads:
        print(
            f"machine: the UA waited for a CPU {sum(waits) / len(waits):.0f} % of the time "
            f"(max {max(waits)} %); 1-min load average mean {sum(loads) / len(loads):.2f}, "
            f"max {max(loads):.2f} on {os.cpu_count()} cores"
        )
    print(
        f"RSS: minute {base_t / 60:.1f} {base_kb / 1024:.1f} MB -> "
        f"end of load {end_kb / 1024:.1f} MB "
        f"({growth:+.2f} %)"
    )

    ua_ended = ua.get("ended", {})
    sipp_ends = ua_ended.get("sipp", {})
    media_ends = ua_ended.get("media", {})
    by_timer = sum(int(sipp_ends.get(r, 0)) for r in TIMERS)
    bye_calls = max(0, sipp["ok"] - len(vanished))
    print(
        f"sipp: {sipp['created']} calls placed of {args.planned} planned, {sipp['ok']} ran as "
        f"scripted ({bye_calls} hung up with BYE, {len(vanished)} vanished), "
        f"{sipp['failed']} failed, exit {args.sipp_rc}"
    )
    causes = {k: v for k, v in sipp.items() if k.startswith("Failed") and v}
    if causes:
        print(f"sipp failures by cause: {json.dumps(causes, sort_keys=True)}")
    print(
        f"UA: refused {json.dumps(ua.get('overload_rejected', {}))} with 503 (overload control); "
        f"event-loop lag max {ua.get('lag_max_total_ms', '?')} ms; GC pauses max "
        f"{ua.get('gc_max_ms', '?')} ms, {ua.get('gc_total_s', '?')} s "
        f"in all, {ua.get('gc_full', '?')} full collections; {ua.get('gc_objects', '?')} objects "
        f"tracked by the GC at the end"
    )
    print(
        f"UA ends of sipp calls: {json.dumps(sipp_ends, sort_keys=True)}; of media calls: "
        f"{json.dumps(media_ends, sort_keys=True)}; offered {json.dumps(ua.get('offered', {}))}; "
        f"live at the end {ua.get('live', '?')} {json.dumps(ua.get('states', {}))}"
    )
    print(
        "UA session-timer events in its media calls: "
        f"{json.dumps(ua.get('media_call_refresh_events', {}), sort_keys=True)}"
    )
    if ua.get("other_reasons"):
        print(f"UA other failures: {json.dumps(ua['other_reasons'], indent=1)}")
    print(
        f"media calls: placed {media.get('placed', 0)}, answered {media.get('answered', 0)}, "
        f"completed {media.get('completed', 0)}, failed {media.get('failed', 0)}; "
        f"RTP {json.dumps(media.get('rtp', {}), sort_keys=True)}"
    )
    if media.get("reasons"):
        print(f"media failures: {json.dumps(media['reasons'], indent=1)}")

    not_ended = vanished - set(timer_ended)
    not_vanished = set(timer_ended) - vanished
    media_timer = sum(1 for r in timer_ended.values() if r == "media_timer")
    print(
        f"CHECK vanished={len(vanished)} ended_by_media_timer={media_timer} "
        f"ended_by_session_timer={len(timer_ended) - media_timer} "
        f"abandoned_not_ended_by_timer={len(not_ended)} "
        f"timer_ended_not_vanished={len(not_vanished)} "
        f"ua_live_at_end={ua.get('live', '?')}"
    )
    calls = sipp["ok"] + int(media.get("completed", 0))
    unexpected = sipp["failed"] + int(media.get("failed", 0))
    minutes = args.duration_min
    print(
        f"RESULT minutes={minutes} calls={calls} vanished={len(vanished)} "
        f"ended_by_timer={by_timer} unexpected_failures={unexpected} "
        f"rss_growth_pct_5_to_end={growth:.2f}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work", required=True)
    parser.add_argument("--duration-min", type=int, required=True)
    parser.add_argument("--base-min", type=int, default=5)
    parser.add_argument("--sipp-rc", default="?")
    parser.add_argument("--planned", type=int, default=0)
    parser.add_argument("--sample-s", type=int, default=30)
    return report(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
