"""Shared fixtures for the integration and interop suites.

Everything here drives real sockets on 127.0.0.1 with the real global
reactor (pytest-twisted installs the default one). The fixtures clean up
after themselves and check that the code under test did too:

* ``peers`` makes :class:`~sipd.SimplePeer` objects on free ports with short
  RFC timers; after the test it checks that every registry and store is
  empty and no session timer is pending, closes the peers, and checks that
  the reactor holds no delayed call the test added.
* ``raw_ua`` makes a scripted SIP endpoint: a plain UDP socket that records
  every message it receives and sends the exact bytes a test writes, so a
  test can play the misbehaving or racing peer the RFC describes.
* ``sipp`` starts ``/usr/bin/sipp`` in the foreground as a child process,
  watches it without blocking the reactor, and kills it by PID at the end.
* ``nft_loss`` drops a share of the datagrams arriving at given UDP ports
  with an nftables table of its own, deleted again even when the test fails.
* ``PortHolder`` binds UDP ports in another process (the busy RTP ports of
  another program). With ``SIPD_TEST_BUSY_PORTS=1`` one holds 16384-16414
  and a scattering of the default RTP range for the whole run: the suite
  must pass so, since peers skip ports the OS refuses.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol

from sipd import SimplePeer
from sipd.sip.message import Request, Response, parse_message

__all__ = [
    "SIPP",
    "NftLoss",
    "PeerFactory",
    "PortHolder",
    "RawUA",
    "SippRun",
    "eventually",
    "free_port_range",
    "free_udp_port",
    "get_reactor",
    "settle",
    "within",
]

SIPP = "/usr/bin/sipp"
NFT = "/usr/sbin/nft"

#: Modules whose delayed calls belong to one call (ring timer, 2xx
#: retransmission, ACK wait, defer timeout): none may outlive the call.
_CALL_TIMER_MODULES = (
    "sipd.session.session",
    "sipd.session.dialog_adapter",
    "sipd.session.interceptor",
    "sipd.session.coordinator",
    "sipd.api.",
)


def get_reactor() -> Any:
    """The global reactor (imported late so pytest-twisted installs it first)."""
    from twisted.internet import reactor

    return reactor


def within(d: defer.Deferred[Any] | Any, seconds: float) -> defer.Deferred[Any]:
    """``d`` with a deadline: fails with ``defer.TimeoutError`` after ``seconds``.

    Every wait in these suites goes through this, so a broken call makes a
    test fail quickly instead of hanging the run.
    """
    if not isinstance(d, defer.Deferred):
        d = defer.ensureDeferred(d)
    return d.addTimeout(seconds, get_reactor())


def settle(seconds: float) -> defer.Deferred[None]:
    """Let the reactor run for ``seconds`` (never blocks it)."""
    return task.deferLater(get_reactor(), seconds, lambda: None)


async def eventually(
    check: Callable[[], bool], timeout: float = 3.0, interval: float = 0.01
) -> bool:
    """Poll ``check`` on the reactor until it is true or ``timeout`` passes."""
    reactor = get_reactor()
    deadline = reactor.seconds() + timeout
    while True:
        if check():
            return True
        if reactor.seconds() >= deadline:
            return False
        await settle(interval)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- ports held by another program -----------------------------------------------------------
_HOLDER = """
import socket, sys
held = []
for i, port in enumerate(int(p) for p in sys.argv[1:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("0.0.0.0" if i % 2 else "127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append(s)
print("HELD", " ".join(str(s.getsockname()[1]) for s in held), flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us by PID)
"""


class PortHolder:
    """Another process that binds UDP ``ports`` (those it can) until :meth:`close`."""

    def __init__(self, ports: list[int]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, *map(str, ports)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        assert line[:1] == ["HELD"], f"port holder failed: {line}"
        self.held = [int(p) for p in line[1:]]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


#: What SIPD_TEST_BUSY_PORTS=1 holds: the bottom of the default RTP range and
#: every 50th port above it.
BUSY_DEFAULT_PORTS = [*range(16384, 16415), *range(16450, 32768, 50)]


@pytest.fixture(autouse=True, scope="session")
def _busy_default_rtp_ports() -> Iterator[None]:
    """With SIPD_TEST_BUSY_PORTS=1, another process holds ports of the default RTP range."""
    if os.environ.get("SIPD_TEST_BUSY_PORTS") != "1":
        yield
        return
    holder = PortHolder(BUSY_DEFAULT_PORTS)
    try:
        yield
    finally:
        holder.close()


def free_port_range(size: int, host: str = "127.0.0.1") -> int:
    """An even port with ``size`` UDP ports from it all free on ``host`` a moment ago."""
    for _ in range(100):
        base = random.randrange(40000, 60000, 2)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + size):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind((host, port))
            except OSError:
                continue
            return base
    raise AssertionError(f"no {size} consecutive free UDP ports found")


# -- SimplePeer factory ---------------------------------------------------------------
def _timer_owner(call: Any) -> str:
    func = call.func
    module = getattr(func, "__module__", None) or ""
    if not module and hasattr(func, "func"):  # functools.partial
        module = getattr(func.func, "__module__", "") or ""
    return module


def _leftovers(peer: SimplePeer) -> list[str]:
    c = peer.coordinator
    problems = []
    if len(c.store):
        problems.append(f"store holds {[repr(s) for s in c.store]}")
    if not c.registry.is_empty():
        problems.append(f"registry holds {len(c.registry)} session(s)")
    if c.dialogs.legs:
        problems.append(f"dialog adapter holds legs {list(c.dialogs.legs)}")
    if c.interceptor.pending:
        problems.append(f"interceptor holds pending INVITEs {list(c.interceptor.pending)}")
    if c._pending:
        problems.append(f"coordinator holds pending INVITEs {list(c._pending)}")
    if c.media.ports.in_use:
        problems.append(f"{c.media.ports.in_use} RTP port pair(s) still allocated")
    return [f"{peer.name}: {p}" for p in problems]


class PeerFactory:
    """Creates peers for one test; ``await peers("alice")``."""

    #: Short timers: T1 = 50 ms makes Timer B/H/F 3.2 s.
    defaults: dict[str, Any] = {"t1": 0.05, "t2": 0.4}

    def __init__(self) -> None:
        self.created: list[SimplePeer] = []
        #: Set by a test that deliberately leaves calls up for close() to end.
        self.allow_live_calls = False

    async def __call__(self, name: str = "peer", **settings: Any) -> SimplePeer:
        options = {**self.defaults, **settings}
        peer = await SimplePeer.create(name, 0, **options)
        self.created.append(peer)
        return peer

    def leftovers(self) -> list[str]:
        return [p for peer in self.created for p in _leftovers(peer)]

    def call_timers(self) -> list[str]:
        reactor = get_reactor()
        return [
            f"{_timer_owner(dc)}:{getattr(dc.func, '__qualname__', dc.func)!s}"
            for dc in reactor.getDelayedCalls()
            if dc.active() and _timer_owner(dc).startswith(_CALL_TIMER_MODULES)
        ]

    async def close_all(self) -> None:
        for peer in self.created:
            await within(peer.close(), 10)


@pytest_twisted.async_yield_fixture
async def peers() -> AsyncIterator[PeerFactory]:
    """A factory of SimplePeers that checks nothing of the test's calls is left.

    After the test: (1) every peer's store, registry, dialog legs, pending
    INVITEs and RTP ports are empty (polled for up to 3 s, so the far side
    of a hang-up may finish) and no per-call timer is pending; (2) the peers
    are closed; (3) the reactor holds no delayed call that was not there
    before the test.
    """
    reactor = get_reactor()
    before = {id(dc) for dc in reactor.getDelayedCalls()}
    factory = PeerFactory()
    failed: list[str] = []
    try:
        yield factory
        if not factory.allow_live_calls:
            await eventually(lambda: not factory.leftovers() and not factory.call_timers())
            failed += factory.leftovers()
            failed += [f"per-call timer still pending: {t}" for t in factory.call_timers()]
    finally:
        await factory.close_all()
    # stopListening finishes on the next reactor turn.
    await settle(0.01)
    stray = [
        f"{_timer_owner(dc)}:{getattr(dc.func, '__qualname__', dc.func)!s}"
        for dc in reactor.getDelayedCalls()
        if dc.active() and id(dc) not in before
    ]
    failed += [f"delayed call left in the reactor after close: {s}" for s in stray]
    assert not failed, "the test's calls left state behind:\n" + "\n".join(failed)


# -- a scripted SIP endpoint --------------------------------------------------------------
class _RawProtocol(DatagramProtocol):
    def __init__(self, owner: RawUA) -> None:
        self.owner = owner

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner._received(data, (addr[0], addr[1]))


class RawUA:
    """A UDP socket that logs what it receives and sends what the test writes.

    Messages are parsed with sipd's parser only to read them; what is sent
    is the literal text the test builds, an independent check of the wire
    format sipd produces and accepts.
    """

    def __init__(self) -> None:
        self.protocol = _RawProtocol(self)
        self.port_obj: Any = get_reactor().listenUDP(0, self.protocol, "127.0.0.1")
        self.port: int = self.port_obj.getHost().port
        self.log: list[tuple[Request | Response, tuple[str, int]]] = []
        self._waiters: list[
            tuple[Callable[[Request | Response], bool], defer.Deferred[Request | Response]]
        ] = []
        #: Called with each message as it arrives (for scripted replies).
        self.on_message: Callable[[Request | Response, tuple[str, int]], None] | None = None

    def _received(self, data: bytes, source: tuple[str, int]) -> None:
        message = parse_message(data)
        self.log.append((message, source))
        if self.on_message is not None:
            self.on_message(message, source)
        for entry in list(self._waiters):
            match, d = entry
            if match(message):
                self._waiters.remove(entry)
                d.callback(message)

    def send(self, text: str | bytes, dest: tuple[str, int]) -> None:
        """Send ``text`` as is (``\\n`` becomes CRLF; Content-Length is the caller's job)."""
        data = (
            text
            if isinstance(text, bytes)
            else text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        )
        self.port_obj.write(data, dest)

    def messages(self, match: Callable[[Request | Response], bool]) -> list[Request | Response]:
        """Every logged message ``match`` accepts, oldest first."""
        return [m for m, _ in self.log if match(m)]

    def expect(
        self, match: Callable[[Request | Response], bool], timeout: float = 5.0
    ) -> defer.Deferred[Request | Response]:
        """The next message (not already logged) that ``match`` accepts."""
        d: defer.Deferred[Request | Response] = defer.Deferred()
        self._waiters.append((match, d))
        return within(d, timeout)

    def close(self) -> defer.Deferred[None] | None:
        for _, d in self._waiters:
            if not d.called:
                d.cancel()
        self._waiters.clear()
        result: defer.Deferred[None] | None = self.port_obj.stopListening()
        return result


def is_request(method: str) -> Callable[[Request | Response], bool]:
    """A matcher for requests of ``method``."""
    return lambda m: isinstance(m, Request) and m.method == method


def is_response(status: int, method: str | None = None) -> Callable[[Request | Response], bool]:
    """A matcher for responses with ``status`` (to ``method`` if given)."""
    return lambda m: (
        isinstance(m, Response)
        and m.status == status
        and (method is None or m.cseq.method == method)
    )


@pytest_twisted.async_yield_fixture
async def raw_ua() -> AsyncIterator[Callable[[], RawUA]]:
    """A factory of scripted SIP endpoints, closed after the test."""
    made: list[RawUA] = []

    def make() -> RawUA:
        ua = RawUA()
        made.append(ua)
        return ua

    yield make
    for ua in made:
        d = ua.close()
        if d is not None:
            await d


# -- sipp ---------------------------------------------------------------------------------
@dataclass
class SippRun:
    """One sipp process: its PID, its files and how it ended."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    args: list[str]
    returncode: int | None = None
    log_files: list[Path] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait(self, timeout: float) -> int:
        """Poll (without blocking the reactor) until sipp exits; fail after ``timeout``."""
        done = await eventually(lambda: self.proc.poll() is not None, timeout, 0.05)
        if not done:
            self.kill()
            pytest.fail(f"sipp did not finish within {timeout}s\n{self.report()}")
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self) -> None:
        """Kill this sipp by PID if it still runs, and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def report(self) -> str:
        """sipp's command line, output and error log, for a failure message."""
        parts = [f"$ {' '.join(self.args)}  (exit {self.proc.poll()})"]
        for path in sorted(self.workdir.iterdir()):
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".csv"):
                text = path.read_text(errors="replace")
                parts.append(f"--- {path.name} (last 3000 chars)\n{text[-3000:]}")
        return "\n".join(parts)


class SippFactory:
    """Starts sipp processes for one test; each is killed by PID afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.runs: list[SippRun] = []

    def __call__(
        self,
        scenario: str,
        *,
        remote: str | None = None,
        calls: int = 1,
        rate: float | None = None,
        limit: int | None = None,
        timeout: float = 30.0,
        extra: list[str] | None = None,
    ) -> tuple[SippRun, int]:
        """Start ``sipp -sn <scenario>`` on a free port; returns the run and that port."""
        if not os.access(SIPP, os.X_OK):
            pytest.fail(
                f"{SIPP} is missing: install the Debian package sip-tester "
                "(apt-get install sip-tester) to run the sipp interop tests"
            )
        port = free_udp_port()
        workdir = self.tmp_path / f"sipp-{len(self.runs)}-{Path(scenario).stem}"
        workdir.mkdir()
        # A path to an XML file is a scenario of ours (-sf); a word is built in (-sn).
        which = ["-sf", scenario] if scenario.endswith(".xml") else ["-sn", scenario]
        args = [
            SIPP,
            *which,
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            f"{int(timeout)}s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
            str(workdir / "errors.log"),
            "-trace_screen",
            "-screen_file",
            str(workdir / "screen.log"),
        ]
        if rate is not None:
            args += ["-r", str(rate)]
        if limit is not None:
            args += ["-l", str(limit)]
        args += extra or []
        if remote is not None:
            args.append(remote)
        out = (workdir / "stdout.out").open("wb")
        err = (workdir / "stderr.err").open("wb")
        proc = subprocess.Popen(args, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        out.close()
        err.close()
        run = SippRun(proc, workdir, args)
        self.runs.append(run)
        return run, port

    def kill_all(self) -> None:
        for run in self.runs:
            run.kill()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippFactory]:
    """Start real sipp processes; every one is killed by PID after the test."""
    factory = SippFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.kill_all()


# -- nftables loss ------------------------------------------------------------------------
class NftLoss:
    """Random inbound loss on chosen UDP ports through a private nftables table."""

    def __init__(self) -> None:
        self.table = f"sipd_loss_{os.getpid()}"
        self.created = False

    def _nft(self, *args: str) -> str:
        result = subprocess.run(
            [NFT, *args], capture_output=True, text=True, timeout=10, check=False
        )
        if result.returncode != 0:
            pytest.fail(f"nft {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def drop(self, ports: list[int], percent: int) -> None:
        """Drop ``percent``% of the datagrams arriving at each of ``ports``, at random."""
        if not os.access(NFT, os.X_OK):
            pytest.fail(f"{NFT} is missing: install the Debian package nftables")
        if os.geteuid() != 0:
            pytest.fail("the loss tests need root to add nftables rules")
        if not self.created:
            self._nft("add", "table", "inet", self.table)
            self.created = True
            self._nft(
                "add",
                "chain",
                "inet",
                self.table,
                "input",
                "{ type filter hook input priority 0 ; policy accept ; }",
            )
        # numgen's range is 0-99, so "< 100" does not parse: total loss has no numgen.
        sample = [] if percent >= 100 else ["numgen", "random", "mod", "100", "<", str(percent)]
        for port in ports:
            self._nft(
                "add", "rule", "inet", self.table, "input",
                "udp", "dport", str(port), *sample, "counter", "drop",
            )  # fmt: skip

    def counters(self) -> str:
        """The table's rules with their packet counters (for reports)."""
        return self._nft("list", "table", "inet", self.table)

    def dropped(self) -> int:
        """Packets dropped so far by all rules of the table."""
        total = 0
        for line in self.counters().splitlines():
            words = line.split()
            if "packets" in words and "drop" in words:
                total += int(words[words.index("packets") + 1])
        return total

    def remove(self) -> None:
        if self.created:
            subprocess.run(
                [NFT, "delete", "table", "inet", self.table],
                capture_output=True,
                timeout=10,
                check=False,
            )
            self.created = False


@pytest.fixture
def nft_loss() -> Iterator[NftLoss]:
    """Inbound random loss on loopback ports; the table is deleted after the test."""
    loss = NftLoss()
    try:
        yield loss
    finally:
        loss.remove()
