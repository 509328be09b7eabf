"""The sipd service: a coordinator driven by a pluggable handler, plus operations.

:class:`SipdService` binds the SIP socket when started, writes one log line
per ended call (a call detail record), keeps the counters behind
``/metrics``, and on stop refuses new calls (503), ends every call with
BYE or CANCEL and waits up to the configured grace time.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.application import service
from twisted.internet import defer

from sipd import CallDirection, Registrar, UnifiedCoordinator, UnifiedSession, __version__
from sipd.daemon.config import DaemonConfig
from sipd.daemon.console_wiring import build_console, console_resources, start_console
from sipd.daemon.exposition import build_registry
from sipd.handlers import find_handler_factory
from sipd.handlers.routing import RoutingHandler
from sipd.logs import Logger, set_level
from sipd.metrics import Metrics
from sipd.runtime import tune_collector

__all__ = ["SipdService"]

_log = Logger(namespace="sipd")

#: Upper bounds of the daemon's histograms (seconds, or a share of packets).
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
TICK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


def _direction(session: UnifiedSession) -> str:
    """``outgoing`` or ``incoming``, as the CDR and ``/status`` spell it."""
    return "outgoing" if session.direction is CallDirection.OUTGOING else "incoming"


class SipdService(service.Service):
    """One SIP UA serving calls with the configured handler."""

    name = "sipd"

    def __init__(self, config: DaemonConfig, reactor: Any = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self._describe_metrics()
        self.coordinator = UnifiedCoordinator(
            config.sip, None, reactor=reactor, metrics=self.metrics
        )
        factory = find_handler_factory(config.handler)
        self.handler = factory.build(self.coordinator, dict(config.handler_settings))
        self.registrar: Registrar | None = None
        if config.registrar is not None:
            reg = config.registrar
            self.registrar = Registrar(
                reg.realm,
                reg.users,
                clock=self.coordinator.clock.seconds,
                min_expires=reg.min_expires,
                max_expires=reg.max_expires,
                auth=bool(reg.users),
            )
            self.coordinator.use_registrar(
                self.registrar,
                authenticate_invites=reg.authenticate_invites and bool(reg.users),
            )
            self.handler = RoutingHandler(self.coordinator, self.handler, self.registrar)
            self.metrics.gauge(
                "sipd_registered_contacts",
                "Live registrar bindings",
                lambda: len(self.registrar.location) if self.registrar else 0,
            )
        self.coordinator.handler = self.handler
        self.coordinator.on_session_end.append(self._cdr)
        self.started_at = time.time()
        self._http: Any = None
        self.metrics.gauge(
            "sipd_active_calls",
            "Calls currently set up or in progress",
            lambda: len(self.coordinator.sessions()),
        )
        self._instrument()
        self.console, self.console_live = build_console(self)

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("sipd_calls_total", "Calls ended, by outcome and direction")
        m.describe("sipd_calls_started_total", "Calls started, by direction")
        m.describe("sipd_sip_requests_received_total", "SIP requests received, by method")
        m.describe("sipd_sip_responses_received_total", "SIP responses received, by status")
        m.describe("sipd_sip_requests_sent_total", "SIP requests sent (retransmissions too)")
        m.describe("sipd_sip_responses_sent_total", "SIP responses sent (retransmissions too)")
        m.describe("sipd_sip_parse_errors_total", "Datagrams that did not parse as SIP")
        m.describe("sipd_sip_transaction_timeouts_total", "Transactions that timed out")
        m.describe("sipd_rtp_packets_sent_total", "RTP packets sent by ended calls")
        m.describe("sipd_rtp_packets_received_total", "RTP packets received by ended calls")
        m.describe("sipd_rtp_packets_lost_total", "RTP packets lost (RTCP A.3) on ended calls")

    def _instrument(self) -> None:
        """The gauges and histograms only the daemon keeps, and its Prometheus registry."""
        m = self.metrics
        m.gauge("sipd_rtp_jitter_ms", "Mean interarrival jitter of active calls", self._jitter)
        m.histogram("sipd_call_setup_seconds", "INVITE to 200 of answered calls", SETUP_BUCKETS)
        m.histogram("sipd_call_loss_ratio", "Share of RTP lost per call, at hang-up", LOSS_BUCKETS)
        m.histogram("sipd_call_jitter_seconds", "RTP jitter per call, at hang-up", JITTER_BUCKETS)
        m.histogram("sipd_media_tick_seconds", "Time one media clock wake-up took", TICK_BUCKETS)

        def tick(seconds: float) -> None:
            m.observe("sipd_media_tick_seconds", seconds)

        self.coordinator.media.clock_loop.on_tick = tick
        #: What ``GET /metrics`` serves: this daemon's store, process and GC collectors.
        self.prometheus = build_registry(m, self.coordinator.reactor)

    def _jitter(self) -> float:
        jitters = [
            float(j)
            for s in self.coordinator.sessions()
            if isinstance(j := s.stats().get("jitter_ms"), int | float)
        ]
        return sum(jitters) / len(jitters) if jitters else 0.0

    # -- service ----------------------------------------------------------------------
    def startService(self) -> None:
        set_level(self.config.log_level)
        # This process is ours: keep the collector's full passes rare and short.
        tune_collector()
        self.coordinator.start()
        start_console(self)
        config = self.config
        if config.http_host is not None:
            # Owned here rather than by a sibling service so that /status and
            # /metrics stay up while calls drain after SIGTERM.
            from twisted.web.server import Site

            from sipd.daemon.http import build_site_root

            reactor = self.coordinator.reactor
            root = build_site_root(self, console_resources(self))
            self._http = reactor.listenTCP(config.http_port, Site(root), interface=config.http_host)
        self.started_at = time.time()
        # UDP alone keeps the line it always had; a stream transport is named in it.
        transports = config.transports
        _log.info(
            "sipd {version} listening on {host}:{port}{shown} with handler {handler!r}",
            version=__version__,
            host=self.config.sip.host,
            port=self.coordinator.port,
            shown=f" ({', '.join(transports)})" if transports != ["udp"] else "",
            transports=list(transports),
            handler=self.config.handler,
        )
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        active = len(self.coordinator.sessions())
        _log.info(
            "sipd stopping: refusing new calls, ending {active} call(s), grace {grace}s",
            active=active,
            grace=self.config.grace,
        )
        d = self.coordinator.close(self.config.grace)

        def stop_http(result: object) -> object:
            self.console_live.stop()  # after the calls' BYEs were recorded
            port, self._http = self._http, None
            if port is not None:
                return port.stopListening()
            return result

        return d.addBoth(stop_http)

    # -- operations ------------------------------------------------------------------------
    def _cdr(self, session: UnifiedSession) -> None:
        stats = session.stats()
        for key, metric in (
            ("packets_sent", "sipd_rtp_packets_sent_total"),
            ("packets_received", "sipd_rtp_packets_received_total"),
            ("packets_lost", "sipd_rtp_packets_lost_total"),
        ):
            value = stats.get(key)
            if isinstance(value, int) and value > 0:
                self.metrics.inc(metric, value)
        self._observe_call(session, stats)
        failure = session.failure
        outcome = type(failure).__name__ if failure else "completed"
        status = getattr(failure, "status", None) if failure else 200
        direction = _direction(session)
        path = "->".join(session.path)
        # The line is rendered here, once, rather than by twisted.logger's
        # format-string parser for every observer: one CDR per call is the
        # daemon's only info event on the call path, and at its default level
        # it was ~8% of a call's CPU under cProfile. The fields stay on the
        # event for structured observers.
        _log.info(
            "CDR {cdr}",
            cdr=f"call_id={session.call_id} direction={direction} remote={session.remote_uri} "
            f"outcome={outcome} status={status} duration={session.duration:.2f}s path={path}",
            call_id=session.call_id,
            session_id=session.id,
            direction=direction,
            remote=session.remote_uri,
            outcome=outcome,
            status=status,
            duration=session.duration,
            path=path,
        )

    def _observe_call(self, session: UnifiedSession, stats: dict[str, Any]) -> None:
        m = self.metrics
        if session.answered_at is not None:
            m.observe("sipd_call_setup_seconds", session.answered_at - session.created_at)
        received, lost = stats.get("packets_received"), stats.get("packets_lost")
        if isinstance(received, int) and isinstance(lost, int) and received + max(lost, 0) > 0:
            m.observe("sipd_call_loss_ratio", max(lost, 0) / (received + max(lost, 0)))
            jitter = stats.get("jitter_ms")
            if isinstance(jitter, int | float):
                m.observe("sipd_call_jitter_seconds", jitter / 1000.0)

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` returns."""
        now = self.coordinator.clock.seconds()
        calls = []
        for session in self.coordinator.sessions():
            stats = session.stats()
            calls.append(
                {
                    "id": session.id,
                    "call_id": session.call_id,
                    "state": session.state,
                    "direction": _direction(session),
                    "remote": session.remote_uri,
                    "duration": round(session.duration, 3),
                    "age": round(now - session.created_at, 3),
                    "codec": stats.get("codec"),
                }
            )
        return {
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3),
            "handler": self.config.handler,
            "listen": f"{self.config.sip.host}:{self.coordinator.port}",
            "transports": list(self.config.transports),
            "accepting": self.coordinator.accepting,
            "active_calls": len(calls),
            "calls": calls,
            "registrations": self._registrations(),
        }

    def _registrations(self) -> dict[str, list[dict[str, Any]]]:
        if self.registrar is None:
            return {}
        now = self.coordinator.clock.seconds()
        return {
            aor: [{"contact": str(b.contact.uri), "expires": b.remaining(now)} for b in bindings]
            for aor, bindings in self.registrar.location.bindings().items()
        }

    def metrics_text(self) -> str:
        """What ``GET /metrics`` returns, in the Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.prometheus).decode("utf-8")

    def metrics_resource(self) -> Any:
        """The ``/metrics`` resource: prometheus_client's, reading :attr:`prometheus`."""
        from sipd.daemon.exposition import metrics_resource

        return metrics_resource(self.prometheus, self.coordinator.reactor)
