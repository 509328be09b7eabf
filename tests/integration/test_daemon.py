"""``twistd -n sipd`` as a real process: sipp calls it, /status and /metrics report it.

Each test writes a config into its tmp_path with free ports, starts the
daemon as a subprocess of the test's Python (``twisted.scripts.twistd``, so
it works from any virtualenv), waits for its "listening on" log line, and
stops it by PID with SIGTERM at the end, checking that it exits with 0.
The daemon's log is attached to every assertion message.

The helpers at the top (:class:`Daemon`, :func:`write_config`,
:func:`start_daemon`, :func:`http_get`) are shared with the other
``test_daemon_*`` and ``test_handler_plugin`` modules.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, task

from tests.conftest import SIPP, SippFactory, free_port_range, free_udp_port, get_reactor

ROOT = Path(__file__).resolve().parents[2]
#: ``twistd`` from the running interpreter (no dependence on PATH or a venv's bin/).
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
]
READY = re.compile(r"sipd \S+ listening on [\d.]+:(\d+)")
#: Short RFC timers (T1 = 50 ms) so a lost message costs little time.
FAST_TIMERS = {"t1": 0.05, "t2": 0.4}


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_media_range(size: int = 40) -> tuple[int, int]:
    """An even-aligned RTP range whose ports were all free a moment ago."""
    low = free_port_range(size)
    return low, low + size - 1


def write_config(
    path: Path,
    *,
    handler: str = "echo",
    settings: dict[str, Any] | None = None,
    grace: float = 3.0,
    timers: dict[str, Any] | None = None,
    http: bool = True,
) -> dict[str, Any]:
    """Write a daemon config with free ports into ``path``; return what was written."""
    low, high = free_media_range()
    doc: dict[str, Any] = {
        "sip": {"listen": f"127.0.0.1:{free_udp_port()}", "name": "sipd"},
        "timers": dict(timers if timers is not None else FAST_TIMERS),
        "media": {"port_min": low, "port_max": high},
        "handler": {"name": handler, "settings": settings or {}},
        "http": {"listen": f"127.0.0.1:{free_tcp_port()}" if http else None},
        "shutdown": {"grace": grace},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return doc


@dataclass
class Daemon:
    """One ``twistd -n sipd`` process, its config and its log."""

    proc: subprocess.Popen[bytes]
    config: Path
    log_path: Path
    sip_port: int
    http_port: int | None

    @property
    def sip_uri(self) -> str:
        return f"sip:service@127.0.0.1:{self.sip_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def report(self) -> str:
        """The exit status and the log, for assertion messages."""
        return f"daemon pid {self.proc.pid} exit {self.proc.poll()}; log:\n{self.log()[-6000:]}"

    def ready(self) -> bool:
        return READY.search(self.log()) is not None

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited early\n{self.report()}")

    # -- synchronous use (tests that run no reactor) --------------------------------
    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"no 'listening on' line within {timeout}s\n{self.report()}")
            time.sleep(0.05)

    def get(self, path: str) -> tuple[int, str, str]:
        """``GET path`` on the HTTP port: (status, content type, body)."""
        assert self.http_port is not None
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.headers["content-type"], resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("content-type", ""), exc.read().decode()

    def status(self) -> dict[str, Any]:
        code, ctype, body = self.get("/status")
        assert code == 200 and ctype.startswith("application/json"), (code, ctype, body)
        result: dict[str, Any] = json.loads(body)
        return result

    def metrics(self) -> dict[str, float]:
        code, ctype, body = self.get("/metrics")
        assert code == 200 and ctype.startswith("text/plain"), (code, ctype, body)
        return parse_prometheus(body)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM by PID and wait; SIGKILL if it does not stop in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"the daemon ignored SIGTERM for {timeout}s\n{self.report()}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    # -- reactor-driven use ---------------------------------------------------------
    async def until_ready(self, timeout: float = 20.0) -> None:
        """Poll the log on the reactor (never blocks it) until the daemon listens."""
        reactor = get_reactor()
        deadline = reactor.seconds() + timeout
        while not self.ready():
            self.check_alive()
            if reactor.seconds() > deadline:
                raise AssertionError(f"no 'listening on' line within {timeout}s\n{self.report()}")
            await task.deferLater(reactor, 0.05, lambda: None)

    async def until_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Poll the log until ``pattern`` appears; return the match."""
        reactor = get_reactor()
        deadline = reactor.seconds() + timeout
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            if reactor.seconds() > deadline:
                raise AssertionError(
                    f"no {pattern!r} in the log within {timeout}s\n{self.report()}"
                )
            await task.deferLater(reactor, 0.05, lambda: None)

    async def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM by PID, then poll on the reactor so in-process peers can answer BYEs."""
        reactor = get_reactor()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
        deadline = reactor.seconds() + timeout
        while self.proc.poll() is None:
            if reactor.seconds() > deadline:
                self.kill()
                raise AssertionError(f"the daemon ignored SIGTERM for {timeout}s\n{self.report()}")
            await task.deferLater(reactor, 0.05, lambda: None)
        return self.proc.returncode


def start_daemon(
    tmp_path: Path, config: Path, *args: str, pythonpath: list[Path] | None = None
) -> Daemon:
    """Start ``twistd -n --pidfile= sipd --config <config> <args>``; the log goes to a file."""
    doc = yaml.safe_load(config.read_text()) or {}
    sip_port = int(str(doc.get("sip", {}).get("listen", "127.0.0.1:5060")).rsplit(":", 1)[1])
    http = (doc.get("http") or {}).get("listen")
    http_port = int(str(http).rsplit(":", 1)[1]) if http else None
    env = dict(os.environ)
    paths = [str(p) for p in pythonpath or []] + [str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    log_path = tmp_path / f"sipd-{config.stem}.log"
    with log_path.open("wb") as sink:
        proc = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "sipd", "--config", str(config), *args],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Daemon(proc, config, log_path, sip_port, http_port)


@contextlib.contextmanager
def running_daemon(tmp_path: Path, config: Path, *args: str) -> Iterator[Daemon]:
    """A started, listening daemon for a synchronous test; SIGTERM and exit 0 afterwards."""
    daemon = start_daemon(tmp_path, config, *args)
    try:
        daemon.wait_ready()
        yield daemon
    except BaseException:
        daemon.kill()
        raise
    code = daemon.terminate()
    assert code == 0, f"the daemon exited with {code} after SIGTERM\n{daemon.report()}"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text format to ``{'name{labels}': value}``; checks every line's shape."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name = match.group(1).split("{")[0]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"sample {name} has no # TYPE line before it"
        samples[match.group(1)] = float(match.group(2))
    return samples


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """``GET`` on the reactor with twisted.web's Agent (for reactor-driven tests)."""
    from twisted.internet.protocol import Protocol
    from twisted.web.client import Agent, ResponseDone

    class Collect(Protocol):
        def __init__(self) -> None:
            self.parts: list[bytes] = []
            self.done: defer.Deferred[bytes] = defer.Deferred()

        def dataReceived(self, data: bytes) -> None:
            self.parts.append(data)

        def connectionLost(self, reason: Any = None) -> None:
            if reason is not None and not reason.check(ResponseDone):
                self.done.errback(reason)
            else:
                self.done.callback(b"".join(self.parts))

    agent = Agent(get_reactor())
    response = await agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    collect = Collect()
    response.deliverBody(collect)
    body = await collect.done
    return int(response.code), body


# -- a scripted sipp UAC that holds the call until the far end sends BYE ------------------
def _hold_scenario(pause_before_200_ms: int = 0) -> str:
    pause = f'  <pause milliseconds="{pause_before_200_ms}"/>\n' if pause_before_200_ms else ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="call, then wait for the far end's BYE">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv request="BYE"/>
{pause}  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
</scenario>
"""


@dataclass
class SippScript:
    """sipp running a scenario file (the conftest factory runs built-in ones only)."""

    proc: subprocess.Popen[bytes]
    port: int
    out: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def report(self) -> str:
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        return f"sipp exit {self.proc.poll()}:\n{text[-3000:]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@contextlib.contextmanager
def sipp_script(tmp_path: Path, xml: str, remote: str) -> Iterator[SippScript]:
    """Run sipp with ``xml`` as its scenario for one call; killed by PID afterwards."""
    scenario = tmp_path / f"scenario-{len(list(tmp_path.glob('scenario-*')))}.xml"
    scenario.write_text(xml)
    port = free_udp_port()
    out = scenario.with_suffix(".out")
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [
                *(SIPP, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1"),
                *("-nostdin", "-timeout", "15s", "-timeout_error", remote),
            ],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    run = SippScript(proc, port, out)
    try:
        yield run
    finally:
        run.kill()


def _raw_request(port: int, method: str, *, wait_for_final: bool = True) -> list[str]:
    """Send one out-of-dialog request from a plain socket; return the status lines heard."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3.0)
        me = s.getsockname()[1]
        body = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\n"
            if method == "INVITE"
            else ""
        )
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        msg = (
            f"{method} sip:service@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-raw-{method}-{me}\r\n"
            f"From: <sip:raw@127.0.0.1:{me}>;tag=raw{me}\r\n"
            f"To: <sip:service@127.0.0.1:{port}>\r\n"
            f"Call-ID: raw-{method}-{me}@127.0.0.1\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:raw@127.0.0.1:{me}>\r\n"
            f"Max-Forwards: 70\r\n{ctype}Content-Length: {len(body)}\r\n\r\n{body}"
        )
        s.sendto(msg.encode(), ("127.0.0.1", port))
        heard: list[str] = []
        while True:
            data = s.recv(65535).decode(errors="replace")
            status = data.split("\r\n", 1)[0]
            heard.append(status)
            code = int(status.split()[1])
            if code >= 200 or not wait_for_final:
                if method == "INVITE" and code >= 300:
                    ack = msg.replace("INVITE sip:", "ACK sip:", 1).replace(
                        "CSeq: 1 INVITE", "CSeq: 1 ACK"
                    )
                    to = re.search(r"^To: .*$", data, re.M | re.I)
                    if to:
                        ack = re.sub(r"^To: .*$", to.group(0), ack, count=1, flags=re.M)
                    s.sendto(ack.encode(), ("127.0.0.1", port))
                return heard


# -- tests --------------------------------------------------------------------------------
def test_sipp_calls_complete_and_metrics_and_cdrs_count_them(
    tmp_path: Path, sipp: SippFactory
) -> None:
    """Three sipp calls to the echo daemon succeed; /metrics counts them and each gets a CDR."""
    config = tmp_path / "sipd.yaml"
    write_config(config)
    with running_daemon(tmp_path, config) as daemon:
        run, _ = sipp("uac", remote=f"127.0.0.1:{daemon.sip_port}", calls=3, rate=10, timeout=15)
        code = run.proc.wait(20)
        assert code == 0, f"sipp reported failed calls\n{run.report()}\n{daemon.report()}"

        metrics = daemon.metrics()
        report = f"{metrics}\n{daemon.report()}"
        assert metrics['sipd_calls_total{direction="incoming",outcome="completed"}'] == 3, report
        assert metrics['sipd_calls_started_total{direction="incoming"}'] == 3, report
        assert metrics['sipd_sip_requests_received_total{method="INVITE"}'] == 3, report
        assert metrics['sipd_sip_requests_received_total{method="ACK"}'] == 3, report
        assert metrics['sipd_sip_requests_received_total{method="BYE"}'] == 3, report
        # Each call: 180 and 200 to the INVITE (200 retransmissions possible), 200 to the BYE.
        assert metrics['sipd_sip_responses_sent_total{status="180"}'] == 3, report
        assert metrics['sipd_sip_responses_sent_total{status="200"}'] >= 6, report
        assert metrics["sipd_active_calls"] == 0, report
        assert "sipd_rtp_jitter_ms" in metrics, report

        status = daemon.status()
        assert status["handler"] == "echo"
        assert status["active_calls"] == 0 and status["calls"] == []
        assert status["uptime"] > 0
        assert re.fullmatch(r"\d+\.\d+\.\d+.*", status["version"]), status

    # One CDR per call, carrying sipp's own Call-IDs ("<n>-<sipp pid>@<ip>").
    cdrs = re.findall(
        r"CDR call_id=(\S+) direction=incoming remote=sip:sipp@127\.0\.0\.1:\d+ "
        r"outcome=completed status=200 duration=([\d.]+)s",
        daemon.log(),
    )
    assert sorted(c for c, _ in cdrs) == sorted(f"{n}-{run.pid}@127.0.0.1" for n in (1, 2, 3)), (
        daemon.report()
    )


def _wait_for_active_call(daemon: Daemon, sipp_run: SippScript) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        status = daemon.status()
        if status["active_calls"] == 1 and status["calls"][0]["state"] == "Active":
            return status
        assert sipp_run.proc.poll() is None, f"sipp ended early\n{sipp_run.report()}"
        assert time.monotonic() < deadline, f"no active call in /status: {status}"
        time.sleep(0.05)


def test_status_shows_a_held_call_and_sigterm_sends_it_bye(tmp_path: Path) -> None:
    """/status lists sipp's call while it is up; SIGTERM makes the daemon BYE it and exit 0."""
    config = tmp_path / "sipd.yaml"
    write_config(config, grace=5.0)
    daemon = start_daemon(tmp_path, config)
    try:
        daemon.wait_ready()
        with sipp_script(tmp_path, _hold_scenario(), f"127.0.0.1:{daemon.sip_port}") as run:
            _wait_for_active_call(daemon, run)
            time.sleep(0.3)  # let the call age a little
            status = daemon.status()
            call = status["calls"][0]
            assert call["direction"] == "incoming", status
            assert call["remote"] == f"sip:sipp@127.0.0.1:{run.port}", status
            assert call["codec"] == "PCMU", status
            assert call["call_id"] == f"1-{run.pid}@127.0.0.1", status
            assert call["duration"] >= 0.3, status
            assert daemon.metrics()["sipd_active_calls"] == 1

            code = daemon.terminate()
            assert code == 0, f"exit {code} after SIGTERM\n{daemon.report()}"
            # The scenario ends well only after the daemon's BYE arrived and was answered.
            assert run.proc.wait(10) == 0, f"sipp got no BYE\n{run.report()}\n{daemon.report()}"
    finally:
        daemon.kill()
    log = daemon.log()
    assert "sipd stopping: refusing new calls, ending 1 call(s)" in log, log
    assert re.search(
        rf"CDR call_id=1-{run.pid}@127\.0\.0\.1 .*outcome=completed .*->Terminating->Terminated",
        log,
    ), log


def test_a_stopping_daemon_answers_new_invites_with_503(tmp_path: Path) -> None:
    """While it waits for a call to end after SIGTERM, a new INVITE gets 503, OPTIONS works
    and /status still answers, showing the call that is draining."""
    config = tmp_path / "sipd.yaml"
    write_config(config, grace=5.0)
    daemon = start_daemon(tmp_path, config)
    try:
        daemon.wait_ready()
        heard = _raw_request(daemon.sip_port, "OPTIONS")
        assert heard[-1].startswith("SIP/2.0 200"), f"{heard}\n{daemon.report()}"
        # sipp waits 1.5 s before it answers the BYE, holding the daemon in its grace time.
        xml = _hold_scenario(pause_before_200_ms=1500)
        with sipp_script(tmp_path, xml, f"127.0.0.1:{daemon.sip_port}") as run:
            _wait_for_active_call(daemon, run)
            os.kill(daemon.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while "sipd stopping" not in daemon.log():
                assert time.monotonic() < deadline, daemon.report()
                time.sleep(0.02)
            heard = _raw_request(daemon.sip_port, "INVITE")
            assert heard[-1].startswith("SIP/2.0 503"), f"{heard}\n{daemon.report()}"
            assert daemon.proc.poll() is None, "the daemon should still wait for the held call"
            # Operators can still watch the drain: /status says it refuses calls.
            status = daemon.status()
            assert status["accepting"] is False and status["active_calls"] == 1, status
            code = daemon.terminate()
            assert code == 0, daemon.report()
            assert run.proc.wait(10) == 0, run.report()
    finally:
        daemon.kill()


def test_unparseable_datagrams_are_counted_as_parse_errors(tmp_path: Path) -> None:
    """Garbage sent to the SIP port shows up in sipd_sip_parse_errors_total."""
    config = tmp_path / "sipd.yaml"
    write_config(config)
    with running_daemon(tmp_path, config) as daemon:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(b"\x00\x01 this is not SIP at all\r\n\r\n", ("127.0.0.1", daemon.sip_port))
        deadline = time.monotonic() + 5
        while True:
            metrics = daemon.metrics()
            errors = sum(v for k, v in metrics.items() if k.startswith("sipd_sip_parse_errors"))
            if errors == 3:
                break
            assert time.monotonic() < deadline, f"{metrics}\n{daemon.report()}"
            time.sleep(0.05)
        # The daemon is still serving.
        assert _raw_request(daemon.sip_port, "OPTIONS")[-1].startswith("SIP/2.0 200")


def test_unknown_http_paths_are_404(tmp_path: Path) -> None:
    """Paths the HTTP port does not serve are 404 (the console is at /, docs/console.md)."""
    config = tmp_path / "sipd.yaml"
    write_config(config)
    with running_daemon(tmp_path, config) as daemon:
        for path in ("/nope", "/metrics.json", "/calls/nosuchcall"):
            code, _, _ = daemon.get(path)
            assert code == 404, path


def test_a_vanished_caller_is_ended_by_the_media_timeout_and_leaves_no_call(
    tmp_path: Path,
) -> None:
    """sipp answers nothing after its ACK: the daemon BYEs it and /status lists no call."""
    config = tmp_path / "sipd.yaml"
    doc = write_config(config)
    doc["media"]["timeout"] = 1.5
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    scenario = (ROOT / "tests" / "interop" / "scenarios" / "uac_vanish.xml").read_text()
    with (
        running_daemon(tmp_path, config) as daemon,
        sipp_script(tmp_path, scenario, f"127.0.0.1:{daemon.sip_port}") as run,
    ):
        assert run.proc.wait(15) == 0, f"sipp got no BYE\n{run.report()}\n{daemon.report()}"
        deadline = time.monotonic() + 5
        while daemon.status()["calls"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert daemon.status()["calls"] == [], daemon.status()
        assert daemon.metrics()["sipd_active_calls"] == 0
    log = daemon.log()
    assert re.search(r"CDR call_id=\S+ .*outcome=CallFailed .*->Terminated", log), log
