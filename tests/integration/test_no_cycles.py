"""A finished call is freed by reference counting, not left to the cyclic collector.

A session, its machine, its ports and its media point at each other while the
call runs. If those cycles survived the end of the call, every call would
become cyclic garbage, and on a loaded UA the collector's full passes (each
walking every live object) stall the event loop long enough for overload
control to refuse new calls (issue 11's soak run: 15 % of the time in the
collector, pauses up to a second). So once a call ends the coordinator
breaks the cycles (``UnifiedSession.release``).

Each test runs with the collector disabled: whatever is still alive after
the application drops its references is held by a cycle, and the test fails;
so does any sipd object the collector then finds unreachable (cyclic
garbage). Real calls over 127.0.0.1, with RTP.
"""

from __future__ import annotations

import gc
import secrets
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import pytest_twisted

from sipd import CallRejected, CallState
from tests.conftest import PeerFactory, RawUA, eventually, is_response, settle, within


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


def _call_id(o: object) -> object:
    call_id = getattr(o, "call_id", None)
    if call_id is None:  # a Dialog: its id holds the Call-ID
        call_id = getattr(getattr(o, "id", None), "call_id", None)
    return call_id


def sipd_garbage(call_ids: set[str]) -> list[str]:
    """The types of this test's call objects only a cycle kept alive (one collection).

    Only objects that name one of ``call_ids`` (sessions, legs, dialogs,
    requests, transactions' requests...) count: objects of earlier tests may
    become garbage while this one runs (pytest releases them late).
    """
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sorted(
            {
                type(o).__qualname__
                for o in gc.garbage
                if type(o).__module__.startswith("sipd.") and _call_id(o) in call_ids
            }
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


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
    call_ids = {call.session.call_id, answered.session.call_id}
    del call, answered
    assert await eventually(lambda: not alive(held), 3), f"still alive: {alive(held)}"
    assert sipd_garbage(call_ids - {None}) == []


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
    call_ids = {call.session.call_id, incoming.session.call_id}
    del call, incoming
    assert await eventually(lambda: not alive(held), 3), f"still alive: {alive(held)}"
    assert sipd_garbage(call_ids - {None}) == []


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("no_collector")
async def test_cancelled_call_is_freed_without_the_collector(peers: PeerFactory) -> None:
    alice, bob = await peers("alice"), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    await within(call.hangup(), 5)
    await within(incoming.session.wait_for_end(), 5)
    held = refs(call) + refs(incoming)
    call_ids = {call.session.call_id, incoming.session.call_id}
    del call, incoming
    assert await eventually(lambda: not alive(held), 3), f"still alive: {alive(held)}"
    assert sipd_garbage(call_ids - {None}) == []


def is_active(call: Any) -> bool:
    return bool(call.state is CallState.ACTIVE)


def no_transactions(peer: Any) -> bool:
    layer = peer.coordinator.dialogs.layer
    return layer is not None and len(layer) == 0


def _invite(ua: RawUA, port: int, call_id: str) -> str:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {ua.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"INVITE sip:bob@127.0.0.1:{port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{call_id};rport\n"
        "Max-Forwards: 70\n"
        f"From: <sip:raw@127.0.0.1:{ua.port}>;tag=raw1\n"
        f"To: <sip:bob@127.0.0.1:{port}>\n"
        f"Call-ID: {call_id}\n"
        "CSeq: 1 INVITE\n"
        f"Contact: <sip:raw@127.0.0.1:{ua.port}>\n"
        "Content-Type: application/sdp\n"
        f"Content-Length: {len(sdp)}\n\n" + sdp
    )


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("no_collector")
async def test_call_whose_bye_goes_unanswered_is_freed_without_the_collector(
    peers: PeerFactory, raw_ua: Callable[[], RawUA]
) -> None:
    """The caller vanishes after its ACK: our BYE times out (Timer F), then all is freed."""
    bob = await peers("bob")
    ua = raw_ua()
    call_id = secrets.token_hex(8)
    ua.send(_invite(ua, bob.port, call_id), ("127.0.0.1", bob.port))
    incoming = await within(bob.wait_for_incoming(), 5)
    waiting = ua.expect(is_response(200, "INVITE"))
    accepting = within(incoming.accept(), 5)  # fires once our 200 is ACKed
    ok = await waiting
    ua.send(
        f"ACK sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKack{call_id};rport\n"
        "Max-Forwards: 70\n"
        f"From: {ok.headers.get('From')}\nTo: {ok.headers.get('To')}\n"
        f"Call-ID: {call_id}\nCSeq: 1 ACK\nContent-Length: 0\n\n",
        ("127.0.0.1", bob.port),
    )
    answered = await accepting
    assert await eventually(partial(is_active, answered), 5)
    await ua.close()  # gone without a BYE: nothing will answer ours
    await within(answered.hangup(), 10)  # completes when Timer F fires (64*T1 = 3.2 s)
    held = refs(answered) + refs(incoming)
    call_ids = {answered.session.call_id}
    del answered, incoming
    assert await eventually(lambda: not alive(held), 3), f"still alive: {alive(held)}"
    # Bob's transactions linger (Timer K); wait until none is left, then look.
    assert await eventually(partial(no_transactions, bob), 10)
    assert sipd_garbage(call_ids - {None}) == []
