"""A sipd cluster on loopback for the interop tests: Kamailio (etc/kamailio/) and sipd workers.

Every worker is a real ``twistd sipd`` process with its own SIP, HTTP and
RTP ports; Kamailio is started with the shipped cluster config, a dispatcher
list naming the workers, and short probe timers so a test sees a dead or
draining worker taken out within a second or two. Everything is started and
stopped by PID (tests/interop/harness.py :class:`ManagedProcess`).

The oracles are independent of sipd: sipp's own call counts, Kamailio's
``dispatcher.list`` over JSON-RPC and the ``dispatch``/``failed`` lines its
config logs; the workers' CDR lines say which calls each worker took.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import (
    KAMAILIO,
    Kamailio,
    ManagedProcess,
    free_tcp_port,
    free_udp_port,
    free_udp_port_range,
    require_program,
    settle,
)

__all__ = [
    "CLUSTER_CFG",
    "WORKER_YAML",
    "Cdr",
    "Worker",
    "dispatched",
    "dispatcher_flags",
    "sipp_counts",
    "start_cluster_kamailio",
    "start_worker",
    "wait_flags",
    "write_dispatcher_list",
    "write_uac_scenario",
]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CFG = ROOT / "etc" / "kamailio" / "kamailio.cfg"
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
]

#: Worker settings for calls from sipp through one proxy: every INVITE comes
#: from Kamailio's address (no per-source limit), sipp sends no RTP (no media
#: timeouts), CDRs at info level. No 180: Kamailio's UDP receiver processes
#: each forward what they read, so a 180 sent just before the 200 can reach
#: sipp after it, which sipp's scenario takes for an unexpected message.
WORKER_YAML = """\
sip:
  send_ringing: false
media:
  timeout: 0
  unreachable_timeout: 0
  silence_when_idle: false
overload:
  source_rate: 0
log:
  level: info
"""

_CDR = re.compile(
    r"CDR call_id=(?P<call_id>\S+) direction=(?P<direction>\S+) remote=(?P<remote>\S+) "
    r"outcome=(?P<outcome>\S+) status=\S+ duration=(?P<duration>[\d.]+)s"
)


@dataclass(frozen=True, slots=True)
class Cdr:
    """One call detail record a worker logged."""

    call_id: str
    direction: str
    remote: str
    outcome: str
    duration: float


@dataclass(eq=False)
class Worker:
    """A ``twistd sipd`` worker process (restartable on the same ports)."""

    index: int
    port: int
    http_port: int
    args: list[str]
    workdir: Path
    process: ManagedProcess
    runs: list[ManagedProcess] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    async def wait_ready(self, timeout: float = 15.0) -> None:
        await self.process.wait_log(r"sipd \S+ listening on", timeout)

    def cdrs(self) -> list[Cdr]:
        """The CDRs of every run of this worker so far."""
        found = []
        for run in self.runs:
            for m in _CDR.finditer(run.log_text(None)):
                found.append(
                    Cdr(
                        m["call_id"],
                        m["direction"],
                        m["remote"],
                        m["outcome"],
                        float(m["duration"]),
                    )
                )
        return found

    def restart(self) -> None:
        """Start the worker again (after it died) on the same ports."""
        n = len(self.runs)
        self.process = ManagedProcess.spawn(
            f"worker{self.index}-run{n}", self.args, self.workdir / f"worker-{n}.log"
        )
        self.runs.append(self.process)

    def report(self) -> str:
        return "\n".join(run.report(6000) for run in self.runs)


def start_worker(
    workdir: Path, index: int, *, extra: list[str] | None = None, yaml: str = WORKER_YAML
) -> Worker:
    """A worker on free ports with ``extra`` options (``--handler``, ``--drain`` ...)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "sipd.yaml"
    config.write_text(yaml)
    port, http_port = free_udp_port(), free_tcp_port()
    media = free_udp_port_range(200)
    args = [
        *TWISTD,
        "-n",
        "--pidfile=",
        "sipd",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        "--http",
        f"127.0.0.1:{http_port}",
        "--media-ports",
        f"{media}-{media + 199}",
        *(extra or []),
    ]
    process = ManagedProcess.spawn(f"worker{index}", args, workdir / "worker-0.log")
    return Worker(index, port, http_port, args, workdir, process, [process])


def write_dispatcher_list(path: Path, workers: list[Worker]) -> Path:
    """The dispatcher list (set 1) naming ``workers``."""
    lines = [f"1 {w.uri} 0 0 duid=worker{w.index}" for w in workers]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_cluster_kamailio(
    workdir: Path,
    ds_list: Path,
    *,
    ping_interval: int = 1,
    probe_threshold: int = 1,
    fr_timer_ms: int = 1000,
    port: int | None = None,
    extra: list[str] | None = None,
) -> Kamailio:
    """Kamailio with etc/kamailio/kamailio.cfg on free ports (SIP on ``port`` if given)."""
    require_program(KAMAILIO)
    workdir.mkdir(parents=True, exist_ok=True)
    port, rpc_port = port or free_udp_port(), free_udp_port()
    runtime_dir = Path(tempfile.mkdtemp(prefix="sipd-kam-"))
    ctl_socket = f"unix:{runtime_dir}/ctl.sock"
    args = [
        KAMAILIO,
        "-f",
        str(CLUSTER_CFG),
        "-DD",
        "-E",
        "-l",
        f"udp:127.0.0.1:{port}",
        "-A",
        f'DS_LIST="{ds_list}"',
        "-A",
        f"DS_PING_INTERVAL={ping_interval}",
        "-A",
        f"DS_PROBE_THRESHOLD={probe_threshold}",
        "-A",
        f"FR_TIMER={fr_timer_ms}",
        "-A",
        "LOG_CALLS",
        "-A",
        f'RPC_SOCKET="udp:127.0.0.1:{rpc_port}"',
        "-A",
        f'CTL_SOCKET="{ctl_socket}"',
        "-Y",
        str(runtime_dir),
        "-P",
        str(runtime_dir / "kamailio.pid"),
        "-w",
        str(workdir),
        "-m",
        "64",
        "-M",
        "8",
        *(extra or []),
    ]
    process = ManagedProcess.spawn("kamailio", args, workdir / "kamailio.log", cwd=workdir)
    return Kamailio(process, port, rpc_port, ctl_socket, runtime_dir, "sipd.cluster", {})


async def dispatcher_flags(k: Kamailio) -> dict[str, str]:
    """Worker URI -> dispatcher FLAGS ("AP" active and probed, "IP" inactive ...)."""
    result: Any = await k.rpc("dispatcher.list")
    flags = {}
    for record in result.get("RECORDS", []):
        for target in record["SET"].get("TARGETS", []):
            dest = target["DEST"]
            flags[dest["URI"]] = dest["FLAGS"]
    return flags


async def wait_flags(k: Kamailio, uri: str, prefix: str, timeout: float) -> float:
    """Poll ``dispatcher.list`` until ``uri``'s flags start with ``prefix``; seconds taken."""
    from twisted.internet import reactor

    start: float = reactor.seconds()
    while True:
        flags = (await dispatcher_flags(k)).get(uri, "")
        now: float = reactor.seconds()
        if flags.startswith(prefix):
            return now - start
        if now - start > timeout:
            pytest.fail(
                f"kamailio's dispatcher still shows {uri} as {flags!r} after {timeout}s "
                f"(waited for {prefix!r})\n{k.report()}"
            )
        await settle(0.05)


_DISPATCH = re.compile(r"dispatch INVITE (\S+) to (\S+)")
_FAILED = re.compile(r"worker (\S+) failed INVITE (\S+) \((\d+)\)")


def dispatched(log: str) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Kamailio's log: (call id, worker) per dispatch; (worker, call id, status) per failover."""
    return _DISPATCH.findall(log), _FAILED.findall(log)


def sipp_counts(process: ManagedProcess) -> tuple[int, int]:
    """(successful, failed) calls from sipp's final statistics screen."""
    text = process.log_text(None)
    ok = re.findall(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)", text)
    bad = re.findall(r"Failed call\s+\|\s+\d+\s+\|\s+(\d+)", text)
    if not ok or not bad:
        pytest.fail(f"sipp printed no call statistics\n{process.report()}")
    return int(ok[-1]), int(bad[-1])


#: sipp's uac, but honouring Record-Route: ACK and BYE go to the Contact via the
#: proxy's Route set (sipp's built-in uac sends them to the Request-URI).
UAC_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac through a record-routing proxy">
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
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def write_uac_scenario(path: Path) -> Path:
    path.write_text(UAC_SCENARIO)
    return path
