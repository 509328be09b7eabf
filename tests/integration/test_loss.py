"""Transactions survive packet loss (RFC 3261 §17 retransmissions, §13.3.1.4).

An nftables table of the test's own drops 20% of the datagrams arriving at
each peer's SIP port, at random, on loopback; every call must still be set
up and torn down by both sides. T1 is 100 ms so retransmissions come fast.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import CallState
from tests.conftest import NftLoss, PeerFactory, settle, within

pytestmark = pytest.mark.needs_root

CALLS = 20
BATCH = 5
LOSS_PERCENT = 20


@pytest_twisted.ensureDeferred
async def test_calls_complete_setup_and_teardown_with_20_percent_loss(
    peers: PeerFactory, nft_loss: NftLoss
) -> None:
    """20 calls, each answered, held and hung up, complete on both sides despite 20% loss."""
    alice = await peers("alice", t1=0.1, t2=0.8)
    bob = await peers("bob", t1=0.1, t2=0.8)
    nft_loss.drop([alice.port, bob.port], LOSS_PERCENT)
    outcomes: list[str] = []

    async def callee_side() -> None:
        incoming = await bob.wait_for_incoming()
        # Calls arrive in any order: the caller says who ends this one.
        caller_hangs_up = incoming.headers.get("X-Hangup") == "caller"
        call = await incoming.accept()
        if caller_hangs_up:
            await call.wait_for_end()
        else:
            await settle(0.3)
            await call.hangup()
        assert call.state is CallState.TERMINATED, call.failure
        outcomes.append("callee ok")

    async def caller_side(caller_hangs_up: bool) -> None:
        who = "caller" if caller_hangs_up else "callee"
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}", headers={"X-Hangup": who})
        await call.wait_for_answer()
        if caller_hangs_up:
            await settle(0.3)
            await call.hangup()
        else:
            await call.wait_for_end()
        assert call.state is CallState.TERMINATED, call.failure
        outcomes.append("caller ok")

    for start in range(0, CALLS, BATCH):
        work = []
        for i in range(start, start + BATCH):
            caller_hangs_up = i % 2 == 0
            work.append(defer.ensureDeferred(callee_side()))
            work.append(defer.ensureDeferred(caller_side(caller_hangs_up)))
        await within(defer.gatherResults(work, consumeErrors=True), 30)

    assert outcomes.count("caller ok") == CALLS
    assert outcomes.count("callee ok") == CALLS
    dropped = nft_loss.dropped()
    assert dropped > 0, (
        f"no datagram was dropped; the loss rule did not work:\n{nft_loss.counters()}"
    )


@pytest_twisted.ensureDeferred
async def test_loss_rule_really_drops_datagrams(peers: PeerFactory, nft_loss: NftLoss) -> None:
    """The oracle: with 100% inbound loss at the callee, a call times out (Timer B)."""
    alice = await peers("alice", t1=0.02)
    bob = await peers("bob")
    nft_loss.drop([bob.port], 100)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    with pytest.raises(Exception, match="no response"):
        await within(call.wait_for_answer(), 5)
    assert nft_loss.dropped() >= 5
