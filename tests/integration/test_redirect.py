"""3xx redirects: reported by default, followed to the Contact when allowed."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface import implementer

from sipd import CallRejected, ISignalingHandler
from sipd.session.interceptor import Accept, Defer, InviteDetails
from tests.conftest import PeerFactory, within


@implementer(ISignalingHandler)
class RedirectTo:
    """Answers every INVITE with 302 pointing at ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.redirected = 0

    def on_incoming_invite(self, invite: InviteDetails) -> Any:
        self.redirected += 1
        invite.redirect(self.target)
        return Defer()

    def on_response(self, dialog_id: str, response: Any) -> Any:
        return Accept()


@pytest_twisted.ensureDeferred
async def test_a_redirect_is_followed_to_the_contact(peers: PeerFactory) -> None:
    """With follow_redirects, a 302 from bob makes alice call carol, who answers."""
    carol = await peers("carol")
    bob = await peers("bob", handler=RedirectTo(carol.uri))
    alice = await peers("alice", follow_redirects=2)

    async def answer() -> None:
        incoming = await carol.wait_for_incoming()
        assert incoming.caller == alice.uri
        await incoming.accept()

    answering = defer.ensureDeferred(answer())
    call = await alice.call(bob.uri)
    await within(call.wait_for_answer(), 5)
    await within(answering, 5)
    assert call.remote_party == carol.uri
    assert "Calling" in call.state_path and call.is_active()
    await call.hangup()


@pytest_twisted.ensureDeferred
async def test_redirects_are_reported_when_not_followed(peers: PeerFactory) -> None:
    """By default a 302 fails the call with CallRejected carrying 302."""
    carol = await peers("carol")
    bob = await peers("bob", handler=RedirectTo(carol.uri))
    alice = await peers("alice")
    call = await alice.call(bob.uri)
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 5)
    assert info.value.status == 302


@pytest_twisted.ensureDeferred
async def test_a_redirect_loop_stops_after_the_allowed_hops(peers: PeerFactory) -> None:
    """Two peers redirecting to each other: each Contact is tried once, then 302 fails."""
    handler_b = RedirectTo("")
    handler_c = RedirectTo("")
    bob = await peers("bob", handler=handler_b)
    carol = await peers("carol", handler=handler_c)
    handler_b.target, handler_c.target = carol.uri, bob.uri
    alice = await peers("alice", follow_redirects=5)
    call = await alice.call(bob.uri)
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 5)
    assert info.value.status == 302
    # bob, then carol, then bob's Contact again is not retried.
    assert handler_b.redirected == 1 and handler_c.redirected == 1
