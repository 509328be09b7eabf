"""The two sipd processes of ``bench/soak.sh``: the UA under test and the media caller.

``--role ua`` (the system under test) is one sipd UA that answers every
call, like ``bench/accept_peer.py``, with a short ``media_timeout`` and RFC
4028 session timers. Calls from the media caller (From user ``media``) get a
400 Hz tone in return for as long as they last, 20 ms G.711 frames sent with
``call.send_audio`` (what arrives is read and dropped); sipp's calls get no
audio (``silence_when_idle`` is off). For every call that ends it records
why, from ``session.failure``:

* ``bye``: no failure (the caller hung up);
* ``media_timer``: "no RTP or RTCP from ...": ended by the media timeout;
* ``session_timer``: "... not refreshed in time (RFC 4028)";
* ``other``: any other failure (its type and message are written out).

Every end but ``bye`` is appended to ``--ends FILE`` as ``<reason> <kind>
<call-id>`` (kind ``sipp`` or ``media``), so the script can match the calls
sipp abandoned against the calls the timers ended.

``--role media`` keeps ``--calls`` bidirectional G.711 calls up to the UA: each
call sends a 400 Hz tone and reads what the UA sends, lasts ``--hold`` seconds
(0.5-1.5 times, spread so the calls do not all end together), is hung up with
BYE and is placed again. A call that is refused, ends before it is hung up, or
whose hangup fails is a failure; so is a call that received no audio at all.

Both print ``PID <pid>`` (and the UA ``PORT <port>``) once ready, a line
``STATS <json>`` on SIGUSR1 (the script asks every 30 s) and, on SIGTERM,
``FINAL <json>`` before they exit (the media caller first hangs up its calls).
The UA's counts include, to tell its own stalls from a busy machine's: how
late a 100 ms timer of its event loop ran (worst since the last STATS, and
overall), its garbage-collector pauses (worst, total, full collections and
the objects they freed), the objects the GC tracks, the INVITEs its overload
control refused with 503 (by reason), and the session-timer events seen in
its media calls' histories.

The UA tunes the garbage collector as the daemon does
(:func:`sipd.runtime.tune_collector`; ``GC_TUNING=0`` keeps the defaults).

Usage::

    .venv/bin/python bench/soak_peer.py --role ua --ends FILE [--media-timeout 5] [--set K=V]...
    .venv/bin/python bench/soak_peer.py --role media --target sip:ua@127.0.0.1:PORT [--calls 20]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

#: How long the media caller waits for an answer before calling it a failure.
ANSWER_TIMEOUT_S = 15.0
#: After a failed call the media caller waits this long before the next one.
RETRY_PAUSE_S = 1.0
#: Session-timer events counted in the history of the UA's media calls.
REFRESH_EVENTS = frozenset(
    {"SessionRefreshDue", "RefreshAnswered", "RefreshFailed", "RemoteRefresh", "RemoteReinvite"}
)
#: Period of the UA's event-loop lag probe (seconds).
LAG_PROBE_S = 0.1


def classify(failure: Exception | None) -> str:
    """Why a call ended, from ``session.failure``: bye, media_timer, session_timer, other."""
    if failure is None:
        return "bye"
    text = str(failure)
    if "no RTP or RTCP" in text:
        return "media_timer"
    if "not refreshed in time" in text:
        return "session_timer"
    return "other"


def _start_logging() -> None:
    """Warnings and errors to stderr, as a daemon logs by default.

    Until logging begins Twisted buffers every event in memory, which would
    show up as RSS growth.
    """
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [level])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def _tone_frame() -> Any:
    from sipd.media.tones import ToneGenerator

    # 400 Hz is 8 whole cycles per 20 ms: one frame repeats seamlessly.
    return ToneGenerator(400).next_frame()


def _overload_rejected(metrics: Any) -> dict[str, int]:
    """New INVITEs the UA refused with 503, by reason (from its Prometheus text)."""
    found: dict[str, int] = {}
    for line in metrics.render().splitlines():
        if line.startswith("sipd_overload_rejected_total"):
            name, _, value = line.rpartition(" ")
            reason = name.partition('reason="')[2].partition('"')[0] or "all"
            found[reason] = int(float(value))
    return found


def _emit(tag: str, payload: dict[str, Any]) -> None:
    print(f"{tag} {json.dumps(payload, sort_keys=True)}", flush=True)


def _on_signals(reactor: Any, stats: Any, final: Any) -> None:
    """SIGUSR1 prints STATS; SIGTERM/SIGINT run ``final`` (which stops the reactor)."""

    def usr1(signum: int, frame: Any) -> None:
        reactor.callFromThread(lambda: _emit("STATS", stats()))

    def term(signum: int, frame: Any) -> None:
        reactor.callFromThread(final)

    signal.signal(signal.SIGUSR1, usr1)
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)


# -- the UA under test --------------------------------------------------------------------
def run_ua(args: argparse.Namespace) -> int:
    import yaml
    from twisted.internet import defer, reactor, task

    from sipd import CallStateError, IncomingCall, SipdConfig, UnifiedCoordinator, UnifiedSession
    from sipd.runtime import tune_collector

    settings: dict[str, Any] = {
        # Every caller is 127.0.0.1: a per-source limit would throttle the whole load.
        "overload_source_rate": 0,
        "media_timeout": args.media_timeout,
        "session_expires": args.session_expires,
        "min_se": args.min_se,
    }
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key.strip()] = yaml.safe_load(value)
    _start_logging()
    config = SipdConfig(
        name="ua",
        host="127.0.0.1",
        port=args.port,
        send_ringing=True,
        silence_when_idle=False,
        media_port_min=args.media_port_min,
        media_port_max=args.media_port_max,
        **settings,
    )
    coordinator = UnifiedCoordinator(config, reactor=reactor)
    if os.environ.get("GC_TUNING", "1") != "0":  # as the daemon does (GC_TUNING=0: defaults)
        tune_collector()
    coordinator.start()
    ends_file = open(args.ends, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    counts: dict[str, Counter[str]] = {"sipp": Counter(), "media": Counter()}
    offered: Counter[str] = Counter()
    other_reasons: Counter[str] = Counter()
    refreshes: Counter[str] = Counter()
    streaming = 0
    frame = _tone_frame()
    started = time.monotonic()
    # The UA's own event-loop lag (a 100 ms timer's lateness), since the last STATS.
    lag = {
        "max": 0.0,
        "max_total": 0.0,
        "over_100ms": 0,
        "expected": time.monotonic() + LAG_PROBE_S,
    }

    def probe_lag() -> None:
        now = time.monotonic()
        late = max(0.0, now - lag["expected"])
        lag["max"] = max(lag["max"], late)
        lag["max_total"] = max(lag["max_total"], late)
        if late > 0.1:
            lag["over_100ms"] += 1
        lag["expected"] = now + LAG_PROBE_S

    task.LoopingCall(probe_lag).start(LAG_PROBE_S, now=False)
    # Garbage-collector pauses (a full collection of a big heap stalls the loop too).
    gc_pause = {"start": 0.0, "max": 0.0, "total": 0.0, "full": 0, "full_collected": 0}
    gc_worst: dict[str, Any] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_pause["start"] = time.perf_counter()
            return
        pause = time.perf_counter() - gc_pause["start"]
        if pause > gc_pause["max"]:
            gc_pause["max"] = pause
            gc_worst.update(info, ms=round(pause * 1000, 1))
        gc_pause["total"] += pause
        if info.get("generation") == 2:
            gc_pause["full"] += 1
            gc_pause["full_collected"] += info.get("collected", 0)

    gc.callbacks.append(on_gc)

    def kind_of(session: UnifiedSession) -> str:
        return "media" if "media@" in (session.remote_uri or "") else "sipp"

    async def stream(session: UnifiedSession) -> None:
        """Answer a media call; send a tone and drain what arrives until it ends."""
        nonlocal streaming
        call = await IncomingCall(session).accept()
        streaming += 1
        try:

            async def drain() -> None:
                while await call.recv_audio() is not None:
                    pass

            receiving = defer.ensureDeferred(drain())
            try:
                # Bounded by the call's life: send_audio fails once it has ended.
                while not session.is_ended:
                    await call.send_audio(frame)
            except CallStateError:
                pass
            await receiving
        finally:
            streaming -= 1

    def incoming(session: UnifiedSession) -> None:
        kind = kind_of(session)
        offered[kind] += 1
        if kind == "media":
            defer.ensureDeferred(stream(session)).addErrback(lambda f: None)
        else:
            session.accept().addErrback(lambda f: None)  # the failure is on the session

    def ended(session: UnifiedSession) -> None:
        kind = kind_of(session)
        reason = classify(session.failure)
        counts[kind][reason] += 1
        if kind == "media":
            # Session-timer activity in the call's recorded transitions.
            for step in getattr(session, "history", ()):
                name = type(step.event).__name__
                if name in REFRESH_EVENTS:
                    refreshes[name] += 1
        if reason != "bye":
            ends_file.write(f"{reason} {kind} {session.call_id}\n")
        if reason == "other":
            failure = session.failure
            other_reasons[f"{kind}: {type(failure).__name__}: {str(failure)[:120]}"] += 1

    coordinator.on_incoming = incoming
    coordinator.on_session_end.append(ended)

    def stats() -> dict[str, Any]:
        states = Counter(str(s.state) for s in coordinator.store)
        lag_max, lag_over = lag["max"], lag["over_100ms"]
        lag["max"], lag["over_100ms"] = 0.0, 0
        return {
            "t": round(time.monotonic() - started, 1),
            "lag_max_ms": round(lag_max * 1000, 1),
            "lags_over_100ms": lag_over,
            "lag_max_total_ms": round(lag["max_total"] * 1000, 1),
            "gc_max_ms": round(gc_pause["max"] * 1000, 1),
            "gc_total_s": round(gc_pause["total"], 2),
            "gc_full": gc_pause["full"],
            "gc_full_collected": gc_pause["full_collected"],
            "gc_worst": dict(gc_worst),
            "overload_rejected": _overload_rejected(coordinator.metrics),
            "offered": dict(offered),
            "ended": {k: dict(v) for k, v in counts.items()},
            "live": len(coordinator.store),
            "states": dict(states),
            "streaming": streaming,
            "other_reasons": dict(other_reasons.most_common(10)),
            "media_call_refresh_events": dict(refreshes),
            "gc_objects": len(gc.get_objects()),
        }

    def final() -> None:
        _emit("FINAL", stats())
        ends_file.close()
        reactor.stop()  # type: ignore[attr-defined]

    _on_signals(reactor, stats, final)
    print(f"PID {os.getpid()}", flush=True)
    print(f"PORT {coordinator.port}", flush=True)
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    return 0


# -- the media caller ---------------------------------------------------------------------
def run_media(args: argparse.Namespace) -> int:
    from twisted.internet import defer, reactor, task

    from sipd import CallStateError, SimplePeer

    _start_logging()
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    rtp: Counter[str] = Counter()
    up = 0
    stopping = False
    started = time.monotonic()
    frame = _tone_frame()
    deadline = started + args.max_seconds

    def fail(what: str, detail: str) -> None:
        counts["failed"] += 1
        reasons[f"{what}: {detail[:120]}"] += 1

    async def one_call(peer: Any, slot: int, hold: float) -> None:
        """Place one call, stream for ``hold`` seconds both ways, hang up."""
        nonlocal up
        counts["placed"] += 1
        call = await peer.call(args.target)
        answer = call.wait_for_answer()
        answer.addTimeout(ANSWER_TIMEOUT_S, reactor)
        try:
            await answer
        except Exception as exc:
            if not stopping:
                fail("setup", f"{type(exc).__name__}: {exc}")
            if not call.session.is_ended:
                await call.hangup()
            return
        counts["answered"] += 1
        up += 1
        received = 0

        async def receive() -> None:
            nonlocal received
            while await call.recv_audio() is not None:
                received += 1

        receiving = defer.ensureDeferred(receive())
        frames = max(1, round(hold * 50))
        dropped = False
        try:
            try:
                for _ in range(frames):  # bounded: hold seconds of 20 ms frames
                    if stopping:
                        break
                    await call.send_audio(frame)
            except CallStateError:
                dropped = True
            if dropped or call.session.is_ended:
                if not stopping:
                    failure = call.failure
                    fail("dropped", f"{type(failure).__name__}: {failure}" if failure else "BYE")
            else:
                try:
                    await call.hangup()
                except Exception as exc:
                    fail("hangup", f"{type(exc).__name__}: {exc}")
                else:
                    if received == 0:
                        fail("silent", "no audio received from the UA")
                    else:
                        counts["completed"] += 1
            await receiving
            s = call.stats()
            for key in ("packets_sent", "packets_received", "packets_lost", "late"):
                value = s.get(key)
                if isinstance(value, int):
                    rtp[key] += value
        finally:
            up -= 1

    async def keep_slot(peer: Any, slot: int) -> None:
        # Spread the first calls' ends over the hold time, then 0.5-1.5 x hold.
        first = True
        while not stopping and time.monotonic() < deadline:  # bounded by the deadline
            hold = args.hold * (random.uniform(0.1, 1.0) if first else random.uniform(0.5, 1.5))
            first = False
            before = counts["failed"]
            try:
                await one_call(peer, slot, hold)
            except Exception as exc:
                fail("error", f"{type(exc).__name__}: {exc}")
            if counts["failed"] != before and not stopping:
                await task.deferLater(reactor, RETRY_PAUSE_S, lambda: None)

    def stats() -> dict[str, Any]:
        return {
            "t": round(time.monotonic() - started, 1),
            "up": up,
            **dict(counts),
            "reasons": dict(reasons.most_common(10)),
            "rtp": dict(rtp),
        }

    async def main() -> None:
        nonlocal stopping
        peer = await SimplePeer.create(
            "media",
            0,
            media_port_min=args.media_port_min,
            media_port_max=args.media_port_max,
            media_timeout=args.media_timeout,
            session_expires=args.session_expires,
            min_se=args.min_se,
        )
        slots = []
        for slot in range(args.calls):
            slots.append(defer.ensureDeferred(keep_slot(peer, slot)))
            await task.deferLater(reactor, 0.05, lambda: None)
        finished = defer.gatherResults(slots, consumeErrors=True)

        def final() -> None:
            nonlocal stopping
            stopping = True

            def report(_: object) -> None:
                _emit("FINAL", stats())
                reactor.stop()  # type: ignore[attr-defined]

            # Slots stop within a frame; give them 15 s at most, then close the peer.
            finished.addTimeout(15, reactor)
            finished.addBoth(lambda _: peer.close()).addBoth(report)

        _on_signals(reactor, stats, final)
        print(f"PID {os.getpid()}", flush=True)
        print("READY", flush=True)

    defer.ensureDeferred(main()).addErrback(
        lambda f: (
            print(f"media caller failed: {f.getErrorMessage()}", file=sys.stderr),
            reactor.stop(),
        )  # type: ignore[attr-defined]
    )
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=["ua", "media"], required=True)
    parser.add_argument("--port", type=int, default=0, help="UA: SIP port (0: any free one)")
    parser.add_argument("--ends", help="UA: file the non-BYE call ends are appended to")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="UA: a SipdConfig field (value read as YAML)",
    )
    parser.add_argument("--media-timeout", type=float, default=5.0)
    parser.add_argument("--session-expires", type=int, default=120)
    parser.add_argument("--min-se", type=int, default=90)
    parser.add_argument("--media-port-min", type=int, default=20000)
    parser.add_argument("--media-port-max", type=int, default=39999)
    parser.add_argument("--target", help="media: the UA's URI")
    parser.add_argument("--calls", type=int, default=20, help="media: concurrent calls")
    parser.add_argument("--hold", type=float, default=120.0, help="media: mean call length (s)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=7200.0,
        help="media: place no call after this many seconds",
    )
    args = parser.parse_args(argv)
    if args.role == "ua" and not args.ends:
        parser.error("--role ua needs --ends FILE")
    if args.role == "media" and not args.target:
        parser.error("--role media needs --target URI")
    return args


def main() -> int:
    args = parse_args()
    return run_ua(args) if args.role == "ua" else run_media(args)


if __name__ == "__main__":
    sys.exit(main())
