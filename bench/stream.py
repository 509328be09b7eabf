"""Streaming load: N concurrent calls, each bridged by ``call.stream()`` to a local echo bot.

Run: ``.venv/bin/python bench/stream.py`` (200 calls for 20 s), ``--calls N``,
``--duration S``, or ``--quick`` (20 calls for 4 s). The whole run is bounded
by ``--timeout`` (default 180 s): every process is stopped by PID after it.

Three processes of this script on 127.0.0.1:

* *bot*: autobahn's Twisted WebSocket server, echoing each ``media`` message
  back as a ``media`` message (what a voice bot's audio path does, minus the AI);
* *sipd*: one ``SimplePeer`` that answers every call and calls
  ``call.stream(ws://bot)`` on it: the process under test, holding all N streams;
* *caller*: one ``SimplePeer`` placing the N calls. Each call sends 20 ms
  frames in real time (``await call.send_audio``): silence, and every 500 ms
  one loud tone frame. The time from the moment the tone frame is on the wire
  (its ``send_audio`` fires) to the moment the caller receives a loud frame
  back is one round trip: caller -> RTP -> sipd -> WebSocket -> bot ->
  WebSocket -> sipd's 20 ms playback -> RTP -> caller.

``--profile PATH`` runs the sipd process under cProfile and writes its stats to
PATH (read them with ``python -m pstats PATH``).

Output: a table, then ``RESULT calls=<N> streamed=<n> p50_rtt_ms=<x>
p99_rtt_ms=<y> lost_probes=<k> sipd_cpu_pct=<c>``: ``streamed`` counts calls
whose stream carried audio both ways, ``lost_probes`` tone frames that never
came back. The issue's target: 200 calls, p99 under 60 ms.
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
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH = 20
PROBE_EVERY = 25  # frames: one loud probe per 500 ms
LOUD_RMS = 1000.0


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# -- bot ------------------------------------------------------------------------------------
def run_bot() -> None:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Echo(WebSocketServerProtocol):  # type: ignore[misc]
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if isBinary:
                self.sendMessage(payload, isBinary=True)
                return
            msg = json.loads(payload)
            if msg.get("event") == "media":
                reply = {
                    "event": "media",
                    "streamSid": msg["streamSid"],
                    "media": {"payload": msg["media"]["payload"]},
                }
                self.sendMessage(json.dumps(reply).encode(), isBinary=False)

    factory = WebSocketServerFactory()
    factory.protocol = Echo
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    reactor = _reactor()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=512)
    print(f"BOT_PORT {port.getHost().port}", flush=True)
    reactor.run()


# -- sipd -----------------------------------------------------------------------------------
def run_sipd(bot_url: str, profile: str = "") -> None:
    from twisted.internet import defer

    from sipd import SimplePeer

    reactor = _reactor()
    if profile:
        import cProfile

        profiler = cProfile.Profile()

        def dump() -> None:
            profiler.disable()
            profiler.dump_stats(profile)

        reactor.addSystemEventTrigger("before", "shutdown", dump)
        profiler.enable()
    ended: list[Any] = []
    failures: list[str] = []

    async def main() -> None:
        peer = await SimplePeer.create("bot", 0, media_port_min=30000, media_port_max=39999)
        print(f"SIPD_PORT {peer.port}", flush=True)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()

        def report() -> None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
            print(f"SIPD_CPU {100 * cpu / (time.monotonic() - t0):.1f}", flush=True)
            import gc

            from sipd.media.protocol import MediaClock

            clocks = [o for o in gc.get_objects() if isinstance(o, MediaClock)]
            print(
                "SIPD_STATS",
                [(c.slots, c.late_slots) for c in clocks],
                "to_bot",
                sum(e.frames_to_bot for e in ended),
                "from_bot",
                sum(e.frames_from_bot for e in ended),
                "dropped_from_bot",
                sum(e.dropped_from_bot for e in ended),
                "caught_up_ms",
                sum(getattr(e, "caught_up", 0) for e in ended) // 8,
                flush=True,
            )

        reactor.addSystemEventTrigger("before", "shutdown", report)
        while True:
            incoming = await peer.wait_for_incoming()
            call = await incoming.accept()
            d = call.stream(bot_url, connect_timeout=10)
            d.addCallbacks(ended.append, lambda f: failures.append(str(f.value)))

    defer.ensureDeferred(main()).addErrback(lambda f: print("SIPD_ERROR", f.value, flush=True))
    reactor.run()


# -- caller ---------------------------------------------------------------------------------
def run_caller(target: str, calls: int, duration: float) -> None:
    from twisted.internet import defer, task

    from sipd import AudioFrame, SimplePeer
    from sipd.media.tones import tone

    reactor = _reactor()
    probe = AudioFrame(tone(1000, 0.02))
    silence = AudioFrame.silence()
    rtts: list[float] = []
    sent_probes = [0]
    echoed = [0]

    async def one_call(peer: Any, start: defer.Deferred[None]) -> None:
        call = await peer.call(target)
        await call.wait_for_answer()
        await start
        pending: list[float] = []
        stop_at = reactor.seconds() + duration

        async def receive() -> None:
            got = False
            while (frame := await call.recv_audio()) is not None:
                x = frame.samples.astype(np.float64)
                if pending and float(np.sqrt(np.mean(x * x))) > LOUD_RMS:
                    rtts.append(reactor.seconds() - pending.pop(0))
                    got = True
            echoed[0] += got

        receiving = defer.ensureDeferred(receive())
        n = 0
        while reactor.seconds() < stop_at:
            if n % PROBE_EVERY == PROBE_EVERY - 1:
                await call.send_audio(probe)
                pending.append(reactor.seconds())
                sent_probes[0] += 1
            else:
                await call.send_audio(silence)
            n += 1
        await task.deferLater(reactor, 0.5, lambda: None)
        await call.hangup()
        await receiving

    async def main() -> None:
        peer = await SimplePeer.create("caller", 0, media_port_min=40000, media_port_max=49999)
        start: defer.Deferred[None] = defer.Deferred()
        running = []
        for i in range(0, calls, BATCH):
            batch = [
                defer.ensureDeferred(one_call(peer, start)) for _ in range(min(BATCH, calls - i))
            ]
            running += batch
            await task.deferLater(reactor, 0.2, lambda: None)
        await task.deferLater(reactor, 1.0, lambda: None)  # every stream settles
        start.callback(None)
        results = await defer.DeferredList(running, consumeErrors=True)
        failed = [str(r[1].value) for r in results if not r[0]]
        await peer.close()
        out = {
            "rtts": rtts,
            "probes": sent_probes[0],
            "streamed": echoed[0],
            "failed": failed[:5],
            "n_failed": len(failed),
        }
        print("CALLER " + json.dumps(out), flush=True)

    def done(_: object) -> None:
        reactor.stop()

    defer.ensureDeferred(main()).addErrback(
        lambda f: print("CALLER_ERROR", f.value, flush=True)
    ).addBoth(done)
    reactor.run()


# -- orchestration -------------------------------------------------------------------------
def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def read_line(proc: subprocess.Popen[str], prefix: str, deadline: float) -> str:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"process {proc.pid} ended before printing {prefix}")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
        sys.stderr.write(f"[{proc.pid}] {line}")
    raise SystemExit(f"no {prefix} from process {proc.pid} in time")


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return out or ""
    with contextlib.suppress(ValueError):
        return proc.stdout.read() if proc.stdout else ""
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="20 calls for 4 s")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--role", choices=["bot", "sipd", "caller"])
    parser.add_argument("--arg", default="")
    parser.add_argument(
        "--profile", default="", metavar="PATH", help="cProfile the sipd process into PATH"
    )
    args = parser.parse_args()
    if args.role == "bot":
        return run_bot()
    if args.role == "sipd":
        return run_sipd(args.arg, args.profile)
    if args.role == "caller":
        return run_caller(args.arg, args.calls, args.duration)
    if args.quick:
        args.calls, args.duration = 20, 4.0
    deadline = time.monotonic() + args.timeout
    procs: list[subprocess.Popen[str]] = []
    try:
        bot = spawn("--role", "bot")
        procs.append(bot)
        bot_port = read_line(bot, "BOT_PORT ", deadline)
        profile = ["--profile", os.path.abspath(args.profile)] if args.profile else []
        sipd = spawn("--role", "sipd", "--arg", f"ws://127.0.0.1:{bot_port}/stream", *profile)
        procs.append(sipd)
        sipd_port = read_line(sipd, "SIPD_PORT ", deadline)
        caller = spawn(
            "--role",
            "caller",
            "--arg",
            f"sip:bot@127.0.0.1:{sipd_port}",
            "--calls",
            str(args.calls),
            "--duration",
            str(args.duration),
        )
        procs.append(caller)
        result = json.loads(read_line(caller, "CALLER ", deadline))
        sipd_out = stop(sipd)
        cpu = next(
            (line.split()[1] for line in sipd_out.splitlines() if line.startswith("SIPD_CPU")),
            "nan",
        )
    finally:
        for proc in procs:
            stop(proc)
    rtts = np.array(result["rtts"]) * 1000.0
    p50, p99 = np.percentile(rtts, [50, 99]) if len(rtts) else (float("nan"),) * 2
    lost = result["probes"] - len(rtts)
    failed = f"{result['n_failed']} failed {result['failed']}"
    print(f"calls          {args.calls} for {args.duration:g} s ({failed})")
    print(f"probes         {result['probes']} sent, {len(rtts)} echoed")
    worst = rtts.max() if len(rtts) else float("nan")
    print(f"round trip     p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms")
    print(f"sipd CPU       {cpu} % of one core")
    for line in sipd_out.splitlines():
        if line.startswith("SIPD_STATS"):
            print(line)
    print(
        f"RESULT calls={args.calls} streamed={result['streamed']} p50_rtt_ms={p50:.1f} "
        f"p99_rtt_ms={p99:.1f} lost_probes={lost} sipd_cpu_pct={cpu}"
    )


if __name__ == "__main__":
    main()
