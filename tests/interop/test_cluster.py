"""A cluster of sipd workers behind a real Kamailio (etc/kamailio/kamailio.cfg) on loopback.

Kamailio's dispatcher balances sipp's calls over three ``twistd sipd``
workers by Call-ID hash and probes them with OPTIONS every second. The
tests kill a worker with SIGKILL mid-run, drain one with SIGTERM, restart
one, and call a user registered at Kamailio from calls every worker
handles. Oracles: sipp's call counts, Kamailio's ``dispatcher.list`` (JSON-RPC)
and its dispatch log lines, and each worker's CDR lines.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import SimplePeer
from sipd.daemon.workers import dispatcher_list, plan_workers
from sipd.errors import ConfigError
from tests.conftest import eventually, within
from tests.interop.cluster import (
    WORKER_YAML,
    Worker,
    dispatched,
    dispatcher_flags,
    sipp_counts,
    start_cluster_kamailio,
    start_worker,
    wait_flags,
    write_dispatcher_list,
    write_uac_scenario,
)
from tests.interop.harness import (
    Interop,
    Kamailio,
    ManagedProcess,
    free_tcp_port,
    free_udp_port,
    free_udp_port_range,
    interop,
    settle,
)

__all__ = ["interop"]

pytestmark = pytest.mark.interop

#: Probe interval (s) and first-answer timeout (s) the tests run Kamailio with.
PING, FR = 1, 1.0


async def _cluster(
    interop: Interop, tmp_path: Path, count: int, extra: list[str] | None = None
) -> tuple[Kamailio, list[Worker]]:
    """Kamailio and ``count`` ready workers, all stopped by PID after the test."""
    workers = [start_worker(tmp_path / f"w{i}", i, extra=extra or []) for i in range(1, count + 1)]
    interop.processes += [w.process for w in workers]
    ds_list = write_dispatcher_list(tmp_path / "dispatcher.list", workers)
    k = start_cluster_kamailio(tmp_path / "kamailio", ds_list, ping_interval=PING)
    interop.processes.append(k.process)
    interop.kamailios.append(k)
    await k.wait_ready()
    for w in workers:
        await w.wait_ready()
    for w in workers:
        await wait_flags(k, w.uri, "AP", 10)
    return k, workers


def _sipp(
    interop: Interop, k: Kamailio, tmp_path: Path, calls: int, rate: float, hold_ms: int
) -> ManagedProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    scenario = write_uac_scenario(tmp_path / "uac_rr.xml")
    args = ["-sf", str(scenario), "-s", "service", "-m", str(calls), "-r", str(rate)]
    args += ["-d", str(hold_ms), "-timeout", "90", "-max_recv_loops", "1000"]
    return interop.sipp(args, remote=k.host_port)


def _completed(worker: Worker) -> set[str]:
    return {c.call_id for c in worker.cdrs() if c.outcome == "completed"}


@pytest_twisted.ensureDeferred
async def test_calls_spread_a_killed_worker_is_routed_around_and_comes_back(
    interop: Interop, tmp_path: Path
) -> None:
    """300 calls over three workers; one SIGKILLed mid-run; the proxy notices; it is restarted."""
    k, workers = await _cluster(interop, tmp_path, 3)
    victim = workers[2]
    sipp = _sipp(interop, k, tmp_path / "sipp", 300, 25, 1000)
    await settle(5)  # about 125 calls placed, some 25 of them up
    assert sipp.running(), f"sipp ended early\n{sipp.report()}"
    os.kill(victim.process.pid, signal.SIGKILL)
    await victim.process.wait_exit(5)
    # Probe every PING s, a probe unanswered after FR s marks the worker down.
    noticed = await wait_flags(k, victim.uri, "I", PING + FR + 3)
    after_notice = len(k.process.log_text(None))
    code = await sipp.wait_exit(90)
    ok, failed = sipp_counts(sipp)
    log = k.process.log_text(None)
    sent, failovers = dispatched(log)

    # Every worker took calls, and every call sipp completed was a worker's.
    taken = {w.index: _completed(w) for w in workers}
    for index, calls in taken.items():
        assert calls, f"worker {index} took no call\n{k.report()}"
    assert sum(len(c) for c in taken.values()) >= ok
    # Only calls up on the killed worker at the kill failed (their BYE found nobody).
    on_victim = {cid for cid, uri in sent if uri == victim.uri}
    lost = on_victim - taken[victim.index] - {cid for _, cid, _ in failovers}
    assert failed <= len(lost), f"{failed} calls failed, {len(lost)} were up on the killed worker"
    assert ok + failed == 300 and failed <= 15, f"sipp exit {code}\n{sipp.report(3000)}"
    # Calls set up on the survivors completed.
    for w in workers[:2]:
        bad = [c for c in w.cdrs() if c.outcome != "completed"]
        assert not bad, f"worker {w.index} had calls fail: {bad[:3]}"
    # Once the probe noticed, no new call was sent to the dead worker.
    later, _ = dispatched(log[after_notice:])
    assert later, "no call was placed after the probe noticed: the test proves nothing"
    assert all(uri != victim.uri for _, uri in later), f"sent to the dead worker ({noticed:.1f}s)"
    # Calls that hashed to the dead worker before that were tried on the next one.
    for uri, cid, status in failovers:
        assert uri == victim.uri and status == "408", (uri, cid, status)

    # Restarted on the same port, it is probed back in and takes calls again.
    victim.restart()
    interop.processes.append(victim.process)
    await victim.wait_ready()
    await wait_flags(k, victim.uri, "A", PING + FR + 5)
    before = len(_completed(victim))
    again = _sipp(interop, k, tmp_path / "sipp2", 30, 30, 200)
    assert await again.wait_exit(30) == 0, again.report(3000)
    assert len(_completed(victim)) > before, f"the restarted worker took no call\n{k.report()}"


@pytest_twisted.ensureDeferred
async def test_a_drained_worker_finishes_its_calls_and_gets_no_new_ones(
    interop: Interop, tmp_path: Path
) -> None:
    """SIGTERM with --drain: OPTIONS 503 takes the worker out; its calls end normally; exit 0."""
    k, workers = await _cluster(interop, tmp_path, 3, ["--drain", "20"])
    drained = workers[1]
    sipp = _sipp(interop, k, tmp_path / "sipp", 60, 10, 3000)
    await settle(2.5)
    up_at_term = len(k.process.log_text(None))
    os.kill(drained.process.pid, signal.SIGTERM)
    # Still running (its calls last 3 s), and already out of the rotation.
    await wait_flags(k, drained.uri, "I", PING + FR + 2)
    assert drained.process.running(), (
        f"the worker stopped before its calls ended\n{drained.report()}"
    )
    assert await drained.process.wait_exit(20) == 0, drained.report()
    assert await sipp.wait_exit(60) == 0, sipp.report(3000)
    assert sipp_counts(sipp) == (60, 0)

    cdrs = drained.cdrs()
    assert cdrs, "the drained worker had taken no call before SIGTERM"
    # Its calls ended when sipp hung up (3 s), not cut short by the stop.
    assert all(c.outcome == "completed" and c.duration >= 2.9 for c in cdrs), cdrs
    # Every INVITE the proxy still sent it after SIGTERM was refused (503) and
    # went to another worker: none became a call on it.
    later, failovers = dispatched(k.process.log_text(None)[up_at_term:])
    refused = {cid for uri, cid, status in failovers if uri == drained.uri and status == "503"}
    late = {cid for cid, uri in later if uri == drained.uri}
    assert late <= refused, f"{late - refused} went to the draining worker"
    assert not late & {c.call_id for c in cdrs}
    others = _completed(workers[0]) | _completed(workers[2])
    assert refused <= others, "a refused call was not completed by another worker"
    assert "sipd draining" in drained.process.log_text(None)


@pytest_twisted.ensureDeferred
async def test_a_user_registered_at_kamailio_is_called_from_every_worker(
    interop: Interop, tmp_path: Path
) -> None:
    """Queue workers ring agent alice via Kamailio (outbound proxy) wherever the caller landed."""
    k_port = free_udp_port()
    agent = f"sip:alice@127.0.0.1:{k_port}"
    yaml_extra = "handler:\n  name: queue\n  settings:\n    agents: [" + agent + "]\n"
    # The proxy's port must be known before the workers start: reserve it first.
    workers = []
    for i in range(1, 4):
        w = start_worker(
            tmp_path / f"w{i}",
            i,
            extra=["--outbound-proxy", f"sip:127.0.0.1:{k_port}"],
            yaml=WORKER_YAML + yaml_extra,
        )
        workers.append(w)
    interop.processes += [w.process for w in workers]
    ds_list = write_dispatcher_list(tmp_path / "dispatcher.list", workers)
    k = start_cluster_kamailio(tmp_path / "kamailio", ds_list, ping_interval=PING, port=k_port)
    interop.processes.append(k.process)
    interop.kamailios.append(k)
    await k.wait_ready()
    for w in workers:
        await w.wait_ready()
        await wait_flags(k, w.uri, "AP", 10)

    media = free_udp_port_range(40)
    alice = await within(
        SimplePeer.create(
            "alice",
            free_udp_port(),
            registrar=f"sip:127.0.0.1:{k_port}",
            media_port_min=media,
            media_port_max=media + 39,
        ),
        10,
    )
    answered: list[str] = []

    async def answer() -> None:
        while True:
            incoming = await alice.wait_for_incoming()
            answered.append(incoming.caller)
            await incoming.accept()

    loop = defer.ensureDeferred(answer())
    try:
        await k.wait_registered("alice")

        def reached_alice() -> set[int]:
            return {
                w.index
                for w in workers
                if any(c.direction == "outgoing" and "alice" in c.remote for c in w.cdrs())
            }

        for batch in range(4):
            sipp = _sipp(interop, k, tmp_path / f"sipp{batch}", 6, 1, 1500)
            await sipp.wait_exit(40)
            # An agent leg's CDR is written when it ends, a moment after sipp's call.
            await eventually(lambda: reached_alice() == {1, 2, 3}, 3)
            reached = reached_alice()
            if reached == {1, 2, 3}:
                break
        # Whichever worker took the caller reached alice through Kamailio: at least
        # two different workers did (24 Call-ID hashes have once landed on two of
        # the three workers only; test_calls_spread_... checks that all take calls).
        assert len(reached) >= 2, f"workers {reached} reached alice\n{k.report()}"
        ports = " ".join(answered)
        assert answered and all(f":{w.port}" in ports for w in workers if w.index in reached)
    finally:
        loop.addErrback(lambda f: f.trap(defer.CancelledError))
        loop.cancel()
        await alice.close()


@pytest_twisted.ensureDeferred
async def test_twistd_workers_writes_the_list_and_stops_its_workers(
    interop: Interop, tmp_path: Path
) -> None:
    """``twistd sipd --workers 2``: calls through Kamailio reach both; SIGTERM stops all, exit 0."""
    config = tmp_path / "sipd.yaml"
    config.write_text(WORKER_YAML)
    port = free_udp_port()
    while not _free_pair(port):
        port = free_udp_port()
    http = free_tcp_port()
    media = free_udp_port_range(80)
    ds_list = tmp_path / "dispatcher.list"
    args = [
        sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
        "-n",
        "--pidfile=",
        "sipd",
        "--config",
        str(config),
        "--workers",
        "2",
        "--listen",
        f"127.0.0.1:{port}",
        "--http",
        f"127.0.0.1:{http}",
        "--media-ports",
        f"{media}-{media + 79}",
        "--dispatcher-list",
        str(ds_list),
        "--drain",
        "5",
    ]
    sup = ManagedProcess.spawn("supervisor", args, tmp_path / "supervisor.log")
    interop.processes.append(sup)
    await sup.wait_log(r"worker 2 started: pid (\d+)")
    assert f"sip:127.0.0.1:{port + 1}" in ds_list.read_text()
    k = start_cluster_kamailio(tmp_path / "kamailio", ds_list, ping_interval=PING)
    interop.processes.append(k.process)
    interop.kamailios.append(k)
    await k.wait_ready()
    for p in (port, port + 1):
        await wait_flags(k, f"sip:127.0.0.1:{p}", "AP", 15)
    sipp = _sipp(interop, k, tmp_path / "sipp", 20, 20, 100)
    assert await sipp.wait_exit(30) == 0, sipp.report(3000)
    log = sup.log_text(None)
    assert log.count("CDR call_id=") == 20
    sent, _ = dispatched(k.process.log_text(None))
    assert {uri for _, uri in sent} == {f"sip:127.0.0.1:{port}", f"sip:127.0.0.1:{port + 1}"}
    pids = [int(p) for p in re.findall(r"worker \d started: pid (\d+)", log)]
    # A worker that dies is started again, and Kamailio's probe takes it back.
    os.kill(pids[0], signal.SIGKILL)
    await sup.wait_log(r"worker 1 started: pid (\d+)(?s:.*)worker 1 started: pid (\d+)", 10)
    await settle(PING + FR)
    await wait_flags(k, f"sip:127.0.0.1:{port}", "A", 15)
    pids += [int(p) for p in re.findall(r"worker \d started: pid (\d+)", sup.log_text(None))]
    os.kill(sup.pid, signal.SIGTERM)
    assert await sup.wait_exit(20) == 0, sup.report()
    for pid in pids:
        assert not _alive(pid), f"worker pid {pid} outlived the supervisor"
    assert (await dispatcher_flags(k)) is not None


@pytest_twisted.ensureDeferred
async def test_two_kamailio_nodes_share_registrations_over_dmq(
    interop: Interop, tmp_path: Path
) -> None:
    """WITH_DMQ: a user registered at node A is in node B's location table, and callable there."""
    ds_list = tmp_path / "dispatcher.list"
    ds_list.write_text("")
    dmq = [free_udp_port(), free_udp_port()]
    nodes = []
    for i, name in enumerate("ab"):
        extra = ["-l", f"udp:127.0.0.1:{dmq[i]}", "-A", "WITH_DMQ", "-A", f"DMQ_PORT={dmq[i]}"]
        extra += ["-A", f'DMQ_SERVER="sip:127.0.0.1:{dmq[i]}"']
        extra += ["-A", f'DMQ_NOTIFY="sip:127.0.0.1:{dmq[1 - i]}"']
        k = start_cluster_kamailio(tmp_path / f"kamailio-{name}", ds_list, extra=extra)
        interop.processes.append(k.process)
        interop.kamailios.append(k)
        nodes.append(k)
    for k in nodes:
        await k.wait_ready()
    a, b = nodes
    media = free_udp_port_range(20)
    alice = await within(
        SimplePeer.create(
            "alice",
            free_udp_port(),
            registrar=a.uri,
            media_port_min=media,
            media_port_max=media + 19,
        ),
        10,
    )
    try:
        await a.wait_registered("alice")
        bindings = await b.wait_registered("alice", timeout=10)
        assert f":{alice.port}" in bindings[0].contact, bindings
        # A call for alice sent to node B reaches her.
        caller = await within(SimplePeer.create("carol", free_udp_port()), 10)
        try:
            call = await caller.call(b.aor("alice"))
            incoming = await within(alice.wait_for_incoming(), 10)
            await incoming.accept()
            await within(call.wait_for_answer(), 10)
            await call.hangup()
        finally:
            await caller.close()
    finally:
        await alice.close()


def test_worker_plan_splits_ports_and_the_rtp_range() -> None:
    """Worker i gets SIP and HTTP port + i - 1 and an even-aligned Nth of the RTP range."""
    plans = plan_workers(3, "127.0.0.1", 5071, ("127.0.0.1", 8081), 20001, 29999)
    assert [(w.port, w.http, w.media_min, w.media_max) for w in plans] == [
        (5071, ("127.0.0.1", 8081), 20002, 23333),
        (5072, ("127.0.0.1", 8082), 23334, 26665),
        (5073, ("127.0.0.1", 8083), 26666, 29997),
    ]
    text = dispatcher_list(plans)
    assert "1 sip:127.0.0.1:5073 0 0 duid=worker3" in text.splitlines()
    with pytest.raises(ConfigError, match="too small for 3 workers"):
        plan_workers(3, "127.0.0.1", 5071, None, 20000, 20004)
    with pytest.raises(ConfigError, match="fixed SIP port"):
        plan_workers(2, "127.0.0.1", 0, None, 20000, 29999)


def _free_pair(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port + 1))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
