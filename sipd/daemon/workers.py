"""``twistd sipd --workers N``: N worker daemons behind one proxy, on one machine.

One Python process serves one core. To use more, the daemon starts N
workers, each a full ``twistd sipd`` child process with its own SIP port
(the configured port + i), its own HTTP port (+ i) and its own slice of the
RTP port range, and writes the dispatcher list that Kamailio
(``etc/kamailio/kamailio.cfg``, docs/cluster.md) balances new calls over.
The parent binds nothing itself: it starts the workers, restarts one that
dies, and on SIGTERM forwards SIGTERM to each (each drains: OPTIONS and new
INVITEs get 503 while its calls end) and exits once all have exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer, error, protocol

from sipd.errors import ConfigError
from sipd.logs import Logger

__all__ = ["WorkerPlan", "WorkerSupervisor", "dispatcher_list", "plan_workers"]

_log = Logger(namespace="sipd.workers")

#: The command that runs twistd from the same interpreter (and so the same virtualenv).
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
]

#: Seconds before a worker that exited on its own is started again; doubled
#: (up to MAX_RESTART_DELAY) while it keeps exiting within SHORT_RUN seconds
#: of its start (a port taken, a broken config), so a crash loop stays slow.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
SHORT_RUN = 10.0


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """Where one worker listens and which RTP ports it owns."""

    index: int
    host: str
    port: int
    #: HTTP (``/status``, ``/metrics``) host and port, or None when HTTP is off.
    http: tuple[str, int] | None
    media_min: int
    media_max: int

    @property
    def uri(self) -> str:
        return f"sip:{_bracket(self.host)}:{self.port}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def plan_workers(
    count: int,
    host: str,
    port: int,
    http: tuple[str, int] | None,
    media_min: int,
    media_max: int,
) -> list[WorkerPlan]:
    """Ports for ``count`` workers: SIP and HTTP ports + i, the RTP range cut in equal parts.

    Each part starts on an even port (RTP even, RTCP odd) and holds at least
    one pair; a range too small for that is a :class:`ConfigError`.
    """
    if count < 1:
        raise ConfigError(f"--workers: {count} must be at least 1")
    if port == 0:
        raise ConfigError("--workers: needs a fixed SIP port (--listen HOST:PORT), not port 0")
    if port + count - 1 > 65535:
        raise ConfigError(f"--workers: ports {port}-{port + count - 1} go past 65535")
    first = media_min + (media_min % 2)
    share = (media_max + 1 - first) // count
    share -= share % 2
    if share < 2:
        raise ConfigError(
            f"--workers: the RTP range {media_min}-{media_max} is too small for {count} "
            "workers (each needs at least one even/odd port pair): widen --media-ports"
        )
    return [
        WorkerPlan(
            index=i + 1,
            host=host,
            port=port + i,
            http=None if http is None else (http[0], http[1] + i),
            media_min=first + i * share,
            media_max=first + (i + 1) * share - 1,
        )
        for i in range(count)
    ]


def dispatcher_list(workers: list[WorkerPlan], set_id: int = 1) -> str:
    """Kamailio dispatcher list text naming every worker (etc/kamailio/dispatcher.list.in)."""
    lines = [
        "# Written by `twistd sipd --workers`: one line per sipd worker.",
        "# SETID  SIP-URI  FLAGS  PRIORITY  ATTRIBUTES",
    ]
    lines += [f"{set_id} {w.uri} 0 0 duid=worker{w.index}" for w in workers]
    return "\n".join(lines) + "\n"


class _Worker(protocol.ProcessProtocol):
    """One worker process; tells the supervisor when it exits."""

    def __init__(self, supervisor: WorkerSupervisor, plan: WorkerPlan) -> None:
        self.supervisor = supervisor
        self.plan = plan
        self.exited: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.exited.callback(None)
        self.supervisor._ended(self, code, sig)


class WorkerSupervisor(service.Service):
    """Starts, restarts and stops the worker processes by their PIDs."""

    name = "workers"

    def __init__(
        self,
        workers: list[WorkerPlan],
        worker_args: list[str],
        list_path: str,
        stop_timeout: float,
        reactor: Any = None,
    ) -> None:
        self.workers = workers
        #: twistd sipd options every worker gets (config, handler, drain ...).
        self.worker_args = worker_args
        self.list_path = list_path
        #: Seconds to wait for the workers after SIGTERM before SIGKILL.
        self.stop_timeout = stop_timeout
        self._reactor = reactor
        self.running_workers: dict[int, tuple[_Worker, Any]] = {}
        self._stopping = False
        self._started: dict[int, float] = {}
        self._delay: dict[int, float] = {}

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def command(self, plan: WorkerPlan) -> list[str]:
        """The full command line of one worker."""
        host = _bracket(plan.host)
        http = "off" if plan.http is None else f"{_bracket(plan.http[0])}:{plan.http[1]}"
        return [
            *TWISTD,
            "-n",
            "--pidfile=",
            "sipd",
            *self.worker_args,
            "--listen",
            f"{host}:{plan.port}",
            "--http",
            http,
            "--media-ports",
            f"{plan.media_min}-{plan.media_max}",
        ]

    def startService(self) -> None:
        super().startService()
        tmp = f"{self.list_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(dispatcher_list(self.workers))
        os.replace(tmp, self.list_path)
        _log.info(
            "sipd starting {n} workers on {first}-{last}; dispatcher list {path}",
            n=len(self.workers),
            first=self.workers[0].port,
            last=self.workers[-1].port,
            path=os.path.abspath(self.list_path),
        )
        for plan in self.workers:
            self._spawn(plan)

    def _spawn(self, plan: WorkerPlan) -> None:
        if self._stopping:
            return
        worker = _Worker(self, plan)
        args = self.command(plan)
        # The worker writes to our stdout and stderr; it is in our process group.
        transport = self.reactor.spawnProcess(
            worker, args[0], args, env=os.environ.copy(), childFDs={0: "w", 1: 1, 2: 2}
        )
        self.running_workers[plan.index] = (worker, transport)
        self._started[plan.index] = self.reactor.seconds()
        _log.info(
            "worker {index} started: pid {pid}, SIP {uri}",
            index=plan.index,
            pid=transport.pid,
            uri=plan.uri,
        )

    def _ended(self, worker: _Worker, code: int | None, sig: int | None) -> None:
        plan = worker.plan
        if self.running_workers.get(plan.index, (None,))[0] is worker:
            del self.running_workers[plan.index]
        if self._stopping:
            _log.info("worker {index} exited ({code})", index=plan.index, code=code)
            return
        ran = self.reactor.seconds() - self._started.get(plan.index, 0.0)
        delay = RESTART_DELAY
        if ran < SHORT_RUN:
            delay = min(2 * self._delay.get(plan.index, RESTART_DELAY / 2), MAX_RESTART_DELAY)
        self._delay[plan.index] = delay
        _log.warn(
            "worker {index} exited (status {code}, signal {sig}) after {ran:.1f}s; "
            "starting it again in {delay}s",
            index=plan.index,
            code=code,
            sig=sig,
            ran=ran,
            delay=delay,
        )
        self.reactor.callLater(delay, self._spawn, plan)

    def pids(self) -> dict[int, int]:
        """Worker index -> PID of the running workers."""
        return {i: t.pid for i, (_, t) in self.running_workers.items() if t.pid}

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self._stopping = True
        waits = []
        for worker, transport in list(self.running_workers.values()):
            waits.append(worker.exited)
            with contextlib.suppress(error.ProcessExitedAlready):
                transport.signalProcess("TERM")
        if not waits:
            return defer.succeed(None)
        _log.info("sipd stopping {n} workers (SIGTERM)", n=len(waits))
        done = defer.DeferredList(waits)

        def overdue() -> None:
            for worker, transport in list(self.running_workers.values()):
                _log.warn("worker {index} still runs: SIGKILL", index=worker.plan.index)
                if transport.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(transport.pid, signal.SIGKILL)

        timer = self.reactor.callLater(self.stop_timeout, overdue)

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()

        return done.addCallback(finished)
