"""``twistd sipd``: command-line options and the service it builds.

``twistd -n sipd --config etc/sipd.yaml`` reads the YAML config (see
``docs/daemon.md``); the options below override its common keys. Errors in
the file or the options stop twistd before any port is bound, with a message
naming the file, line and key.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from twisted.application import service
from twisted.python import usage

from sipd.daemon.config import DaemonConfig, load_config, parse_hostport
from sipd.daemon.service import SipdService
from sipd.errors import ConfigError, StateTableError
from sipd.handlers import find_handler_factory

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """Options of ``twistd sipd``."""

    optParameters = [
        ["config", "c", None, "YAML config file (etc/sipd.yaml)."],
        ["listen", "l", None, "SIP address HOST:PORT (overrides sip.listen)."],
        ["handler", None, None, "Handler plugin name (overrides handler.name)."],
        ["http", None, None, "HTTP status address HOST:PORT, or 'off' (overrides http.listen)."],
        ["media-ports", None, None, "RTP port range MIN-MAX (overrides media.port_min/max)."],
        ["state-table", None, None, "State table YAML (overrides state_table)."],
        [
            "grace",
            None,
            None,
            "Seconds to wait for calls to end on stop (overrides shutdown.grace).",
        ],
        [
            "drain",
            None,
            None,
            "On stop, first refuse new calls (OPTIONS and INVITE 503) and wait up to this "
            "many seconds for calls to end by themselves (default 0; 30 with --workers).",
        ],
        ["outbound-proxy", None, None, "Send outgoing calls via this proxy (sip:HOST:PORT)."],
        [
            "workers",
            None,
            None,
            "Run N worker daemons on SIP ports PORT..PORT+N-1 behind Kamailio (docs/cluster.md).",
        ],
        [
            "dispatcher-list",
            None,
            "dispatcher.list",
            "With --workers: where to write Kamailio's dispatcher list.",
        ],
    ]

    def postOptions(self) -> None:
        try:
            self["daemon_config"] = self._build()
        except ConfigError as exc:
            # Not a UsageError: twistd would print its whole usage text first.
            # The message alone (file:line: key: what is wrong), exit status 1.
            raise SystemExit(str(exc)) from None

    def _build(self) -> DaemonConfig:
        cfg = load_config(self["config"]) if self["config"] else DaemonConfig()
        sip = cfg.sip
        changes: dict[str, Any] = {}
        if self["listen"]:
            try:
                changes["host"], changes["port"] = parse_hostport(self["listen"], 5060)
            except ValueError as exc:
                raise ConfigError(f"--listen: {exc}") from None
        if self["media-ports"]:
            low, _, high = str(self["media-ports"]).partition("-")
            if not (low.isdigit() and high.isdigit()):
                raise ConfigError(
                    f"--media-ports: {self['media-ports']!r} must look like 20000-20999"
                )
            changes["media_port_min"], changes["media_port_max"] = int(low), int(high)
        if self["state-table"]:
            if not os.path.exists(self["state-table"]):
                raise ConfigError(f"--state-table: file {self['state-table']!r} does not exist")
            changes["state_table_path"] = os.path.abspath(self["state-table"])
        if self["outbound-proxy"]:
            changes["outbound_proxy"] = self["outbound-proxy"]
        if changes:
            try:
                cfg.sip = sip.replace(**changes)
            except ConfigError as exc:
                # Name the option, not the internal field, e.g. "--media-ports: 5000-4000 ...".
                names = str(exc).partition(": ")[0].split("/")
                options = {"media_port_min": "--media-ports", "media_port_max": "--media-ports"}
                options.update(host="--listen", port="--listen", state_table_path="--state-table")
                options.update(outbound_proxy="--outbound-proxy")
                given = sorted({options.get(n, n) for n in names})
                raise ConfigError(f"{', '.join(given)}: {str(exc).partition(': ')[2]}") from None
        if self["handler"]:
            try:
                find_handler_factory(self["handler"])
            except ConfigError as exc:
                raise ConfigError(f"--handler: {exc}".replace(" handler.name:", "")) from None
            cfg.handler = self["handler"]
        if self["http"]:
            if self["http"] in ("off", "none"):
                cfg.http_host = None
            else:
                try:
                    cfg.http_host, cfg.http_port = parse_hostport(self["http"], 8080)
                except ValueError as exc:
                    raise ConfigError(f"--http: {exc}") from None
        if self["grace"]:
            try:
                cfg.grace = float(self["grace"])
            except ValueError:
                raise ConfigError(f"--grace: {self['grace']!r} is not a number") from None
        for key in ("drain", "workers"):
            if self[key] is not None:
                try:
                    self[key] = int(self[key]) if key == "workers" else float(self[key])
                except ValueError:
                    raise ConfigError(f"--{key}: {self[key]!r} is not a number") from None
        find_handler_factory(cfg.handler)  # unknown names fail here, before binding
        return cfg


class _GracefulTerm(service.Service):
    """Make SIGTERM a normal stop: end calls gracefully, then exit with status 0.

    Twisted's own SIGTERM handler remembers the signal and re-raises it once
    the reactor has stopped, so even a clean shutdown would end with "killed
    by SIGTERM" (status 143) and look like a crash to a supervisor. This
    handler only stops the reactor; the services' stopService (503 to new
    INVITEs, BYE/CANCEL to every call, the grace wait) still runs.
    """

    name = "sigterm"

    def startService(self) -> None:
        super().startService()
        from twisted.internet import reactor

        # After startup: the reactor installs its own handlers while starting.
        reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor  # needs IReactorCore and IReactorThreads
        stopping = False

        def stop() -> None:
            nonlocal stopping
            if not stopping:
                stopping = True
                reactor.stop()

        signal.signal(signal.SIGTERM, lambda signum, frame: reactor.callFromThread(stop))


def _check_free(kind: str, host: str, port: int) -> None:
    """Exit with one line if ``host:port`` cannot be bound (in use, not ours, no right).

    twistd binds in ``startService``, where a failure is a long traceback in
    the log; trying the address here, before twistd starts logging, turns
    the common case (another sipd, a softphone or Asterisk on 5060) into a
    plain message. A port taken between this check and the real bind still
    fails there, as before.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = kind == "SIP"
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as probe:
        if not udp:
            # As Twisted's listenTCP does, so a port in TIME_WAIT is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            if not udp:
                probe.listen(1)
        except OSError as exc:
            where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            option = "--http or http.listen" if kind == "HTTP" else "--listen or sip.listen"
            why = (exc.strerror or str(exc)).lower()
            raise SystemExit(
                f"twistd sipd: cannot listen for {kind} on {where}: {why} (choose another "
                f"address with {option})"
            ) from None


def makeService(options: Options) -> service.MultiService:
    """The SIP service (which also serves /status and /metrics unless HTTP is off)."""
    cfg: DaemonConfig = options["daemon_config"]
    if options["workers"] is not None:
        return _workers_service(options, cfg)
    _check_free("SIP", cfg.sip.host, cfg.sip.port)
    if cfg.sip.transport != "udp":
        # The stream transport listens on the SIP port number too (TCP).
        _check_free(f"SIP over {cfg.sip.transport.upper()}", cfg.sip.host, cfg.sip.port)
    if cfg.http_host is not None:
        _check_free("HTTP", cfg.http_host, cfg.http_port)
    top = service.MultiService()
    try:
        sipd_service = SipdService(cfg)
    except ConfigError as exc:
        # The handler checks its own settings; point at them in the file.
        where = cfg.source
        if cfg.handler_settings_line is not None:
            where += f":{cfg.handler_settings_line}"
        # twistd prints a UsageError from here as a traceback; exit plainly.
        raise SystemExit(f"twistd sipd: {where}: {exc}") from None
    except StateTableError as exc:
        raise SystemExit(f"twistd sipd: state_table: {exc}") from None
    if options["drain"]:
        from sipd.daemon.drain import Draining

        Draining(sipd_service, options["drain"]).setServiceParent(top)
    else:
        sipd_service.setServiceParent(top)
    _GracefulTerm().setServiceParent(top)
    return top


def _workers_service(options: Options, cfg: DaemonConfig) -> service.MultiService:
    """``--workers N``: a supervisor of N ``twistd sipd`` children (sipd/daemon/workers.py)."""
    from sipd.daemon.workers import WorkerSupervisor, plan_workers

    sip = cfg.sip
    try:
        plans = plan_workers(
            options["workers"],
            sip.host,
            sip.port,
            None if cfg.http_host is None else (cfg.http_host, cfg.http_port),
            sip.media_port_min,
            sip.media_port_max,
        )
    except ConfigError as exc:
        raise SystemExit(f"twistd sipd: {exc}") from None
    for plan in plans:
        _check_free("SIP", plan.host, plan.port)
        if plan.http is not None:
            _check_free("HTTP", *plan.http)
    drain = 30.0 if options["drain"] is None else options["drain"]
    args: list[str] = ["--drain", str(drain), "--grace", str(cfg.grace)]
    for key in ("config", "handler", "state-table", "outbound-proxy"):
        if options[key]:
            value = options[key]
            args += [f"--{key}", os.path.abspath(value) if key == "config" else value]
    top = service.MultiService()
    supervisor = WorkerSupervisor(plans, args, options["dispatcher-list"], drain + cfg.grace + 10)
    supervisor.setServiceParent(top)
    _GracefulTerm().setServiceParent(top)
    return top
