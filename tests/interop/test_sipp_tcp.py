"""sipd and sipp over TCP (RFC 3261 §18; issue 12): sipp calls sipd and sipd calls sipp.

sipp runs its built-in ``uac``/``uas`` scenarios with ``-t t1`` (one TCP
connection for every call) and, calling sipd, ``-t tn`` (a connection per
call, which sipd must take and free one by one); sipd's peer listens on
TCP at its SIP port and sends its own requests over TCP. sipp's exit status
says whether every call followed the scenario.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import Call, CallState
from tests.conftest import PeerFactory, SippFactory, eventually, within

pytestmark = pytest.mark.interop

CALLS = 20


@pytest.mark.parametrize("mode", ["t1", "tn"])
@pytest_twisted.ensureDeferred
async def test_sipp_calls_sipd_over_tcp(peers: PeerFactory, sipp: SippFactory, mode: str) -> None:
    bob = await peers("bob", t1=0.5, t2=4.0, transport="tcp")
    answered: list[Call] = []

    async def accept_all() -> None:
        for _ in range(CALLS):
            incoming = await bob.wait_for_incoming()
            invite = incoming.session.signalling.invite_request
            assert invite is not None and invite.top_via.transport == "TCP"
            answered.append(await incoming.accept())

    accepting = defer.ensureDeferred(accept_all())
    run, _ = sipp(
        "uac",
        remote=f"127.0.0.1:{bob.port}",
        calls=CALLS,
        rate=20,
        limit=10,
        timeout=20,
        # tn: sipp wants its socket limit below the open-file limit.
        extra=["-t", mode, *(["-max_socket", "100"] if mode == "tn" else [])],
    )
    code = await run.wait(25)
    assert code == 0, f"sipp reported failed calls\n{run.report()}"
    await within(accepting, 5)
    assert len(answered) == CALLS
    assert await eventually(lambda: not bob.active_calls())
    assert all(c.state is CallState.TERMINATED and c.failure is None for c in answered)
    stream = bob.coordinator.transports.stream
    assert stream is not None
    opened = stream.metrics.get(
        "sipd_sip_connections_opened_total", transport="tcp", direction="in"
    )
    # t1: one connection (maybe a second after a reconnect); tn: one per call.
    assert opened >= CALLS if mode == "tn" else 1 <= opened <= 2
    if mode == "tn":  # sipp closes each call's connection: sipd frees every one
        assert await eventually(lambda: stream.connection_count <= 1, 10), stream.connection_count


@pytest_twisted.ensureDeferred
async def test_sipd_calls_sipp_over_tcp(peers: PeerFactory, sipp: SippFactory) -> None:
    alice = await peers("alice", t1=0.5, t2=4.0, transport="tcp")
    run, port = sipp("uas", calls=CALLS, timeout=30, extra=["-t", "t1"])

    async def one(i: int) -> None:
        call = await alice.call(f"sip:service{i}@127.0.0.1:{port}")
        await within(call.wait_for_answer(), 10)
        assert call.is_active()
        await within(call.hangup(), 10)
        assert call.state is CallState.TERMINATED and call.failure is None

    # sipp listens once it has started: the first call may find no listener
    # yet (connection refused fails it at once), so wait for the port first.
    assert await eventually(lambda: _listening(port), 5), "sipp did not listen on TCP"
    for start in range(0, CALLS, 5):
        await within(
            defer.gatherResults(
                [defer.ensureDeferred(one(i)) for i in range(start, start + 5)], consumeErrors=True
            ),
            20,
        )
    code = await run.wait(15)
    assert code == 0, f"sipp reported failed calls\n{run.report()}"


def _listening(port: int) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port (read from /proc)."""
    wanted = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            return any(
                line.split()[1] == wanted and line.split()[3] == "0A"
                for line in table.readlines()[1:]
            )
    except OSError:
        return False
