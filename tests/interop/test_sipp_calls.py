"""Calls between sipd and sipp, an independent SIP implementation.

sipp runs its built-in scenarios: ``uac`` places calls that a SimplePeer
answers, ``uas`` answers calls a SimplePeer places. sipp's exit status says
whether every call followed its scenario (0: all successful).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import Call, CallState
from tests.conftest import PeerFactory, SippFactory, eventually, within

pytestmark = pytest.mark.interop

CALLS = 20


@pytest_twisted.ensureDeferred
async def test_sipp_uac_calls_a_peer_that_accepts(peers: PeerFactory, sipp: SippFactory) -> None:
    """20 sipp calls (INVITE, ACK, BYE) to an accepting peer all succeed."""
    bob = await peers("bob", t1=0.5, t2=4.0)
    answered: list[Call] = []

    async def accept_all() -> None:
        for _ in range(CALLS):
            incoming = await bob.wait_for_incoming()
            assert "m=audio" in (incoming.sdp or "")
            assert incoming.caller.startswith("sip:sipp@127.0.0.1:")
            call = await incoming.accept()
            answered.append(call)

    accepting = defer.ensureDeferred(accept_all())
    run, _ = sipp("uac", remote=f"127.0.0.1:{bob.port}", calls=CALLS, rate=20, limit=10, timeout=20)
    code = await run.wait(25)
    assert code == 0, f"sipp reported failed calls\n{run.report()}"
    await within(accepting, 5)
    assert len(answered) == CALLS
    # Every call ended with sipp's BYE: nothing stays active on our side.
    assert await eventually(lambda: not bob.active_calls())
    assert all(c.state is CallState.TERMINATED and c.failure is None for c in answered)


@pytest_twisted.ensureDeferred
async def test_peer_calls_sipp_uas_and_hangs_up(peers: PeerFactory, sipp: SippFactory) -> None:
    """20 calls from a peer to sipp's uas are answered, hung up, and sipp exits 0."""
    alice = await peers("alice", t1=0.5, t2=4.0)
    run, port = sipp("uas", calls=CALLS, timeout=30)
    # sipp binds its socket as it starts; OPTIONS would not match the scenario,
    # so the first INVITE is simply retransmitted until sipp listens.

    async def one(i: int) -> None:
        call = await alice.call(f"sip:service{i}@127.0.0.1:{port}")
        await within(call.wait_for_answer(), 10)
        assert call.is_active()
        assert call.remote_party.endswith(f"@127.0.0.1:{port}")
        await within(call.hangup(), 10)
        assert call.state is CallState.TERMINATED and call.failure is None

    for start in range(0, CALLS, 5):
        await within(
            defer.gatherResults(
                [defer.ensureDeferred(one(i)) for i in range(start, start + 5)], consumeErrors=True
            ),
            20,
        )
    code = await run.wait(15)
    assert code == 0, f"sipp reported failed calls\n{run.report()}"


@pytest_twisted.ensureDeferred
async def test_sipp_uac_sees_busy_as_a_failed_call(peers: PeerFactory, sipp: SippFactory) -> None:
    """The oracle can fail: a peer that rejects sipp's calls makes sipp exit non-zero."""
    bob = await peers("bob")

    async def reject_all() -> None:
        for _ in range(2):
            incoming = await bob.wait_for_incoming()
            await incoming.reject_busy()

    rejecting = defer.ensureDeferred(reject_all())
    run, _ = sipp("uac", remote=f"127.0.0.1:{bob.port}", calls=2, rate=10, timeout=10)
    code = await run.wait(15)
    assert code != 0
    await within(rejecting, 5)
