"""The UA under fuzzing: a sipd coordinator that answers every call, and reports.

``bench/fuzz.py`` starts this in its own process and sends it mutated SIP.
Every socket is bound to 127.0.0.1, and Linux refuses to send from a
loopback-bound socket to any other address (EINVAL), so whatever address a
mutated Via, Contact or SDP names, nothing leaves the machine; host names
are not resolved either (``socket.gethostbyname`` is replaced in this
process), so no DNS query goes out. REFER is refused (a mutated Refer-To
could make the UA call itself forever).

It prints ``PID <pid>``, ``PORT <sip port>`` and ``CONTROL <port>`` on
stdout once it listens. A UDP datagram ``REPORT <seconds>`` to the control
port makes it wait until its timers have run out (store, registry, dialog
legs and transaction tables empty) or ``<seconds>`` have passed, then answer
with a JSON report (also printed as ``REPORT {...}``); ``MARK <seconds>``
does the same and takes the RSS then as the baseline later reports compare
with (the fuzzer sends it after its warm-up); ``STOP`` stops it.
SIGTERM prints the report at once and stops.

The report counts every logged failure (``log_failure`` events: what twistd
prints as "Unhandled Error" or a traceback) and lists the first few, says
what is left in each table, and compares RSS with its value at start.

Usage::

    .venv/bin/python bench/fuzz_target.py [--port 0] [--t1 0.05]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from typing import Any

from zope.interface import implementer

from sipd import SipdConfig, UnifiedCoordinator, UnifiedSession
from sipd.runtime import tune_collector
from sipd.session.interceptor import AcceptAllHandler, ISignalingHandler


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def settled_rss_kb() -> int:
    """RSS once garbage is collected and glibc has handed free heap pages back.

    Without ``malloc_trim`` the figure would include memory already freed
    but kept by the C allocator: a high-water mark, not what is in use.
    """
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return rss_kb()


def hwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _no_lookups(name: str) -> str:
    """Replaces ``socket.gethostbyname``: IP literals only, no DNS query leaves."""
    if name == "localhost":
        return "127.0.0.1"
    try:
        socket.inet_aton(name)
    except (OSError, TypeError, ValueError):
        raise socket.gaierror(
            socket.EAI_NONAME, "name lookups are off in the fuzz target"
        ) from None
    return socket.inet_ntoa(socket.inet_aton(name))


@implementer(ISignalingHandler)
class FuzzHandler(AcceptAllHandler):
    """Every INVITE becomes a call (answered at once); transfers are refused."""

    def on_transfer_request(self, session: object, target: object) -> bool:
        return False


class FailureCounter:
    """A log observer: counts logged failures and keeps the first few as text."""

    def __init__(self, keep: int = 20) -> None:
        self.count = 0
        self.kinds: Counter[str] = Counter()
        self.samples: list[str] = []
        self.keep = keep

    def __call__(self, event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if failure is None:
            return
        self.count += 1
        kind = getattr(getattr(failure, "type", None), "__name__", "?")
        self.kinds[kind] += 1
        if len(self.samples) < self.keep:
            from twisted.logger import formatEvent

            try:
                text = f"{formatEvent(event)}\n{failure.getTraceback()}"
            except Exception as exc:  # never let the counter itself fail
                text = f"(unformattable failure event: {exc!r})"
            self.samples.append(text[-4000:])


def _memory_report() -> dict[str, Any]:
    """The largest live allocations by line, and the most numerous object types."""
    import tracemalloc

    snapshot = tracemalloc.take_snapshot()
    top = [
        f"{stat.size / 1024:.0f} KiB {stat.count} blocks {stat.traceback[0]}"
        for stat in snapshot.statistics("lineno")[:15]
    ]
    types = Counter(type(o).__name__ for o in gc.get_objects())
    return {
        "traced_kb": tracemalloc.get_traced_memory()[0] // 1024,
        "top_allocations": top,
        "object_counts": dict(types.most_common(15)),
    }


def _config(args: argparse.Namespace) -> SipdConfig:
    settings: dict[str, Any] = {
        "name": "fuzz",
        "host": "127.0.0.1",
        "port": args.port,
        "t1": args.t1,
        "t2": max(args.t1, args.t1 * 8),
        "t4": max(args.t1, args.t1 * 10),
        "ring_timeout": 2.0,
        "defer_timeout": 2.0,
        "send_ringing": True,
        "media_port_min": args.media_min,
        "media_port_max": args.media_max,
        # Settings of features that may not exist in every sipd version:
        # only those the config knows are passed.
        # Calls from a peer that vanished end by the media timeout or, on
        # hold, by the session timer (refreshes go unanswered once the
        # fuzzer stops reading), within the fuzzer's settle time.
        "media_timeout": 2.0,
        "session_expires": 4,
        "min_se": 1,
        "overload_control": args.overload,
    }
    known = {f.name for f in dataclasses.fields(SipdConfig)}
    return SipdConfig(**{k: v for k, v in settings.items() if k in known})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--t1", type=float, default=0.05)
    parser.add_argument("--media-min", type=int, default=30000)
    parser.add_argument("--media-max", type=int, default=39999)
    parser.add_argument(
        "--overload",
        action="store_true",
        help="keep overload control on (off: every INVITE "
        "from the fuzzer's one source is admitted, so the call paths get the traffic)",
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="report the largest live allocations (tracemalloc) and object counts",
    )
    args = parser.parse_args()
    if args.trace_memory:
        import tracemalloc

        tracemalloc.start(10)

    socket.gethostbyname = _no_lookups  # type: ignore[assignment]

    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        globalLogPublisher,
        textFileLogObserver,
    )

    failures = FailureCounter()
    globalLogPublisher.addObserver(failures)
    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [level])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    config = _config(args)
    coordinator = UnifiedCoordinator(config, handler=FuzzHandler(), reactor=reactor)
    if os.environ.get("GC_TUNING", "1") != "0":  # as the daemon does (GC_TUNING=0: defaults)
        tune_collector()
    coordinator.start()
    answered = 0

    def accept(session: UnifiedSession) -> None:
        nonlocal answered
        answered += 1
        session.accept().addErrback(lambda f: None)  # a failed answer is the call's business

    coordinator.on_incoming = accept
    rss_start = settled_rss_kb()
    #: RSS after the fuzzer's warm-up, once settled (``MARK``): the baseline.
    rss_mark: int | None = None
    started = time.monotonic()

    def report() -> dict[str, Any]:
        c = coordinator
        layer = c.layer
        states = Counter(str(s.state) for s in c.store)
        sessions = max(len(c.store), len(c.registry), len(c.dialogs.legs))
        rss = settled_rss_kb()
        base = rss_mark or rss_start
        return {
            "uptime_s": round(time.monotonic() - started, 1),
            "answered": answered,
            "unhandled": failures.count,
            "unhandled_kinds": dict(failures.kinds),
            "leaked_sessions": sessions,
            "store": len(c.store),
            "registry": len(c.registry),
            "legs": len(c.dialogs.legs),
            "states": dict(states),
            "interceptor_pending": len(c.interceptor.pending),
            "media_ports_in_use": c.media.ports.in_use,
            "leaked_transactions": len(layer) if layer is not None else 0,
            "client_transactions": layer.client_count if layer is not None else 0,
            "server_transactions": layer.server_count if layer is not None else 0,
            "rss_start_kb": rss_start,
            "rss_mark_kb": rss_mark,
            "rss_kb": rss,
            "rss_peak_kb": hwm_kb(),
            "rss_growth_pct": round((rss - base) * 100.0 / base, 1),
            "rss_growth_from_start_pct": round((rss - rss_start) * 100.0 / rss_start, 1),
            "metric_series": c.metrics.render().count("\n"),
            "failure_samples": failures.samples[:5],
            **(_memory_report() if args.trace_memory else {}),
        }

    def idle() -> bool:
        c = coordinator
        layer = c.layer
        return (
            not len(c.store)
            and c.registry.is_empty()
            and not c.dialogs.legs
            and (layer is None or not len(layer))
        )

    class Control(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: Any) -> None:
            command, _, rest = data.decode("ascii", "replace").strip().partition(" ")
            if command == "STOP":
                reactor.callLater(0, reactor.stop)  # type: ignore[attr-defined]
            elif command in ("REPORT", "MARK"):
                deadline = time.monotonic() + float(rest or "0")
                self._wait(deadline, addr, command == "MARK")

        def _wait(self, deadline: float, addr: Any, mark: bool) -> None:
            nonlocal rss_mark
            if idle() or time.monotonic() >= deadline:
                if mark:
                    rss_mark = settled_rss_kb()
                text = json.dumps(report())
                print(f"REPORT {text}", flush=True)
                assert self.transport is not None
                self.transport.write(text.encode(), addr)
            else:
                reactor.callLater(0.1, self._wait, deadline, addr, mark)  # type: ignore[attr-defined]

    control: Any = reactor.listenUDP(0, Control(), interface="127.0.0.1", maxPacketSize=65535)  # type: ignore[attr-defined]

    def stop(signum: int, frame: Any) -> None:
        print(f"REPORT {json.dumps(report())}", flush=True)
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"PID {os.getpid()}", flush=True)
    print(f"PORT {coordinator.port}", flush=True)
    print(f"CONTROL {control.getHost().port}", flush=True)
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
