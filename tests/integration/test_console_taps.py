"""The transports' message tap over TCP: both peers record the same messages, addressed right."""

from __future__ import annotations

import pytest_twisted

from sipd.capture.records import Direction, WireMessage
from tests.conftest import PeerFactory, within


@pytest_twisted.ensureDeferred
async def test_both_ends_of_a_tcp_call_record_every_message_with_their_addresses(
    peers: PeerFactory,
) -> None:
    """Caller and callee taps see the same SIP messages, mirrored, over TCP."""
    alice = await peers("alice", transport="tcp")
    bob = await peers("bob", transport="tcp")
    seen_a: list[WireMessage] = []
    seen_b: list[WireMessage] = []
    alice.coordinator.transports.set_message_tap(seen_a.append)
    bob.coordinator.transports.set_message_tap(seen_b.append)
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port};transport=tcp"), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)
    alice.coordinator.transports.set_message_tap(None)
    ours = [m for m in seen_a if m.call_id == call.sip_call_id]
    theirs = [m for m in seen_b if m.call_id == call.sip_call_id]
    assert len(ours) >= 5 and all(m.transport == "tcp" for m in ours + theirs)
    assert [m.data for m in ours] == [m.data for m in theirs]  # the bytes, as on the wire
    assert [m.direction for m in ours] == [
        Direction.OUT if m.direction is Direction.IN else Direction.IN for m in theirs
    ]
    assert ours[0].data.startswith(b"INVITE ") and ours[0].direction is Direction.OUT
    assert ours[0].remote[1] == bob.port and theirs[0].local == ("127.0.0.1", bob.port)
    assert ours[0].destination == ours[0].remote


@pytest_twisted.ensureDeferred
async def test_a_bridge_shows_its_two_calls_as_legs_of_one(peers: PeerFactory) -> None:
    """bob bridges carol's call to his own call to dave (as the queue handler does):
    the console links the two records, each naming the other as a leg."""
    from sipd.console.recorder import ConsoleRecorder
    from sipd.media.bridge import bridge

    bob, carol, dave = await peers("bob"), await peers("carol"), await peers("dave")
    inbound_call = await within(carol.call(bob.uri), 5)
    inbound = await within((await within(bob.wait_for_incoming(), 5)).accept(), 5)
    await within(inbound_call.wait_for_answer(), 5)
    outbound = await within(bob.call(dave.uri), 5)
    answered = await within((await within(dave.wait_for_incoming(), 5)).accept(), 5)
    await within(outbound.wait_for_answer(), 5)
    link = bridge(inbound, outbound)
    recorder = ConsoleRecorder()
    now = bob.coordinator.clock.seconds()
    for call in (inbound, outbound):
        recorder.observe(call.session, now)
    first = recorder.get(inbound.session.id)
    assert first is not None
    assert [leg.id for leg in recorder.legs(first)] == [inbound.session.id, outbound.session.id]
    link.stop()
    for call in (inbound_call, answered):
        await within(call.hangup(), 5)
    await within(inbound.wait_for_end(), 5)
    await within(outbound.wait_for_end(), 5)
