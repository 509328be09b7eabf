"""Real third-party SIP programs for the interop tests: Kamailio, baresip, sipp.

Each program runs as a child process of the test, on free 127.0.0.1 ports,
with its configuration in the test's temporary directory and everything it
prints in a log file there. A process is stopped by the PID the test started
(SIGTERM, then SIGKILL of the process group that PID leads), never by name.

The ``interop`` fixture hands out an :class:`Interop` that starts the
programs, stops them after the test, and attaches each program's log to the
report of a failing test (pytest prints them as "Captured <name> log
teardown" sections). ``report()`` on each process gives the same text for an
assertion message.

Nothing here blocks the reactor: readiness, JSON-RPC replies and process
exits are polled with ``deferLater``. The few ``*_blocking`` helpers are for
code that runs without a reactor.

The audio helpers (tone WAV, PCMU pcap for sipp, WAV reading, dominant
frequency) use only the standard library and numpy, so they are oracles
independent of sipd's own media code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from numpy.typing import NDArray
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import NetstringReceiver

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    if sys.version_info >= (3, 13):
        import audioop_lts as audioop  # pragma: no cover
    else:
        import audioop

__all__ = [
    "BARESIP",
    "KAMAILIO",
    "KAMAILIO_CFG",
    "SCENARIOS",
    "SIPP",
    "Baresip",
    "Interop",
    "Kamailio",
    "KamailioRpcError",
    "ManagedProcess",
    "Registration",
    "assert_tone",
    "dominant_frequency",
    "free_tcp_port",
    "free_udp_port",
    "free_udp_port_range",
    "interop",
    "kamailio_users",
    "parse_ul_dump",
    "read_wav",
    "require_program",
    "settle",
    "sounding_seconds",
    "start_baresip",
    "start_kamailio",
    "start_sipp",
    "tone",
    "write_pcmu_tone_pcap",
    "write_tone_wav",
]

KAMAILIO = "/usr/sbin/kamailio"
BARESIP = "/usr/bin/baresip"
SIPP = "/usr/bin/sipp"
HERE = Path(__file__).parent
KAMAILIO_CFG = HERE / "kamailio" / "kamailio.cfg"
KAMAILIO_USERS = HERE / "kamailio" / "users.cfg"
SCENARIOS = HERE / "scenarios"
BARESIP_MODULES = Path("/usr/lib/baresip/modules")

#: Debian package that ships each program (named in the failure message).
PACKAGES = {KAMAILIO: "kamailio", BARESIP: "baresip-core", SIPP: "sip-tester"}

#: How much of a log goes into a failure report.
LOG_TAIL = 20_000

RATE = 8000


# -- reactor-friendly waiting ------------------------------------------------------------
def _reactor() -> Any:
    """The global reactor (imported late so pytest-twisted installs it first)."""
    from twisted.internet import reactor

    return reactor


def settle(seconds: float) -> defer.Deferred[None]:
    """Let the reactor run for ``seconds`` (never blocks it)."""
    return task.deferLater(_reactor(), seconds, lambda: None)


_sleep = settle


def require_program(path: str) -> None:
    """Fail (never skip) the test when a program the interop suite drives is missing."""
    if not os.access(path, os.X_OK):
        package = PACKAGES.get(path, "?")
        pytest.fail(
            f"{path} is missing: install the Debian package {package} "
            f"(apt-get install {package}, or `make sysdeps`) to run the interop tests"
        )


# -- free ports ---------------------------------------------------------------------------
#: Ports this process handed out: never given twice, even once the probe closed.
_handed_out: set[int] = set()


def _bindable(kind: int, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(checks: Iterable[tuple[int, int]]) -> int:
    """A port P such that each (socket kind, offset) binds at P + offset."""
    wanted = list(checks)
    for _ in range(200):
        with socket.socket(socket.AF_INET, wanted[0][0]) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        offsets = {port + off for _, off in wanted}
        if offsets & _handed_out or max(offsets) > 65535:
            continue
        if all(_bindable(kind, port + off) for kind, off in wanted):
            _handed_out.update(offsets)
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 for {wanted}")


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago and not handed out before."""
    return _free_port([(socket.SOCK_DGRAM, 0)])


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and not handed out before."""
    return _free_port([(socket.SOCK_STREAM, 0)])


def free_udp_port_range(count: int) -> int:
    """The first of ``count`` consecutive free UDP ports in 30000-39999 (even)."""
    for _ in range(200):
        first = random.randrange(30000, 40000 - count, 2)
        ports = set(range(first, first + count))
        if ports & _handed_out:
            continue
        if all(_bindable(socket.SOCK_DGRAM, p) for p in ports):
            _handed_out.update(ports)
            return first
    raise RuntimeError(f"no {count} consecutive free UDP ports on 127.0.0.1")


# -- processes ---------------------------------------------------------------------------
@dataclass(eq=False)
class ManagedProcess:
    """A child process the test started, with its output in ``log_path``."""

    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    #: Further files (message traces) worth showing when a test fails.
    extra_logs: list[Path] = field(default_factory=list)
    #: The SIP port the program listens on, when the harness chose it.
    port: int | None = None

    @classmethod
    def spawn(
        cls, name: str, args: list[str], log_path: Path, cwd: Path | None = None
    ) -> ManagedProcess:
        """Start ``args`` in its own process group, stdout and stderr into ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name, args, log_path, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM the PID; after ``timeout`` SIGKILL its process group. Returns the exit code.

        The group is the one ``spawn`` created with this PID as its leader
        (still alive, so the group id is still ours), so the kill reaches the
        program's own workers (kamailio forks several) and nothing else. On
        SIGTERM kamailio stops its workers itself.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    async def wait_exit(self, timeout: float) -> int:
        """Poll until the process exits; fail the test (with its log) after ``timeout``."""
        deadline = _reactor().seconds() + timeout
        while self.proc.poll() is None:
            if _reactor().seconds() >= deadline:
                self.stop()
                pytest.fail(f"{self.name} did not exit within {timeout}s\n{self.report()}")
            await _sleep(0.05)
        return self.proc.returncode

    async def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Poll the log until the regular expression ``pattern`` matches; fail after ``timeout``."""
        deadline = _reactor().seconds() + timeout
        while True:
            found = re.search(pattern, self.log_text(None))
            if found:
                return found
            if _reactor().seconds() >= deadline:
                pytest.fail(f"{self.name} never logged /{pattern}/ in {timeout}s\n{self.report()}")
            await _sleep(0.05)

    def log_text(self, limit: int | None = LOG_TAIL) -> str:
        """The last ``limit`` characters of the log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text if limit is None else text[-limit:]

    def report(self, limit: int = LOG_TAIL) -> str:
        """Command line, PID, exit status and log tails, for a failure message."""
        parts = [f"$ {' '.join(self.args)}", f"  (pid {self.pid}, exit {self.proc.poll()})"]
        for path in [self.log_path, *self.extra_logs]:
            if path.exists():
                text = path.read_text(errors="replace")[-limit:]
                parts.append(f"--- {path} (last {limit} chars)\n{text}")
        return "\n".join(parts)


# -- kamailio ----------------------------------------------------------------------------
class KamailioRpcError(Exception):
    """Kamailio answered a JSON-RPC request with an error (or not at all)."""


def kamailio_users(path: Path = KAMAILIO_USERS) -> dict[str, str]:
    """The users and plain-text passwords kamailio.cfg loads (from users.cfg)."""
    users: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("$sht(users=>"):
            name = line[len("$sht(users=>") : line.index(")")]
            users[name] = line.split("=", 2)[2].strip().rstrip(";").strip().strip('"')
    return users


@dataclass(frozen=True, slots=True)
class Registration:
    """One live binding in kamailio's location table (from ``ul.dump``)."""

    aor: str
    contact: str
    #: Seconds left, or None for a permanent binding.
    expires: int | None
    user_agent: str
    call_id: str
    cseq: int
    #: Source address kamailio saw when it differs from the Contact (NAT), else None.
    received: str | None
    socket: str


def _unset(value: Any) -> Any:
    return None if value == "[not set]" else value


def parse_ul_dump(result: dict[str, Any]) -> dict[str, list[Registration]]:
    """AOR -> live bindings, from the ``result`` of kamailio's ``ul.dump`` JSON-RPC.

    Bindings whose Expires reads "deleted" or "expired" are left out: they
    are on their way out of the table, not registrations.
    """
    table: dict[str, list[Registration]] = {}
    for domain in result.get("Domains", []):
        for record in domain["Domain"].get("AoRs", []):
            info = record["Info"]
            bindings = table.setdefault(info["AoR"], [])
            for entry in info.get("Contacts", []):
                c = entry["Contact"]
                expires = c["Expires"]
                if isinstance(expires, str):
                    if expires != "permanent":
                        continue
                    expires = None
                bindings.append(
                    Registration(
                        aor=info["AoR"],
                        contact=c["Address"],
                        expires=expires,
                        user_agent=_unset(c.get("User-Agent")) or "",
                        call_id=c.get("Call-ID", ""),
                        cseq=int(c.get("CSeq", 0)),
                        received=_unset(c.get("Received")),
                        socket=c.get("Socket", ""),
                    )
                )
            if not bindings:
                del table[info["AoR"]]
    return table


@dataclass(eq=False)
class Kamailio:
    """A running kamailio: registrar and proxy on ``127.0.0.1:port`` (UDP only)."""

    process: ManagedProcess
    port: int
    #: UDP port where jsonrpcs answers JSON-RPC datagrams.
    rpc_port: int
    #: For ``kamcmd -s <ctl_socket> ul.dump`` when debugging by hand.
    ctl_socket: str
    runtime_dir: Path
    realm: str
    users: dict[str, str]
    _rpc_id: int = 0

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def uri(self) -> str:
        """The proxy's own URI (registrar Request-URI, outbound proxy)."""
        return f"sip:127.0.0.1:{self.port}"

    def aor(self, user: str) -> str:
        """The address of record ``user`` registers and is called at."""
        return f"sip:{user}@127.0.0.1:{self.port}"

    def _request(self, method: str, params: list[Any]) -> bytes:
        self._rpc_id += 1
        body = {"jsonrpc": "2.0", "method": method, "params": params, "id": self._rpc_id}
        return json.dumps(body).encode()

    def _answer(self, method: str, data: bytes) -> Any:
        reply = json.loads(data)
        if "error" in reply:
            raise KamailioRpcError(f"kamailio {method}: {reply['error']}")
        return reply.get("result")

    async def rpc(self, method: str, *params: Any, timeout: float = 3.0) -> Any:
        """Call a kamailio RPC command (``ul.dump``, ``core.version``...) over UDP."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            s.sendto(self._request(method, list(params)), ("127.0.0.1", self.rpc_port))
            deadline = _reactor().seconds() + timeout
            while True:
                try:
                    return self._answer(method, s.recv(65535))
                except (BlockingIOError, ConnectionRefusedError):
                    pass
                if _reactor().seconds() >= deadline:
                    raise KamailioRpcError(f"kamailio {method}: no answer within {timeout}s")
                await _sleep(0.01)

    def rpc_blocking(self, method: str, *params: Any, timeout: float = 3.0) -> Any:
        """:meth:`rpc` for code without a reactor."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(timeout)
            s.sendto(self._request(method, list(params)), ("127.0.0.1", self.rpc_port))
            try:
                return self._answer(method, s.recv(65535))
            except (TimeoutError, ConnectionRefusedError) as e:
                raise KamailioRpcError(f"kamailio {method}: no answer ({e})") from e

    async def registrations(self) -> dict[str, list[Registration]]:
        """AOR (user part) -> live bindings, from ``ul.dump``."""
        return parse_ul_dump(await self.rpc("ul.dump"))

    def registrations_blocking(self) -> dict[str, list[Registration]]:
        return parse_ul_dump(self.rpc_blocking("ul.dump"))

    async def wait_registered(
        self, user: str, timeout: float = 10.0, count: int = 1
    ) -> list[Registration]:
        """Poll ``ul.dump`` until ``user`` has at least ``count`` bindings."""
        deadline = _reactor().seconds() + timeout
        while True:
            bindings = (await self.registrations()).get(user, [])
            if len(bindings) >= count:
                return bindings
            if _reactor().seconds() >= deadline:
                pytest.fail(
                    f"{user} has {len(bindings)} binding(s) at kamailio after {timeout}s, "
                    f"wanted {count}\n{self.report()}"
                )
            await _sleep(0.05)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until the RPC socket answers (the SIP socket is bound before it)."""
        deadline = _reactor().seconds() + timeout
        while True:
            if not self.process.running():
                pytest.fail(f"kamailio exited while starting\n{self.report()}")
            with contextlib.suppress(KamailioRpcError):
                await self.rpc("core.version", timeout=0.2)
                return
            if _reactor().seconds() >= deadline:
                self.stop()
                pytest.fail(f"kamailio was not ready within {timeout}s\n{self.report()}")

    def wait_ready_blocking(self, timeout: float = 10.0) -> None:
        """:meth:`wait_ready` for code without a reactor."""
        for _ in range(max(1, int(timeout / 0.2))):
            if not self.process.running():
                pytest.fail(f"kamailio exited while starting\n{self.report()}")
            with contextlib.suppress(KamailioRpcError):
                self.rpc_blocking("core.version", timeout=0.2)
                return
        self.stop()
        pytest.fail(f"kamailio was not ready within {timeout}s\n{self.report()}")

    def stop(self) -> int:
        code = self.process.stop()
        with contextlib.suppress(OSError):
            for path in self.runtime_dir.iterdir():
                path.unlink()
            self.runtime_dir.rmdir()
        return code

    def report(self) -> str:
        return self.process.report()


def start_kamailio(
    workdir: Path,
    *,
    qop: bool = True,
    realm: str = "sipd.test",
    defines: Iterable[str] = (),
) -> Kamailio:
    """Start kamailio in the foreground with tests/interop/kamailio/kamailio.cfg.

    Listens on UDP 127.0.0.1:<free port> only; JSON-RPC on another free UDP
    port; binrpc (kamcmd) on a unix socket in a short /tmp directory (unix
    socket paths are limited to 107 bytes). ``qop=False`` makes the
    challenges plain RFC 2069 digest (no qop). Call :meth:`Kamailio.wait_ready`.
    """
    require_program(KAMAILIO)
    workdir.mkdir(parents=True, exist_ok=True)
    port, rpc_port = free_udp_port(), free_udp_port()
    runtime_dir = Path(tempfile.mkdtemp(prefix="sipd-kam-"))
    ctl_socket = f"unix:{runtime_dir}/ctl.sock"
    args = [
        KAMAILIO,
        "-f",
        str(KAMAILIO_CFG),
        "-DD",  # foreground; the PID we hold is the main process
        "-E",  # log to stderr (our log file)
        "-l",
        f"udp:127.0.0.1:{port}",
        "-A",
        f'RPC_SOCKET="udp:127.0.0.1:{rpc_port}"',
        "-A",
        f'CTL_SOCKET="{ctl_socket}"',
        "-A",
        f'REALM="{realm}"',
        "-Y",
        str(runtime_dir),
        "-P",
        str(runtime_dir / "kamailio.pid"),
        "-w",
        str(workdir),
        "-m",
        "32",
        "-M",
        "8",
    ]
    if not qop:
        args += ["-A", "AUTH_NO_QOP"]
    for define in defines:
        args += ["-A", define]
    process = ManagedProcess.spawn("kamailio", args, workdir / "kamailio.log", cwd=workdir)
    return Kamailio(process, port, rpc_port, ctl_socket, runtime_dir, realm, kamailio_users())


# -- baresip -----------------------------------------------------------------------------
class _CtrlProtocol(NetstringReceiver):
    """baresip's ctrl_tcp: JSON objects in netstrings, both ways."""

    def __init__(self, owner: Baresip) -> None:
        self.owner = owner

    def stringReceived(self, string: bytes) -> None:
        self.owner._message(json.loads(string))

    def send(self, message: dict[str, Any]) -> None:
        self.sendString(json.dumps(message).encode())


@dataclass(eq=False)
class Baresip:
    """A running headless baresip: auto-answers, plays a WAV, records what it hears.

    Audio path (baresip 1.0.0 has no WAV player): the source is the
    ``aufile`` module reading ``tone``; the ``sndfile`` filter writes each
    call's audio to ``recordings/dump-<time>-dec.wav`` (decoded: what it
    received) and ``...-enc.wav`` (what it sent); the player is an
    ``aubridge`` device nobody reads (no sound card needed).
    """

    process: ManagedProcess
    user: str
    sip_port: int
    ctrl_port: int
    config_dir: Path
    recordings: Path
    #: The account's AOR: at the registrar when there is one, else its own address.
    aor: str
    #: "udp" (also answers on TCP at ``sip_port``), "tcp", or "tls" (at ``sip_port + 1``).
    transport: str = "udp"
    events: list[dict[str, Any]] = field(default_factory=list)
    _ctrl: _CtrlProtocol | None = None
    _responses: dict[str, defer.Deferred[dict[str, Any]]] = field(default_factory=dict)
    _taken: set[int] = field(default_factory=set)
    _token: int = 0

    @property
    def contact_uri(self) -> str:
        """Where baresip itself listens: call it here directly, without a proxy."""
        return self.listening_uri(self.user, self.sip_port, self.transport)

    @staticmethod
    def listening_uri(user: str, sip_port: int, transport: str = "udp") -> str:
        """``sip:user@127.0.0.1:port``; over TLS baresip listens on ``sip_port + 1``."""
        if transport == "udp":
            return f"sip:{user}@127.0.0.1:{sip_port}"
        port = sip_port + 1 if transport == "tls" else sip_port
        return f"sip:{user}@127.0.0.1:{port};transport={transport}"

    def _message(self, message: dict[str, Any]) -> None:
        if message.get("event"):
            self.events.append(message)
        elif message.get("response"):
            d = self._responses.pop(str(message.get("token")), None)
            if d is not None and not d.called:
                d.callback(message)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until baresip says it is ready, then connect to its ctrl_tcp port."""
        deadline = _reactor().seconds() + timeout
        while "baresip is ready." not in self.process.log_text():
            if not self.process.running():
                pytest.fail(f"baresip exited while starting\n{self.report()}")
            if _reactor().seconds() >= deadline:
                self.stop()
                pytest.fail(f"baresip was not ready within {timeout}s\n{self.report()}")
            await _sleep(0.05)
        endpoint = TCP4ClientEndpoint(_reactor(), "127.0.0.1", self.ctrl_port, timeout=2)
        self._ctrl = await connectProtocol(endpoint, _CtrlProtocol(self))

    async def command(
        self, name: str, params: str | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Run a baresip command (``dial``, ``hangup``, ``accept``...) over ctrl_tcp.

        Returns baresip's response (``{"response": true, "ok": ..., "data": ...}``).
        """
        if self._ctrl is None:
            raise RuntimeError("baresip: wait_ready() first")
        self._token += 1
        token = str(self._token)
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._responses[token] = d
        self._ctrl.send({"command": name, "params": params, "token": token})
        response: dict[str, Any] = await d.addTimeout(timeout, _reactor())
        if not response.get("ok"):
            pytest.fail(f"baresip {name} {params!r} failed: {response}\n{self.report()}")
        return response

    async def dial(self, uri: str) -> dict[str, Any]:
        return await self.command("dial", uri)

    async def hangup(self) -> dict[str, Any]:
        return await self.command("hangup")

    async def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The oldest ``kind`` event (``CALL_ESTABLISHED``, ``CALL_CLOSED``...) not yet returned."""
        deadline = _reactor().seconds() + timeout
        while True:
            for i, event in enumerate(self.events):
                if i not in self._taken and event.get("type") == kind:
                    self._taken.add(i)
                    return event
            if _reactor().seconds() >= deadline:
                seen = [e.get("type") for e in self.events]
                pytest.fail(
                    f"baresip sent no {kind} event within {timeout}s (events: {seen})\n"
                    f"{self.report()}"
                )
            await _sleep(0.02)

    def _newest(self, suffix: str) -> Path | None:
        files = sorted(self.recordings.glob(f"dump-*-{suffix}.wav"))
        return files[-1] if files else None

    def received_wav(self) -> Path | None:
        """The newest call's recording of the audio baresip received (or None)."""
        return self._newest("dec")

    def sent_wav(self) -> Path | None:
        """The newest call's recording of the audio baresip sent (or None)."""
        return self._newest("enc")

    async def close_ctrl(self) -> None:
        if self._ctrl is not None and self._ctrl.transport is not None:
            self._ctrl.transport.loseConnection()
            self._ctrl = None
            await _sleep(0)

    def stop(self) -> int:
        return self.process.stop()

    def report(self) -> str:
        return self.process.report()


def _baresip_sip_port() -> int:
    # baresip binds UDP and TCP on the SIP port and TLS (TCP) on the next one.
    return _free_port([(socket.SOCK_DGRAM, 0), (socket.SOCK_STREAM, 0), (socket.SOCK_STREAM, 1)])


def start_baresip(
    workdir: Path,
    *,
    tone: Path,
    user: str = "baresip",
    registrar: Kamailio | None = None,
    password: str | None = None,
    answermode: str = "auto",
    extra_config: dict[str, str] | None = None,
    transport: str = "udp",
    account_params: str = "",
    extra_modules: Iterable[str] = (),
    sip_trace: bool = False,
) -> Baresip:
    """Start baresip headless with a config directory of its own under ``workdir``.

    ``tone`` is an 8 kHz mono 16-bit WAV (see :func:`write_tone_wav`) it sends
    in every call. With ``registrar`` the account is ``user`` at kamailio,
    registering every 60 s with ``password`` (default: the one users.cfg
    holds); dial ``registrar.aor(other)`` to call through kamailio.
    Without it, the account only listens (regint=0); its AOR is
    :attr:`Baresip.contact_uri`, on ``transport``'s port. ``account_params``
    (";mediaenc=srtp-mand") end the account line; ``extra_modules``
    ("srtp.so") are loaded too (TLS settings go in ``extra_config``, see
    tests/interop/baresip_tls.py). ``sip_trace`` writes every SIP message
    (SDP included) into the log. Call :meth:`Baresip.wait_ready`.
    """
    require_program(BARESIP)
    for module in ("g711", "aufile", "aubridge", "sndfile", "account", "menu", "ctrl_tcp"):
        if not (BARESIP_MODULES / f"{module}.so").exists():
            pytest.fail(
                f"baresip module {module}.so is missing from {BARESIP_MODULES}: "
                "install the Debian package baresip-core"
            )
    config_dir = workdir / "config"
    recordings = workdir / "recordings"
    config_dir.mkdir(parents=True, exist_ok=True)
    recordings.mkdir(exist_ok=True)
    sip_port, ctrl_port = _baresip_sip_port(), free_tcp_port()
    rtp_first = free_udp_port_range(20)
    settings = {
        "poll_method": "epoll",
        "sip_listen": f"127.0.0.1:{sip_port}",
        # The address put in SDP c= and Contact: without it baresip picks
        # the first non-loopback interface.
        "net_interface": "127.0.0.1",
        "call_local_timeout": "120",
        "call_max_calls": "4",
        "audio_path": "/usr/share/baresip",
        "audio_source": f"aufile,{tone}",
        "audio_player": "aubridge,nobody",
        "audio_alert": "aubridge,nobody",
        "ausrc_srate": str(RATE),
        "auplay_srate": str(RATE),
        "ausrc_channels": "1",
        "auplay_channels": "1",
        "rtp_ports": f"{rtp_first}-{rtp_first + 19}",
        "rtp_timeout": "0",
        "jitter_buffer_delay": "1-10",
        "module_path": str(BARESIP_MODULES),
        "ctrl_tcp_listen": f"127.0.0.1:{ctrl_port}",
        "snd_path": str(recordings),
        **(extra_config or {}),
    }
    modules = [
        "module g711.so",
        "module aufile.so",
        "module aubridge.so",
        "module sndfile.so",
        "module_tmp account.so",
        "module_app menu.so",
        "module_app ctrl_tcp.so",
        *(f"module {name}" for name in extra_modules),
    ]
    lines = [f"{key}\t{value}" for key, value in settings.items()]
    (config_dir / "config").write_text("\n".join([*lines, *modules, ""]))
    if registrar is not None:
        secret = password if password is not None else registrar.users[user]
        aor = registrar.aor(user)
        account = f"<{aor}>;auth_user={user};auth_pass={secret};regint=60;answermode={answermode}"
    else:
        aor = Baresip.listening_uri(user, sip_port, transport)
        account = f"<{aor}>;regint=0;answermode={answermode}"
    account += account_params
    (config_dir / "accounts").write_text(account + "\n")
    (config_dir / "contacts").write_text("")
    args = [BARESIP, "-f", str(config_dir), *(["-s"] if sip_trace else [])]
    process = ManagedProcess.spawn(f"baresip-{user}", args, workdir / "baresip.log", cwd=workdir)
    return Baresip(process, user, sip_port, ctrl_port, config_dir, recordings, aor, transport)


# -- sipp --------------------------------------------------------------------------------
def start_sipp(
    workdir: Path,
    args: list[str],
    remote: str | None = None,
    files: Mapping[str, Path] | None = None,
) -> ManagedProcess:
    """Run sipp from ``workdir`` on a free port, tracing every message to messages.log.

    ``args`` is the scenario and its options (``["-sf", path, "-s", "alice"]``).
    ``files`` (name -> source) are copied into ``workdir`` first: sipp opens
    the pcap files a scenario plays as it loads the scenario.
    """
    require_program(SIPP)
    workdir.mkdir(parents=True, exist_ok=True)
    for name, source in (files or {}).items():
        shutil.copyfile(source, workdir / name)
    port = free_udp_port()
    full = [
        SIPP,
        *args,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(workdir / "messages.log"),
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
    ]
    if remote is not None:
        full.append(remote)
    process = ManagedProcess.spawn("sipp", full, workdir / "sipp.log", cwd=workdir)
    process.extra_logs += [workdir / "errors.log", workdir / "messages.log"]
    process.port = port
    return process


# -- the fixture -------------------------------------------------------------------------
class Interop:
    """Starts the programs for one test; ``interop`` stops them all afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[ManagedProcess] = []
        self.kamailios: list[Kamailio] = []
        self.baresips: list[Baresip] = []

    def _dir(self, name: str) -> Path:
        path = self.tmp_path / f"{len(self.processes)}-{name}"
        path.mkdir(parents=True)
        return path

    async def kamailio(self, *, qop: bool = True, realm: str = "sipd.test") -> Kamailio:
        """A ready kamailio registrar/proxy (see :func:`start_kamailio`)."""
        k = start_kamailio(self._dir("kamailio"), qop=qop, realm=realm)
        self.processes.append(k.process)
        self.kamailios.append(k)
        await k.wait_ready()
        return k

    async def baresip(
        self,
        user: str = "baresip",
        *,
        tone: Path,
        registrar: Kamailio | None = None,
        password: str | None = None,
        answermode: str = "auto",
    ) -> Baresip:
        """A ready baresip (see :func:`start_baresip`), connected to its ctrl_tcp port."""
        b = start_baresip(
            self._dir(f"baresip-{user}"),
            tone=tone,
            user=user,
            registrar=registrar,
            password=password,
            answermode=answermode,
        )
        self.processes.append(b.process)
        self.baresips.append(b)
        await b.wait_ready()
        return b

    def sipp(
        self,
        args: list[str],
        remote: str | None = None,
        files: Mapping[str, Path] | None = None,
    ) -> ManagedProcess:
        """A running sipp (see :func:`start_sipp`); ``await p.wait_exit(t)`` for its status."""
        p = start_sipp(self._dir("sipp"), args, remote, files)
        self.processes.append(p)
        return p

    async def close(self) -> None:
        """Close control connections and stop every process by PID, newest first."""
        for b in self.baresips:
            await b.close_ctrl()
        for p in reversed(self.processes):
            p.stop()
        for k in self.kamailios:
            k.stop()

    def logs(self) -> list[tuple[str, str]]:
        return [(f"{p.name} log", p.report()) for p in self.processes]


@pytest_twisted.async_yield_fixture
async def interop(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Interop]:
    """Kamailio, baresip and sipp for one test, stopped by PID afterwards.

    Each program's command line and log tail is attached to the test's
    report; pytest prints them only when the test fails.
    """
    procs = Interop(tmp_path)
    try:
        yield procs
    finally:
        await procs.close()
        for name, text in procs.logs():
            request.node.add_report_section("teardown", name, text)


# -- audio oracles -----------------------------------------------------------------------
def tone(
    freq_hz: float, seconds: float, rate: int = RATE, amplitude: float = 0.3
) -> NDArray[np.int16]:
    """A sine tone as int16 samples."""
    t = np.arange(round(seconds * rate)) / rate
    return np.rint(amplitude * 32767 * np.sin(2 * math.pi * freq_hz * t)).astype(np.int16)


def write_tone_wav(
    path: Path, freq_hz: float, seconds: float, rate: int = RATE, amplitude: float = 0.3
) -> Path:
    """An 8 kHz mono 16-bit PCM WAV of a sine tone (what baresip's aufile reads)."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(freq_hz, seconds, rate, amplitude).astype("<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[NDArray[np.int16], int]:
    """Mono 16-bit samples and the sample rate of a PCM WAV file.

    Reads the RIFF chunks itself so a file still being written (libsndfile
    fixes the sizes in the header only when it closes the file) reads as
    far as the data goes.
    """
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a WAV file")
    pos, rate, channels, bits = 12, 0, 0, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt ":
            fmt, channels, rate = struct.unpack_from("<HHI", data, body)
            bits = struct.unpack_from("<H", data, body + 14)[0]
            if fmt not in (1, 0xFFFE) or bits != 16:
                raise ValueError(f"{path}: not 16-bit PCM (format {fmt}, {bits} bits)")
        elif chunk == b"data":
            end = len(data) if size in (0, 0xFFFFFFFF) else min(len(data), body + size)
            end -= (end - body) % (2 * max(channels, 1))
            samples = np.frombuffer(data[body:end], dtype="<i2").astype(np.int16)
            if channels > 1:
                samples = samples[::channels]
            return samples, rate
        pos = body + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def dominant_frequency(samples: NDArray[np.int16], rate: int = RATE) -> tuple[float, float]:
    """The strongest frequency and the share of the power within 25 Hz of it."""
    x = samples.astype(np.float64)
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    peak = float(freqs[int(np.argmax(power))])
    total = float(power.sum())
    share = float(power[np.abs(freqs - peak) <= 25].sum() / total) if total else 0.0
    return peak, share


def sounding_seconds(samples: NDArray[np.int16], rate: int = RATE, rms: float = 100.0) -> float:
    """Seconds of 20 ms blocks whose RMS exceeds ``rms`` (silence does not count)."""
    block = rate // 50
    usable = len(samples) - len(samples) % block
    if not usable:
        return 0.0
    blocks = samples[:usable].astype(np.float64).reshape(-1, block)
    loud = int((np.sqrt((blocks**2).mean(axis=1)) > rms).sum())
    return loud * block / rate


def assert_tone(path: Path | None, freq: float, who: str, report: str) -> None:
    """Assert a recording holds at least 1 s of sound dominated by ``freq`` Hz.

    Checked twice, by this harness's own FFT (peak within 5 Hz holding 80 %
    of the power) and by sipd's detector, so neither vouches for itself.
    """
    from sipd.media.tones import dominant_frequency as sipd_dominant_frequency

    assert path is not None and path.exists(), f"{who}: no recording was written\n{report}"
    samples, rate = read_wav(path)
    assert rate == RATE, f"{who}: {path.name} is {rate} Hz"
    heard = sounding_seconds(samples, rate)
    assert heard >= 1.0, f"{who}: only {heard:.2f} s of sound in {path.name}\n{report}"
    peak, share = dominant_frequency(samples, rate)
    assert abs(peak - freq) <= 5 and share >= 0.8, (
        f"{who}: {path.name} peaks at {peak:.1f} Hz ({share:.0%} of the power), not {freq} Hz"
    )
    detected = sipd_dominant_frequency(samples, rate)
    assert abs(detected - freq) <= 5, f"{who}: sipd's detector says {detected:.1f} Hz"


def _ipv4_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_pcmu_tone_pcap(path: Path, freq_hz: float, seconds: float) -> Path:
    """A libpcap file of PCMU RTP packets (20 ms each) carrying a tone.

    For sipp's ``<exec play_pcap_audio="..."/>``: sipp replays the UDP
    payloads at their capture times to the call's media address. The µ-law
    encoding is the standard library's reference encoder, independent of
    every program under test.
    """
    pcm = tone(freq_hz, seconds)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    loopback = bytes([127, 0, 0, 1])
    ssrc, seq, ts = 0x1D2C3B4A, 2000, 8000
    for i in range(len(pcm) // 160):
        payload: bytes = audioop.lin2ulaw(pcm[i * 160 : (i + 1) * 160].tobytes(), 2)
        rtp = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0), seq, ts, ssrc) + payload
        seq, ts = seq + 1, ts + 160
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, loopback, loopback
        )
        ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        sec, usec = divmod(i * 20_000, 1_000_000)
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path
