"""A call-rate load generator made of sipd UAs, for SIP over UDP, TCP or TLS.

``bench/cps.sh`` uses it where sipp cannot go (Debian's sipp is built
without TLS) and, so that the ratios between transports compare like with
like, for UDP and TCP too. Each call is what sipp's ``uac`` scenario does:
INVITE, 100/180/200, ACK, then at once BYE and its 200 (no hold time, no
media sent).

Usage::

    .venv/bin/python bench/call_gen.py --target 127.0.0.1:5060 --transport tls \\
        --ca ca.crt --rate 200 --seconds 10 [--processes 2] [--max-concurrent 400]

It places ``rate x seconds`` calls, at ``rate`` calls per second spread over
``--processes`` generator processes (default: one per core but one, which
is left to the peer under test), each a sipd UA over ``--transport`` (TLS
trusts ``--ca`` and verifies the peer's certificate and name as any client
would). Every process starts its calls on the same signal (SIGUSR1, sent by
PID once all are ready), keeps at most ``--max-concurrent / processes``
calls in progress (like sipp's ``-l``: a peer that falls behind lowers the
achieved rate instead of piling up calls), and gives up ``--margin``
seconds (default 15) after the last call was due: calls still in progress
then count as failed. Processes that outlive that by 10 s are killed by PID.

A call succeeds when it was answered, its BYE completed and nothing failed
on the way. Each process also checks that its INVITEs went over the
transport asked for (sipd's own counters), and that it got at least two 200s
per successful call (the INVITE's and the BYE's).

It prints one line per process, then::

    RESULT placed=<n> success=<n> failed=<n> elapsed_ms=<ms> achieved_cps=<x> gen_cpu_pct=<y>

``gen_cpu_pct`` is the generator processes' CPU (user + system) over the
run, summed over processes (100 = one core): read it beside the peer's CPU
to tell which side ran out first. Exit status 0 when every call succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

#: How often a process checks whether calls are due (seconds).
TICK = 0.002
#: RTP ports of the generator processes (split between them), away from the peer's.
MEDIA_LOW, MEDIA_HIGH = 10000, 19999
#: The RESULT fields of a run that placed no call.
NOTHING_DONE = "elapsed_ms=0 achieved_cps=0 gen_cpu_pct=0"
#: Seconds a process may take to start (imports, binding) before the run is abandoned.
START_BUDGET = 30.0


# -- one generator process -------------------------------------------------------------------
def child_main(args: argparse.Namespace) -> int:
    """Place this process's share of the calls once SIGUSR1 arrives; print ``DONE <json>``."""
    from twisted.internet import reactor, task
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from sipd import SipdConfig, TlsConfig, UnifiedCoordinator
    from sipd.runtime import tune_collector

    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [level])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    span = (MEDIA_HIGH - MEDIA_LOW + 1) // args.processes
    low = MEDIA_LOW + args.index * span
    config = SipdConfig(
        name=f"gen{args.index}",
        host="127.0.0.1",
        port=0,
        transport=args.transport,
        tls=TlsConfig(ca_certificates=args.ca) if args.transport == "tls" else None,
        send_ringing=False,
        silence_when_idle=False,
        overload_control=False,
        media_port_min=low,
        media_port_max=low + span - 1,
    )
    coordinator = UnifiedCoordinator(config, reactor=reactor)
    tune_collector()
    coordinator.start()
    target = f"sip:bench@{args.target}"
    total, rate, limit = args.count, args.rate, args.max_concurrent
    state: dict[str, Any] = {
        "placed": 0,
        "success": 0,
        "failed": 0,
        "live": 0,
        "peak_live": 0,
        "throttled_ticks": 0,
    }
    errors: Counter[str] = Counter()
    marks: dict[str, float] = {}
    ticker = task.LoopingCall(lambda: tick())
    ticker.clock = reactor

    def finish(session: Any, answered: bool) -> None:
        state["live"] -= 1
        failure = session.failure
        if answered and failure is None:
            state["success"] += 1
        else:
            state["failed"] += 1
            errors[type(failure).__name__ + ": " + str(failure)[:100]] += 1
        settled()

    def settled() -> None:
        if state["placed"] == total and state["live"] == 0:
            report()

    def place() -> None:
        state["placed"] += 1
        state["live"] += 1
        state["peak_live"] = max(state["peak_live"], state["live"])
        try:
            session = coordinator.create_outgoing_call(target)
        except Exception as exc:  # ports exhausted, closed UA: a failed call
            state["live"] -= 1
            state["failed"] += 1
            errors[f"{type(exc).__name__}: {exc}"[:100]] += 1
            reactor.callLater(0, settled)  # not from inside tick's loop
            return

        def answered(_: object) -> None:
            session.hangup().addBoth(lambda _: finish(session, True))

        def refused(_: object) -> None:
            finish(session, False)

        session.wait_for_answer().addCallbacks(answered, refused)

    def tick() -> None:
        due = min(total, int(rate * (reactor.seconds() - marks["t0"])) + 1)
        if state["placed"] < due and state["live"] >= limit:
            state["throttled_ticks"] += 1
        while state["placed"] < due and state["live"] < limit:
            place()
        if state["placed"] == total and ticker.running:
            ticker.stop()

    def start() -> None:
        marks["t0"] = reactor.seconds()
        marks["cpu0"] = _cpu()
        if total == 0:
            report()
            return
        ticker.start(TICK)
        reactor.callLater(total / rate + args.margin, report)

    def report() -> None:
        if "t1" in marks:
            return
        marks["t1"] = reactor.seconds()
        cpu = _cpu() - marks["cpu0"]
        if ticker.running:
            ticker.stop()
        metrics = coordinator.metrics
        # UDP's counters carry no transport label (or, should they gain one, "udp").
        labelled = [{"transport": args.transport}] + ([{}] if args.transport == "udp" else [])
        sent = sum(
            metrics.get("sipd_sip_requests_sent_total", method="INVITE", **labels)
            for labels in labelled
        )
        oks = sum(
            metrics.get("sipd_sip_responses_received_total", status="200", **labels)
            for labels in labelled
        )
        unfinished = state["placed"] - state["success"] - state["failed"]
        if unfinished:
            errors["unfinished when the time ran out"] += unfinished
        done = {
            "index": args.index,
            "count": total,
            "placed": state["placed"],
            "success": state["success"],
            "failed": total - state["success"],
            "elapsed": marks["t1"] - marks["t0"],
            "cpu": cpu,
            "peak_live": state["peak_live"],
            "throttled_ticks": state["throttled_ticks"],
            "invites_over_transport": sent,
            "ok_responses": oks,
            "errors": errors.most_common(5),
        }
        print("DONE " + json.dumps(done), flush=True)
        reactor.callLater(0, reactor.stop)  # type: ignore[attr-defined]

    signal.signal(signal.SIGUSR1, lambda signum, frame: reactor.callFromThread(start))  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, lambda signum, frame: reactor.callFromThread(reactor.stop))  # type: ignore[attr-defined]
    print("READY", flush=True)
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the parent: spawn, start together, add up ------------------------------------------------
def _read_line(path: Path, prefix: str) -> str | None:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, then SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def parent_main(args: argparse.Namespace) -> int:
    import tempfile

    total = round(args.rate * args.seconds)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    shares = [total // args.processes + (i < total % args.processes) for i in range(args.processes)]
    folder = Path(args.work or tempfile.mkdtemp(prefix="sipd-callgen-"))
    folder.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    try:
        for index, share in enumerate(shares):
            out = folder / f"gen-{index}.out"
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "--index",
                str(index),
                "--processes",
                str(args.processes),
                "--target",
                args.target,
                "--transport",
                args.transport,
                "--rate",
                repr(args.rate * share / max(total, 1)),
                "--count",
                str(share),
                "--max-concurrent",
                str(max(1, args.max_concurrent // args.processes)),
                "--margin",
                repr(args.margin),
                *(["--ca", args.ca] if args.ca else []),
            ]
            with out.open("wb") as sink:
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
            procs.append((proc, out))
        deadline = time.monotonic() + START_BUDGET
        for proc, out in procs:
            while _read_line(out, "READY") is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = out.read_text(errors="replace")[-2000:]
                    print(f"generator {out.name} did not start:\n{tail}", file=sys.stderr)
                    print(f"RESULT placed=0 success=0 failed={total} {NOTHING_DONE}")
                    return 2
                time.sleep(0.05)
        t0 = time.monotonic()
        for proc, _ in procs:
            os.kill(proc.pid, signal.SIGUSR1)
        for proc, out in procs:
            left = args.seconds + args.margin + 10 - (time.monotonic() - t0)
            try:
                proc.wait(max(1.0, left))
            except subprocess.TimeoutExpired:
                print(f"generator pid {proc.pid} overran its time; stopped", file=sys.stderr)
            done = _read_line(out, "DONE ")
            if done is not None:
                results.append(json.loads(done))
            else:
                tail = out.read_text(errors="replace")[-2000:]
                print(f"generator {out.name} gave no result:\n{tail}", file=sys.stderr)
    finally:
        for proc, _ in procs:
            _stop(proc)
    return _summarise(args, total, results)


def _summarise(args: argparse.Namespace, total: int, results: list[dict[str, Any]]) -> int:
    placed = sum(r["placed"] for r in results)
    success = sum(r["success"] for r in results)
    failed = total - success
    elapsed = max((r["elapsed"] for r in results), default=0.0)
    cpu = sum(r["cpu"] for r in results)
    ok = len(results) == args.processes and failed == 0
    for r in results:
        print(
            f"  gen {r['index']}: placed {r['placed']}/{r['count']} success {r['success']} "
            f"in {r['elapsed']:.2f} s, CPU {100 * r['cpu'] / max(r['elapsed'], 1e-9):.0f} %, "
            f"peak in progress {r['peak_live']}, throttled ticks {r['throttled_ticks']}, "
            f"INVITEs over {args.transport} {r['invites_over_transport']:.0f}"
        )
        for error, count in r["errors"]:
            print(f"    {count} x {error}")
        if r["invites_over_transport"] < r["placed"]:
            ok = False
            print(
                f"  gen {r['index']}: only {r['invites_over_transport']:.0f} of {r['placed']} "
                f"INVITEs went over {args.transport}: the transport setting was not used",
                file=sys.stderr,
            )
        if r["ok_responses"] < 2 * r["success"]:
            ok = False
            print(
                f"  gen {r['index']}: {r['ok_responses']:.0f} 200 responses for "
                f"{r['success']} calls (want 2 per call: some BYE was not answered 200)",
                file=sys.stderr,
            )
    achieved = success / elapsed if elapsed > 0 else 0.0
    cpu_pct = 100.0 * cpu / elapsed if elapsed > 0 else 0.0
    print(
        f"RESULT placed={placed} success={success} failed={failed} "
        f"elapsed_ms={round(elapsed * 1000)} achieved_cps={achieved:.1f} gen_cpu_pct={cpu_pct:.0f}"
    )
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the peer under test")
    parser.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    parser.add_argument("--ca", help="TLS: the CA certificate the peer's certificate chains to")
    parser.add_argument("--rate", type=float, required=True, help="calls per second, in all")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long calls are placed")
    parser.add_argument(
        "--processes", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="generators"
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=0, help="calls in progress at most (0: 2 x rate)"
    )
    parser.add_argument("--margin", type=float, default=15.0, help="seconds allowed after")
    parser.add_argument("--work", help="folder for the generators' output (default: a new one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.transport == "tls" and not args.ca:
        parser.error("--transport tls needs --ca (the CA that signed the peer's certificate)")
    if args.rate <= 0 or args.seconds <= 0 or args.processes < 1:
        parser.error("--rate and --seconds must be positive, --processes at least 1")
    if args.max_concurrent <= 0:
        args.max_concurrent = max(10, round(2 * args.rate))
    return args


def main() -> int:
    args = parse_args()
    return child_main(args) if args.child else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
