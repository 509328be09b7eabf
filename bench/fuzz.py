"""Fuzz a running sipd UA over real UDP on 127.0.0.1 and check that it stays sound.

Starts ``bench/fuzz_target.py`` (a UA that answers every call) in its own
process, then sends it ``--count`` datagrams at a bounded ``--rate``: valid
messages of every method (INVITE with SDP, ACK, BYE, CANCEL, OPTIONS,
REGISTER, UPDATE, REFER, NOTIFY, INFO/MESSAGE/unknown methods, and responses
to the requests the target sends), most of them mutated (bytes flipped,
inserted or cut, lines duplicated, dropped or swapped, header values and
numbers replaced by known troublemakers, Via parameters such as
``rport=65536``/``maddr=[::1]``/``received=bogus``, SDP ``c=`` host names and
NULs, lying Content-Lengths, bare CRs), plus random bytes. It plays a
stateful peer too: calls the target answers are ACKed (most of them) and
then get in-dialog requests with the right tags, so the dialog layer is
reached, not only the parser.

Every SIP datagram the fuzzer receives back must parse with sipd's own
parser (``bad_responses`` counts those that do not; samples go to the work
directory), with one exception the RFCs make: an error reply (a 400) to a
request whose From or To does not parse carries that header exactly as it
came (RFC 3261 §8.2.6.2: the response's From and To equal the request's, a
To tag added; RFC 4475 §3.1.2 expects the 400). The fuzzer remembers the
From and To of what it sent by Call-ID and CSeq and counts such a reply as
``echoed``, not bad, only when the header that fails is byte for byte the
one it sent.

At the end the fuzzer asks the target, on its control port, to wait until
its timers have run out (64*T1 with T1 = 50 ms, and the call timers) and
report: failures logged (exceptions that reached the reactor),
sessions and transactions left, and RSS. The target is stopped by PID.
Nothing is sent anywhere but 127.0.0.1 (see fuzz_target.py).

RSS is compared with a baseline taken after a warm-up (``--warmup``
datagrams of the same traffic, then settled): the first calls load code,
fill caches and leave the allocator's high-water mark, and the question a
long-running service asks is whether the next million datagrams leave
anything behind. Both figures are taken once garbage is collected and the C
allocator has returned free pages (``malloc_trim``); the growth from the
process start is printed too (``rss_growth_from_start_pct``).

The last line is::

    RESULT datagrams=<N> unhandled=<n> bad_responses=<n> leaked_sessions=<n>
    leaked_transactions=<n> rss_growth_pct=<x>

Usage::

    .venv/bin/python bench/fuzz.py --quick        # 20,000 datagrams, to try it
    .venv/bin/python bench/fuzz.py                # 1,000,000 at 3,000/s (~6 min)
                                                  # (after a 50,000-datagram warm-up)
    .venv/bin/python bench/fuzz.py --count 200000 --rate 5000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from fuzz_messages import Peer  # noqa: E402

from sipd.sip.errors import SipParseError  # noqa: E402
from sipd.sip.message import Request, Response, parse_message  # noqa: E402
from sipd.transport.udp import check_headers  # noqa: E402


def start_target(
    work: Path, t1: float, extra: list[str]
) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start fuzz_target.py; returns the process, its SIP port and its control port."""
    out = open(work / "target.out", "wb")  # noqa: SIM115 - the child writes it until it exits
    err = open(work / "target.err", "wb")  # noqa: SIM115
    args = [sys.executable, str(HERE / "fuzz_target.py"), "--port", "0", "--t1", str(t1), *extra]
    proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT)
    fields: dict[str, int] = {}
    deadline = time.monotonic() + 60  # tracemalloc makes the imports slow
    while time.monotonic() < deadline and proc.poll() is None:
        for line in (work / "target.out").read_text(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            if key in ("PID", "PORT", "CONTROL") and value.strip().isdigit():
                fields[key] = int(value)
        if len(fields) == 3:
            break
        time.sleep(0.05)
    if len(fields) != 3 or fields["PID"] != proc.pid:
        stop_target(proc)
        sys.exit(f"fuzz_target.py did not start:\n{(work / 'target.err').read_text()[-3000:]}")
    return proc, fields["PORT"], fields["CONTROL"]


def stop_target(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the target by PID, SIGKILL after 5 s, and reap it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass


#: Call-IDs whose requests' From/To the fuzzer remembers, at most.
_REMEMBER = 200_000
#: Distinct From/To pairs remembered per Call-ID, at most.
_PER_CALL = 256


def _header_value(data: bytes, names: tuple[bytes, ...]) -> str | None:
    """The first value of a header (long or compact name) in raw message bytes."""
    for line in data.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in names:
            return value.strip().decode("utf-8", "replace")
    return None


class SentHeaders:
    """The From and To of each request sent, by its raw Call-ID (bounded).

    Not by branch: a CANCEL shares its INVITE's branch and a mutation may
    have removed it; not by CSeq: a reply repairs an out-of-range one. A
    reply echoes the Call-ID as it came.
    """

    def __init__(self) -> None:
        self._sent: dict[str, list[tuple[str | None, str | None]]] = {}

    def record(self, data: bytes) -> None:
        if data.startswith(b"SIP/"):
            return
        call_id = _header_value(data, (b"call-id", b"i"))
        if call_id is None:
            return
        if len(self._sent) >= _REMEMBER:
            del self._sent[next(iter(self._sent))]
        entry = (_header_value(data, (b"from", b"f")), _header_value(data, (b"to", b"t")))
        entries = self._sent.setdefault(call_id, [])
        if entry not in entries:
            entries.append(entry)
            del entries[:-_PER_CALL]

    def echoes_bad_header(self, message: Response) -> bool:
        """True for an error reply whose unparseable From or To is the one its request
        carried (§8.2.6.2: From and To are copied, a To tag added)."""
        if message.status < 400:
            return False
        key = (message.headers.get("Call-ID") or "").strip()
        got_from = (message.headers.get("From") or "").strip()
        got_to = (message.headers.get("To") or "").strip()
        for sent_from, sent_to in self._sent.get(key, ()):
            if sent_from is None or sent_to is None or got_from != sent_from:
                continue
            if got_to == sent_to or got_to.startswith(f"{sent_to};tag="):
                break
        else:
            return False
        try:
            check_headers(message)
        except SipParseError as exc:
            return str(exc).startswith(("bad From header", "bad To header"))
        return False


class Checker:
    """Reads what the target sends back; every SIP datagram must parse."""

    def __init__(self, sock: socket.socket, peer: Peer, work: Path) -> None:
        self.sock = sock
        self.peer = peer
        self.samples = work / "bad_responses.txt"
        self.received = 0
        self.media = 0
        self.bad = 0
        #: 400s that echo the request's unparseable From/To (§8.2.6.2).
        self.echoed = 0
        self.sent = SentHeaders()
        self.statuses: dict[str, int] = {}

    def drain(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue  # ICMP for an earlier datagram of ours
            self.received += 1
            if data and data[0] & 0xC0 == 0x80:
                self.media += 1  # RTP/RTCP from a call whose SDP named this port
                continue
            self._check(data, (addr[0], addr[1]))

    def _check(self, data: bytes, source: tuple[str, int]) -> None:
        message: Request | Response | None = None
        try:
            message = parse_message(data)
            check_headers(message)
            message.call_id  # noqa: B018 - parsing is the point
            message.cseq  # noqa: B018
        except Exception as exc:
            if isinstance(message, Response) and self.sent.echoes_bad_header(message):
                self.echoed += 1
                return
            self.bad += 1
            if self.bad <= 50:
                with self.samples.open("a", encoding="utf-8") as out:
                    out.write(f"--- {exc!r}\n{data[:2000]!r}\n")
            return
        key = str(message.status) if isinstance(message, Response) else message.method
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if isinstance(message, Response):
            reply = self.peer.response_received(message)
        else:
            reply = self.peer.request_received(message)
        if reply is not None:
            self.sock.sendto(reply, source)


def ask(control: int, command: str, wait: float) -> dict[str, Any] | None:
    """Ask the target to settle (up to ``wait`` s) and report (``REPORT``, or ``MARK`` the
    RSS baseline); None if it does not answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(wait + 30)
        sock.sendto(f"{command} {wait}".encode(), ("127.0.0.1", control))
        try:
            data, _ = sock.recvfrom(1 << 20)
        except TimeoutError:
            return None
    report: dict[str, Any] = json.loads(data)
    return report


class Blaster:
    """Sends the peer's datagrams at a bounded rate and reads what comes back."""

    def __init__(
        self,
        sock: socket.socket,
        dest: tuple[str, int],
        peer: Peer,
        checker: Checker,
        proc: subprocess.Popen[bytes],
        rate: float,
    ) -> None:
        self.sock = sock
        self.dest = dest
        self.peer = peer
        self.checker = checker
        self.proc = proc
        self.rate = rate
        self.sent = 0
        self.refused = 0
        self.seconds = 0.0

    def run(self, count: int, label: str) -> bool:
        """Send ``count`` datagrams; False if the target died or time ran out."""
        started = time.monotonic()
        limit = count / self.rate * 2 + 60
        next_progress = started + 10
        batch = max(1, int(self.rate / 200))
        done = 0
        ok = True
        while done < count:
            now = time.monotonic()
            if now - started > limit:
                print(f"fuzz: {label}: time limit {limit:.0f}s reached", flush=True)
                ok = False
                break
            due = started + done / self.rate
            if due > now:
                time.sleep(min(due - now, 0.05))
            for _ in range(min(batch, count - done)):
                datagram = self.peer.next_datagram()
                self.checker.sent.record(datagram)
                try:
                    self.sock.sendto(datagram, self.dest)
                except OSError:
                    self.refused += 1  # e.g. a datagram over 64 KiB
                done += 1
            self.checker.drain()
            if self.proc.poll() is not None:
                print(f"fuzz: {label}: the target exited", flush=True)
                ok = False
                break
            if now >= next_progress:
                next_progress = now + 10
                print(
                    f"fuzz: {label}: {done} sent ({done / (now - started):.0f}/s), "
                    f"{self.checker.received} received, bad={self.checker.bad}, "
                    f"calls={self.peer.calls_answered}",
                    flush=True,
                )
        self.sent += done
        self.seconds += time.monotonic() - started
        # Let the replies to the last datagrams arrive, answering the target's BYEs.
        quiet_until = time.monotonic() + 1.0
        while time.monotonic() < quiet_until:
            self.checker.drain()
            time.sleep(0.01)
        return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="datagrams to send")
    parser.add_argument("--quick", action="store_true", help="20,000 datagrams, to try it")
    parser.add_argument("--rate", type=float, default=3000.0, help="datagrams per second")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="datagrams sent first, then settled, to take the RSS baseline "
        "(default: a tenth of --count, 10,000 to 50,000; 0: compare with the RSS at start)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--t1", type=float, default=0.05, help="the target's T1 (seconds)")
    parser.add_argument(
        "--settle",
        type=float,
        default=45.0,
        help="longest wait for the target's timers (Timer D alone is 32 s)",
    )
    parser.add_argument("--overload", action="store_true", help="target keeps overload control")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="the target reports its largest allocations (slow: use a low --rate)",
    )
    parser.add_argument("--work", default=None, help="directory for logs (default: a temp dir)")
    args = parser.parse_args()
    count = 20_000 if args.quick else args.count
    if count <= 0 or args.rate <= 0:
        parser.error("--count and --rate must be positive")
    default_warmup = min(max(count // 10, 10_000), 50_000)
    warmup = default_warmup if args.warmup is None else max(0, args.warmup)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    work = Path(args.work or tempfile.mkdtemp(prefix="sipd-fuzz."))
    work.mkdir(parents=True, exist_ok=True)

    extra = ["--overload"] if args.overload else []
    extra += ["--trace-memory"] if args.trace_memory else []
    proc, port, control = start_target(work, args.t1, extra)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where our SDP says to send RTP
    rtp.bind(("127.0.0.1", 0))
    rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer = Peer(random.Random(seed), sock.getsockname()[1], port, rtp.getsockname()[1])
    checker = Checker(sock, peer, work)
    blaster = Blaster(sock, ("127.0.0.1", port), peer, checker, proc, args.rate)
    print(
        f"fuzz: target pid={proc.pid} port={port} control={control} seed={seed} "
        f"count={count} warmup={warmup} rate={args.rate:g}/s work={work}",
        flush=True,
    )
    report: dict[str, Any] | None = None
    try:
        ok = True
        if warmup:
            ok = blaster.run(warmup, "warm-up")
            mark = ask(control, "MARK", args.settle) if ok else None
            if mark is not None:
                if "traced_kb" in mark:
                    print(f"fuzz: warm-up: Python heap {mark['traced_kb']} KiB", flush=True)
                print(
                    f"fuzz: warm-up settled: rss {mark['rss_start_kb'] // 1024} MB at start, "
                    f"{mark['rss_mark_kb'] // 1024} MB after {warmup} datagrams (the baseline); "
                    f"left: sessions={mark['leaked_sessions']} "
                    f"transactions={mark['leaked_transactions']}",
                    flush=True,
                )
        if ok:
            ok = blaster.run(count, "run")
        if proc.poll() is None:
            report = ask(control, "REPORT", args.settle)
        checker.drain()
    finally:
        stop_target(proc)
        sock.close()
        rtp.close()

    sent = blaster.sent
    print(
        f"fuzz: sent {sent} datagrams in {blaster.seconds:.0f}s "
        f"({sent / max(blaster.seconds, 1e-9):.0f}/s), {blaster.refused} refused locally; "
        f"received {checker.received} ({checker.media} RTP/RTCP), "
        f"calls answered {peer.calls_answered}",
        flush=True,
    )
    top = sorted(checker.statuses.items(), key=lambda kv: -kv[1])[:15]
    print(f"fuzz: replies by status/method: {dict(top)}", flush=True)
    print(
        f"fuzz: {checker.echoed} 400s echoed the request's unparseable From/To "
        "(RFC 3261 §8.2.6.2; not counted as bad)",
        flush=True,
    )
    if report is None:
        print(f"fuzz: no report from the target; see {work}/target.err", flush=True)
        report = {"unhandled": -1, "leaked_sessions": -1, "leaked_transactions": -1}
        report["rss_growth_pct"] = float("nan")
    else:
        lists = ("failure_samples", "top_allocations", "object_counts")
        shown = {k: v for k, v in report.items() if k not in lists}
        print(f"fuzz: target report {json.dumps(shown)}", flush=True)
        for line in report.get("top_allocations", []):
            print(f"fuzz: target memory: {line}", flush=True)
        if "object_counts" in report:
            print(f"fuzz: target objects: {report['object_counts']}", flush=True)
        for sample in report.get("failure_samples", [])[:3]:
            print(f"fuzz: logged failure:\n{sample}", flush=True)
    if checker.bad:
        print(f"fuzz: samples of unparseable replies in {checker.samples}", flush=True)
    print(
        f"RESULT datagrams={sent} unhandled={report['unhandled']} bad_responses={checker.bad} "
        f"leaked_sessions={report['leaked_sessions']} "
        f"leaked_transactions={report['leaked_transactions']} "
        f"rss_growth_pct={report['rss_growth_pct']}",
        flush=True,
    )
    clean = (
        report["unhandled"] == 0
        and checker.bad == 0
        and report["leaked_sessions"] == 0
        and report["leaked_transactions"] == 0
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
