"""REFER and NOTIFY sent by sipd carry one Contact (RFC 3261 §8.1.1.8), seen on the wire.

The far end is the scripted raw endpoint of ``test_call_control``: it shows
the literal requests sipd sends inside a dialog.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import CallRejected, CallState
from sipd.sip.message import Request, Response
from tests.conftest import PeerFactory, eventually, within
from tests.integration.test_call_control import (
    RawCallee,
    RawCaller,
    RtpTap,
    _response,
    _sdp,
)


def _one_contact(request: Request) -> None:
    lines = request.headers.get_all("Contact")
    assert len(lines) == 1 and len(request.contacts) == 1, (
        f"{request.method} carries Contact {lines}"
    )


@pytest_twisted.ensureDeferred
async def test_a_refer_we_send_carries_one_contact(peers: PeerFactory, raw_ua: Any) -> None:
    """alice transfers the raw peer: its REFER has one Contact; the peer's 603 fails transfer()."""
    tap = RtpTap()
    try:
        far = RawCallee(raw_ua(), tap)
        answer_invites = far.ua.on_message
        assert answer_invites is not None

        def on_message(message: Request | Response, source: tuple[str, int]) -> None:
            if isinstance(message, Request) and message.method == "REFER":
                reply = _response(message, 603, "Decline", tag=far.tag, port=far.ua.port, body="")
                far.ua.send(reply, source)
            else:
                answer_invites(message, source)

        far.ua.on_message = on_message
        alice = await peers("alice")
        call = await alice.call(far.uri)
        await within(call.wait_for_answer(), 5)
        with pytest.raises(CallRejected):
            await within(call.transfer("sip:carol@127.0.0.1:9"), 5)
        (refer,) = far.ua.messages(lambda m: isinstance(m, Request) and m.method == "REFER")
        assert isinstance(refer, Request)
        _one_contact(refer)
        assert call.state is CallState.ACTIVE
        await within(call.hangup(), 5)
    finally:
        await tap.port_obj.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_notifies_we_send_for_a_refer_carry_one_contact(
    peers: PeerFactory, raw_ua: Any
) -> None:
    """The raw caller REFERs bob to carol, who is busy: every NOTIFY bob sends has one Contact."""
    tap = RtpTap()
    try:
        bob, carol = await peers("bob"), await peers("carol")
        raw = RawCaller(raw_ua(), tap, bob.port)

        def answer_notify(message: Request | Response, source: tuple[str, int]) -> None:
            if isinstance(message, Request) and message.method == "NOTIFY":
                raw.ua.send(
                    _response(message, 200, "OK", tag=raw.tag, port=raw.ua.port, body=""), source
                )

        raw.ua.on_message = answer_notify
        incoming_d = bob.wait_for_incoming()
        invite_d = defer.ensureDeferred(raw.transaction("INVITE", _sdp(tap.port)))
        answered = await within((await within(incoming_d, 5)).accept(), 5)
        await within(invite_d, 5)

        carol_in = carol.wait_for_incoming()
        raw.cseq += 1
        accepted = raw._final("REFER", raw.cseq)
        refer = raw._request("REFER").replace(
            "Content-Length:",
            f"Refer-To: <sip:carol@127.0.0.1:{carol.port}>\r\n"
            f"Referred-By: <sip:raw@127.0.0.1:{raw.ua.port}>\r\nContent-Length:",
        )
        raw.ua.send(refer, raw.dest)
        assert (await accepted).status == 202
        await within((await within(carol_in, 5)).reject(486), 5)

        def notifies() -> list[Request]:
            return [
                m
                for m in raw.ua.messages(lambda m: isinstance(m, Request))
                if isinstance(m, Request) and m.method == "NOTIFY"
            ]

        assert await eventually(lambda: any(b"486" in n.body for n in notifies()), 5)
        for notify in notifies():
            _one_contact(notify)
        assert answered.state is CallState.ACTIVE  # a failed transfer keeps the call
        bye = await within(raw.transaction("BYE"), 5)
        assert bye.status == 200
        await within(answered.wait_for_end(), 5)
    finally:
        await tap.port_obj.stopListening()
