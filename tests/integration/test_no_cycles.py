"""A finished call is freed by reference counting, not left to the cyclic collector.

A session, its machine, its ports and its media point at each other while the
call runs. If those cycles survived the end of the call, every call would
become cyclic garbage, and on a loaded UA the collector's full passes (each
walking every live object) stall the event loop long enough for overload
control to refuse new calls (issue 11's soak run: 15 % of the time in the
collector, pauses up to a second). So once a call ends the coordinator
breaks the cycles (``UnifiedSession.release``).

Each test runs with the collector disabled: whatever is still alive after
the application drops its references is held by a cycle, and the test fails.
Real calls over 127.0.0.1, with RTP.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted

from sipd import CallRejected, CallState
from tests.conftest import PeerFactory, eventually, settle, within


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def refs(call: Any) -> list[weakref.ref[Any]]:
    """Weak references to the objects of one call: its API object, session, media, stream.

    (Slotted objects such as the machine or the leg take no weak reference;
    the session holds them, so they go when it goes.)
    """
    session = call.session
    media = session.media
    objects = [call, session, media, media and media.stream]
    return [weakref.ref(o) for o in objects if o is not None]


def alive(references: list[weakref.ref[Any]]) -> list[str]:
    return [type(r()).__name__ for r in references if r() is not None]


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("no_collector")
async def test_answered_call_with_media_is_freed_without_the_collector(peers: PeerFactory) -> None:
    alice, bob = await peers("alice"), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    answered = await within((await within(bob.wait_for_incoming(), 5)).accept(), 5)
    await within(call.wait_for_answer(), 5)
    for _ in range(100):  # some RTP has arrived (at most 5 s)
        if answered.session.stats()["packets_received"]:
            break
        await settle(0.05)
    assert answered.session.stats()["packets_received"], "no RTP arrived"
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)
    assert call.state is CallState.TERMINATED
    held = refs(call) + refs(answered)
    del call, answered
    assert await eventually(lambda: not alive(held), 3), f"still alive: {alive(held)}"


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("no_collector")
async def test_rejected_call_is_freed_without_the_collector(peers: PeerFactory) -> None:
    alice, bob = await peers("alice"), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    await within(incoming.reject(486), 5)
    with pytest.raises(CallRejected):
        await within(call.wait_for_answer(), 5)
    await within(call.wait_for_end(), 5)
    held = refs(call) + refs(incoming)
    del call, incoming
    assert await eventually(lambda: not alive(held), 3), f"still alive: {alive(held)}"


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("no_collector")
async def test_cancelled_call_is_freed_without_the_collector(peers: PeerFactory) -> None:
    alice, bob = await peers("alice"), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    await within(call.hangup(), 5)
    await within(incoming.session.wait_for_end(), 5)
    held = refs(call) + refs(incoming)
    del call, incoming
    assert await eventually(lambda: not alive(held), 3), f"still alive: {alive(held)}"
