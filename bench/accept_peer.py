"""A sipd UA that answers every call and hangs up when the caller does.

``bench/cps.sh`` runs it as the system under test for sipp's ``uac``
scenario. It plays no audio (no media is queued and no silence is sent), so
what is measured is the signalling path: parsing, transactions, dialogs,
the state machine and session bookkeeping.

Usage::

    .venv/bin/python bench/accept_peer.py [--port 0] [--host 127.0.0.1] [--set KEY=VALUE]...
        [--transport udp|tcp|tls [--cert server.crt --key server.key]]

``--transport tcp`` or ``tls`` makes the peer listen for SIP over TCP or TLS
at its port as well (UDP is always served); TLS needs ``--cert`` and
``--key`` (``bench/bench_certs.py`` makes a throwaway pair).

``--api simple`` measures the path users get instead: a
:class:`~sipd.SimplePeer` made with ``SimplePeer.create`` and its defaults
(idle silence, a fresh RTP port per call, info-level events, no logging set
up, as in the README; the collector's young threshold raised, as
``SimplePeer.create`` does), answering each call from ``wait_for_incoming()`` with
``incoming.accept()``. Only the per-source INVITE limit is turned off, as for
the tuned peer (``--set`` still applies).

``--set`` changes one :class:`~sipd.config.SipdConfig` field (the value is
read as YAML: ``--set overload_control=false``, ``--set overload_max_lag=0.05``).
The per-source INVITE limit is off unless set: every call of sipp comes from
one address, and the benchmarks measure the whole service.

It prints ``PID <pid>`` and ``PORT <port>`` on stdout as soon as it listens
(the script measures CPU and RSS through ``/proc/<pid>`` and stops the
process by PID with SIGTERM). On SIGTERM it prints ``CALLS <n>``,
``LIVE <sessions>`` and ``RECEIVED udp=<n> tcp=<n> tls=<n>`` (the INVITEs
that arrived over each transport, so a script can check that its load went
over the transport it meant) before exiting. ``SIPD_PROFILE=<file>`` runs the
reactor under cProfile and writes the stats to that file at exit.

Like the daemon it tunes the garbage collector at start
(:func:`sipd.runtime.tune_collector`); ``GC_TUNING=0`` keeps CPython's
defaults, to measure what the tuning is worth. The simple peer does what
``SimplePeer.create`` does by default (it raises the young threshold only);
``GC_TUNING=0`` passes ``tune_gc=False``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections import Counter
from typing import Any

from sipd import SipdConfig, UnifiedCoordinator, UnifiedSession
from sipd.runtime import tune_collector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    parser.add_argument("--cert", help="TLS: the server certificate (PEM)")
    parser.add_argument("--key", help="TLS: its private key (PEM)")
    parser.add_argument(
        "--api",
        choices=["tuned", "simple"],
        default="tuned",
        help="tuned: a UnifiedCoordinator, warnings-only logging, no idle silence; "
        "simple: a SimplePeer with its defaults",
    )
    args = parser.parse_args()
    import yaml

    settings: dict[str, Any] = {"overload_source_rate": 0}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key.strip()] = yaml.safe_load(value)

    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    # Log as a daemon would at its default level (warnings and errors). Until
    # logging begins, Twisted buffers every event in memory (up to 65536 of
    # them), which would show up as RSS that never comes back.
    # A SimplePeer user who sets up no logging gets Twisted's defaults: the
    # simple peer measures exactly that.
    if args.api == "tuned":
        level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
        observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [level])
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    if args.transport != "udp":
        settings.setdefault("transport", args.transport)
    if args.transport == "tls":
        from sipd import TlsConfig

        if not (args.cert and args.key):
            parser.error("--transport tls needs --cert and --key")
        settings.setdefault("tls", TlsConfig(certificate=args.cert, private_key=args.key))
    answered = [0]  # calls answered, shared with the simple peer's loop
    coordinator: UnifiedCoordinator
    if args.api == "simple":
        coordinator = _simple_peer(args.host, args.port, settings, answered)
    else:
        tuned: dict[str, Any] = {
            "send_ringing": True,
            "silence_when_idle": False,
            "media_port_min": 20000,
            "media_port_max": 60000,
        }
        config = SipdConfig(name="bench", host=args.host, port=args.port, **(tuned | settings))
        coordinator = UnifiedCoordinator(config, reactor=reactor)
        if os.environ.get("GC_TUNING", "1") != "0":  # as the daemon does (GC_TUNING=0: defaults)
            tune_collector()
        coordinator.start()

        def accept(session: UnifiedSession) -> None:
            answered[0] += 1
            session.accept()

        coordinator.on_incoming = accept

    def stop(signum: int, frame: Any) -> None:
        print(f"CALLS {answered[0]}", flush=True)
        states = Counter(s.state for s in coordinator.store)
        print(f"LIVE {len(coordinator.store)} {dict(states)}", flush=True)
        metrics = coordinator.metrics
        counted = "sipd_sip_requests_received_total"
        by_transport = {
            # UDP's counts carry no transport label (or, should they gain one, "udp").
            "udp": metrics.get(counted, method="INVITE")
            + metrics.get(counted, method="INVITE", transport="udp"),
            "tcp": metrics.get(counted, method="INVITE", transport="tcp"),
            "tls": metrics.get(counted, method="INVITE", transport="tls"),
        }
        print("RECEIVED " + " ".join(f"{k}={v:.0f}" for k, v in by_transport.items()), flush=True)
        if os.environ.get("SIPD_METRICS"):
            print(coordinator.metrics.render(), flush=True)
            for session in list(coordinator.store)[:3]:
                leg = session.leg
                print("STUCK", session.call_id, leg and leg.server_txn and leg.server_txn.state)
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"PID {os.getpid()}", flush=True)
    print(f"PORT {coordinator.port}", flush=True)

    profile_path = os.environ.get("SIPD_PROFILE")
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(reactor.run, installSignalHandlers=False)  # type: ignore[attr-defined]
        profiler.dump_stats(profile_path)
    else:
        reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    return 0


def _simple_peer(
    host: str, port: int, settings: dict[str, Any], answered: list[int]
) -> UnifiedCoordinator:
    """A SimplePeer with its defaults that accepts every call.

    Counts the calls it answers in ``answered[0]``; returns its coordinator.
    """
    from twisted.internet import defer

    from sipd import IncomingCall, SimplePeer, SipdError

    # SimplePeer.create's own default (tune_gc=True); GC_TUNING=0 turns it off.
    settings.setdefault("tune_gc", os.environ.get("GC_TUNING", "1") != "0")
    settings.setdefault("media_port_min", 20000)
    settings.setdefault("media_port_max", 60000)
    made: list[SimplePeer] = []
    SimplePeer.create("bench", port, host=host, **settings).addCallback(made.append)
    if not made:  # create() binds synchronously for a numeric host
        raise SystemExit("SimplePeer.create did not bind at once; see the log above")
    peer = made[0]

    async def answer_all() -> None:
        while True:
            try:
                incoming: IncomingCall = await peer.wait_for_incoming()
            except SipdError:  # the peer closed as the reactor stopped
                return
            answered[0] += 1
            incoming.accept()

    defer.ensureDeferred(answer_all())
    return peer.coordinator


if __name__ == "__main__":
    sys.exit(main())
