"""The ISignalingHandler decides about every new INVITE, over real UDP.

Each test gives the callee a handler of its own and places a real call from
another peer; the ``peers`` fixture checks afterwards that no session,
registry entry, pending INVITE or timer is left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface import implementer

from sipd import (
    Accept,
    CallCancelled,
    CallRejected,
    CallState,
    Custom,
    Defer,
    InviteDetails,
    ISignalingHandler,
    Reject,
)
from sipd.sip.message import Response
from tests.conftest import PeerFactory, eventually, get_reactor, settle, within


@implementer(ISignalingHandler)
class RecordingHandler:
    """Answers every INVITE with ``decide(invite)`` and remembers what it saw."""

    def __init__(self, decide: Callable[[InviteDetails], Any]) -> None:
        self.decide = decide
        self.invites: list[InviteDetails] = []
        self.responses: list[tuple[str, Response]] = []
        self.on_response_decision: Any = Accept()

    def on_incoming_invite(self, invite: InviteDetails) -> Any:
        self.invites.append(invite)
        return self.decide(invite)

    def on_response(self, dialog_id: str, response: Response) -> Any:
        self.responses.append((dialog_id, response))
        return self.on_response_decision


@pytest_twisted.ensureDeferred
async def test_reject_403_answers_the_caller_and_creates_no_session(peers: PeerFactory) -> None:
    """Reject(403) sends 403 and the callee never creates a session or an IncomingCall."""
    handler = RecordingHandler(lambda invite: Reject(403, "Forbidden"))
    alice, bob = await peers("alice"), await peers("bob", handler=handler)
    created: list[object] = []
    bob.coordinator.on_session_end.append(created.append)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 5)
    assert info.value.status == 403 and info.value.reason == "Forbidden"
    assert len(handler.invites) == 1
    assert bob.try_incoming() is None
    assert created == [] and len(bob.coordinator.store) == 0
    # A session would have sent 180 first; the handler's reject creates no dialog.
    assert "Ringing" not in call.state_path


@pytest_twisted.ensureDeferred
async def test_handler_sees_request_uri_to_from_and_custom_headers(peers: PeerFactory) -> None:
    """InviteDetails carries the Request-URI, dialled user, To, From and every header."""
    handler = RecordingHandler(lambda invite: Reject(404, "No Such Queue"))
    alice, bob = await peers("alice"), await peers("bob", handler=handler)
    call = await alice.call(
        f"sip:support@127.0.0.1:{bob.port}", headers={"X-Account": "42", "Subject": "help"}
    )
    with pytest.raises(CallRejected):
        await within(call.wait_for_answer(), 5)
    (invite,) = handler.invites
    assert invite.request_uri == f"sip:support@127.0.0.1:{bob.port}"
    assert invite.dialled == "support"
    assert invite.callee == f"sip:support@127.0.0.1:{bob.port}"
    assert invite.caller == f"sip:alice@127.0.0.1:{alice.port}"
    assert invite.headers.get("X-Account") == "42"
    assert invite.headers.get("subject") == "help"
    assert invite.call_id == call.sip_call_id
    assert invite.sdp is not None and b"m=audio" in invite.sdp
    assert invite.source[0] == "127.0.0.1" and invite.source[1] == alice.port


@pytest_twisted.ensureDeferred
async def test_accept_decision_offers_the_call_to_the_application(peers: PeerFactory) -> None:
    """Accept() creates the session and the peer's wait_for_incoming gets it."""
    handler = RecordingHandler(lambda invite: Accept())
    alice, bob = await peers("alice"), await peers("bob", handler=handler)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    await within(answered.hangup(), 5)
    await within(call.wait_for_end(), 5)
    assert len(handler.invites) == 1


@pytest_twisted.ensureDeferred
async def test_deferred_decision_arriving_later_is_honoured(peers: PeerFactory) -> None:
    """A handler returning a Deferred that fires Accept() later still gets the call offered."""
    decisions: list[defer.Deferred[Any]] = []

    def decide(invite: InviteDetails) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        decisions.append(d)
        return d

    handler = RecordingHandler(decide)
    alice, bob = await peers("alice"), await peers("bob", handler=handler)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    assert await eventually(lambda: bool(decisions))
    await settle(0.1)
    assert bob.try_incoming() is None
    decisions[0].callback(Accept())
    incoming = await within(bob.wait_for_incoming(), 5)
    await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    await within(call.hangup(), 5)


@pytest_twisted.ensureDeferred
async def test_defer_then_accept_later_answers_the_call(peers: PeerFactory) -> None:
    """Defer(): the handler keeps the INVITE and accepts it itself a little later."""
    handler = RecordingHandler(lambda invite: Defer())
    alice, bob = await peers("alice"), await peers("bob", handler=handler)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    assert await eventually(lambda: bool(handler.invites))
    await settle(0.2)
    assert call.state is CallState.CALLING  # 100 Trying only: no session, no 180 yet
    assert len(bob.coordinator.store) == 0
    session = await within(handler.invites[0].accept(), 5)
    await within(call.wait_for_answer(), 5)
    assert session.state == "Active"
    assert bob.try_incoming() is None  # answered by the handler, not offered
    await within(call.hangup(), 5)
    await within(session.wait_for_end(), 5)
    assert bob.coordinator.interceptor.pending == {}


@pytest_twisted.ensureDeferred
async def test_defer_then_reject_or_redirect_later(peers: PeerFactory) -> None:
    """A deferred INVITE can be refused (486) or redirected (302 with Contact) later."""
    handler = RecordingHandler(lambda invite: Defer())
    alice, bob = await peers("alice"), await peers("bob", handler=handler)
    busy = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    moved = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    assert await eventually(lambda: len(handler.invites) == 2)
    by_call_id = {i.call_id: i for i in handler.invites}
    by_call_id[busy.sip_call_id or ""].reject(486, "Busy Here")
    by_call_id[moved.sip_call_id or ""].redirect("sip:agent7@127.0.0.1:5999")
    with pytest.raises(CallRejected) as refused:
        await within(busy.wait_for_answer(), 5)
    assert refused.value.status == 486
    with pytest.raises(CallRejected) as redirected:
        await within(moved.wait_for_answer(), 5)
    assert redirected.value.status == 302


@pytest_twisted.ensureDeferred
async def test_deferred_invite_left_unanswered_gets_the_final_status_after_timeout(
    peers: PeerFactory,
) -> None:
    """Nobody answers a deferred INVITE: defer_status goes out after defer_timeout."""
    handler = RecordingHandler(lambda invite: Defer())
    alice = await peers("alice")
    bob = await peers("bob", handler=handler, defer_timeout=0.4, defer_status=480)
    reactor = get_reactor()
    started = reactor.seconds()
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 5)
    waited = reactor.seconds() - started
    assert info.value.status == 480
    assert 0.35 <= waited <= 2.0
    invite = handler.invites[0]
    assert invite.answered
    with pytest.raises(Exception, match="already been answered"):
        invite.reject(486)


@pytest_twisted.ensureDeferred
async def test_caller_cancel_while_deferred_fires_on_cancel(peers: PeerFactory) -> None:
    """A deferred INVITE (only 100 Trying so far) can be cancelled: 487, on_cancel fires."""
    handler = RecordingHandler(lambda invite: Defer())
    alice, bob = await peers("alice"), await peers("bob", handler=handler)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    assert await eventually(lambda: bool(handler.invites))
    invite = handler.invites[0]
    cancelled: list[object] = []
    invite.on_cancel.addCallback(cancelled.append)
    await settle(0.1)  # the 100 Trying has arrived: CANCEL is allowed (§9.1)
    await within(call.hangup(), 3)
    assert isinstance(call.failure, CallCancelled)
    assert call.failure.status == 487
    assert cancelled == [None] and invite.cancelled and not invite.answered
    with pytest.raises(Exception, match="cancelled"):
        invite.reject(486)


@pytest_twisted.ensureDeferred
async def test_custom_decision_runs_the_handlers_action(peers: PeerFactory) -> None:
    """Custom(fn) calls fn(invite); here fn answers by offering the call as ringing."""
    seen: list[InviteDetails] = []

    def action(invite: InviteDetails) -> None:
        seen.append(invite)
        invite.offer()

    handler = RecordingHandler(lambda invite: Custom(action))
    alice, bob = await peers("alice"), await peers("bob", handler=handler)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    assert seen and seen[0] is handler.invites[0]
    await within(incoming.reject(603, "Decline"), 5)
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 5)
    assert info.value.status == 603


@pytest_twisted.ensureDeferred
async def test_handler_that_raises_gets_the_caller_a_500(peers: PeerFactory) -> None:
    """An exception in the handler answers 500 instead of leaving the caller hanging."""

    def broken(invite: InviteDetails) -> Any:
        raise RuntimeError("handler bug")

    alice, bob = await peers("alice"), await peers("bob", handler=RecordingHandler(broken))
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 5)
    assert info.value.status == 500


@pytest_twisted.ensureDeferred
async def test_on_response_sees_responses_and_reject_hangs_up_an_answered_call(
    peers: PeerFactory,
) -> None:
    """The caller's handler sees the 180 and the 200; Reject on the 200 ends the call."""
    caller_handler = RecordingHandler(lambda invite: Accept())
    caller_handler.on_response_decision = Reject(603, "Not Wanted")
    alice = await peers("alice", handler=caller_handler)
    bob = await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_end(), 5)
    await within(answered.wait_for_end(), 5)
    statuses = [r.status for _, r in caller_handler.responses]
    assert 180 in statuses and 200 in statuses
    assert all(d == call.session.dialog_id for d, _ in caller_handler.responses)
    assert answered.state is CallState.TERMINATED
