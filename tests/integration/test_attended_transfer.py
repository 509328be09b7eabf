"""Attended transfer with Replaces over real UDP (RFC 3891, RFC 5589 §7).

bob talks to alice (call A) and to carol (call B), then hands alice over to
carol with ``call_a.transfer(call_b)``: alice gets a REFER whose Refer-To
carries ``Replaces`` naming call B from carol's side, she calls carol with
that header, carol's UA answers at once in place of call B, and both of
bob's calls end. A raw endpoint sends an INVITE whose Replaces names no
dialog of ours, which gets 481. The ``peers`` fixture checks afterwards
that no session, dialog, media port or timer was left behind.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import unquote

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import CallDirection, CallState, CallStateError
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav
from sipd.sip.message import Request, Response
from tests.conftest import PeerFactory, RawUA, eventually, settle, within

SDP = (
    "v=0\r\n"
    "o=- 1 1 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)


async def answered_call(caller: Any, callee: Any) -> tuple[Any, Any]:
    """``caller`` calls ``callee``, who answers: (caller's call, callee's call)."""
    call = await caller.call(callee.uri)
    incoming = await within(callee.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    return call, answered


async def tone_exchange(a: Any, b: Any, fa: float, fb: float, tmp: Any) -> tuple[float, float]:
    """a sends fa, b sends fb for 1 s; returns (what a heard, what b heard) as frequencies."""
    wa, wb = tmp / "a.wav", tmp / "b.wav"
    ra, rb = a.record_wav(wa), b.record_wav(wb)
    ga, gb = ToneGenerator(fa), ToneGenerator(fb)
    for _ in range(50):
        await defer.DeferredList([a.send_audio(ga.next_frame()), b.send_audio(gb.next_frame())])
    await settle(0.1)
    a.stop_recording(wa)
    b.stop_recording(wb)
    await within(defer.DeferredList([ra, rb]), 5)
    return dominant_frequency(read_wav(wa)), dominant_frequency(read_wav(wb))


def refer_received(call: Any) -> Request:
    """The REFER the peer sent on ``call``, as it arrived."""
    requests = [t.event.data["request"] for t in call.history if t.event.name == "ReferReceived"]
    assert len(requests) == 1
    request = requests[0]
    assert isinstance(request, Request) and request.method == "REFER"
    return request


@pytest_twisted.ensureDeferred
async def test_attended_transfer_replaces_bobs_call_with_carol_and_connects_alice_to_her(
    peers: PeerFactory, tmp_path: Any
) -> None:
    """bob transfers alice to his call with carol: alice and carol talk, both of bob's calls end."""
    alice, bob, carol = await peers("alice"), await peers("bob"), await peers("carol")
    alice_a, bob_a = await answered_call(alice, bob)
    bob_b, carol_b = await answered_call(bob, carol)
    alice_new_d = alice_a.wait_for_transfer()
    carol_new_d = carol_b.wait_for_transfer()

    await within(bob_a.transfer(bob_b), 5)
    alice_new = await within(alice_new_d, 5)
    carol_new = await within(carol_new_d, 5)
    for call in (bob_a, bob_b, alice_a, carol_b):
        await within(call.wait_for_end(), 5)
        assert call.state is CallState.TERMINATED

    # The REFER names call B from carol's side: her tag is the to-tag, bob's the from-tag.
    call_id = bob_b.sip_call_id
    bob_tag, carol_tag = bob_b.session.leg.local_tag, bob_b.session.leg.remote_tag
    assert carol_b.session.leg.local_tag == carol_tag
    expected = f"{call_id};to-tag={carol_tag};from-tag={bob_tag}"
    refer_to = refer_received(alice_a).headers.get("Refer-To") or ""
    match = re.fullmatch(r"<(sip:[^?>]+)\?Replaces=([^>&]+)>", refer_to)
    assert match is not None, refer_to
    assert match.group(1) == f"sip:carol@127.0.0.1:{carol.port}"
    assert ";" not in match.group(2) and "=" not in match.group(2)  # escaped (RFC 3891 §3)
    assert unquote(match.group(2)) == expected

    # carol's UA got an INVITE with Replaces from alice and answered it unasked.
    invite = carol_new.session.leg.invite
    assert invite.headers.get("Replaces") == expected
    assert invite.from_.uri.user == "alice"
    assert carol_new.direction is CallDirection.INCOMING
    assert "Incoming" in carol_new.state_path and "Answering" in carol_new.state_path
    assert carol.try_incoming() is None
    replaced = [t for t in carol_b.history if t.event.name == "Replaced"]
    assert [t.to_state for t in replaced] == ["Terminating"]
    assert alice_new.remote_party.startswith("sip:carol@")
    assert "Transferring" in bob_a.state_path
    assert [t.event.name for t in bob_b.history][-1] == "RemoteBye"

    assert [c.id for c in alice.active_calls()] == [alice_new.id]
    assert [c.id for c in carol.active_calls()] == [carol_new.id]
    assert bob.active_calls() == []
    heard_by_alice, heard_by_carol = await tone_exchange(alice_new, carol_new, 500, 1200, tmp_path)
    assert heard_by_alice == pytest.approx(1200, abs=10)
    assert heard_by_carol == pytest.approx(500, abs=10)
    await within(alice_new.hangup(), 5)
    await within(carol_new.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_transfer_to_a_call_that_is_not_answered_fails_and_sends_nothing(
    peers: PeerFactory,
) -> None:
    """A ringing call cannot be a transfer target: CallStateError, and call A stays as it was."""
    alice, bob, carol = await peers("alice"), await peers("bob"), await peers("carol")
    alice_a, bob_a = await answered_call(alice, bob)
    ringing = await bob.call(carol.uri)
    incoming = await within(carol.wait_for_incoming(), 5)
    with pytest.raises(CallStateError):
        await within(bob_a.transfer(ringing), 5)
    with pytest.raises(CallStateError):
        await within(bob_a.transfer(bob_a), 5)
    assert bob_a.state is CallState.ACTIVE and alice_a.state is CallState.ACTIVE
    assert not [t for t in alice_a.history if t.event.name == "ReferReceived"]
    await within(incoming.reject(), 5)
    await within(bob_a.hangup(), 5)
    await within(alice_a.wait_for_end(), 5)


def replacing_invite(ua: RawUA, port: int, call_id: str, branch: str, replaces: str) -> str:
    """An INVITE from the raw endpoint with a Replaces header, written out by hand."""
    return (
        f"INVITE sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:raw@127.0.0.1:{ua.port}>;tag=rawtag\r\n"
        f"To: <sip:bob@127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:raw@127.0.0.1:{ua.port}>\r\n"
        f"Replaces: {replaces}\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
    )


async def send_replacing_invite(ua: RawUA, port: int, replaces: str) -> Response:
    """Send the INVITE, wait for its final response and ACK it (same branch, §17.1.1.3)."""
    call_id, branch = f"{secrets.token_hex(8)}@raw", secrets.token_hex(6)
    final = ua.expect(
        lambda m: isinstance(m, Response) and m.call_id == call_id and m.status >= 200
    )
    ua.send(replacing_invite(ua, port, call_id, branch, replaces), ("127.0.0.1", port))
    response = await final
    assert isinstance(response, Response)
    ua.send(
        f"ACK sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:raw@127.0.0.1:{ua.port}>;tag=rawtag\r\n"
        f"To: <sip:bob@127.0.0.1:{port}>;tag={response.to.tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n\r\n",
        ("127.0.0.1", port),
    )
    return response


@pytest_twisted.ensureDeferred
async def test_an_invite_whose_replaces_names_no_dialog_gets_481(
    peers: PeerFactory, raw_ua: Any
) -> None:
    """Replaces naming an unknown Call-ID, or a real call with its tags swapped, gets 481.

    The real call stays up and nothing is offered to the application.
    """
    alice, bob = await peers("alice"), await peers("bob")
    alice_a, bob_a = await answered_call(alice, bob)
    ua = raw_ua()
    unknown = await send_replacing_invite(ua, bob.port, "nosuchcall@x;to-tag=a;from-tag=b")
    assert unknown.status == 481
    leg = bob_a.session.leg
    swapped = f"{bob_a.sip_call_id};to-tag={leg.remote_tag};from-tag={leg.local_tag}"
    wrong_side = await send_replacing_invite(ua, bob.port, swapped)
    assert wrong_side.status == 481
    await settle(0.1)
    assert bob.try_incoming() is None
    assert bob_a.state is CallState.ACTIVE and alice_a.state is CallState.ACTIVE
    assert [c.id for c in bob.active_calls()] == [bob_a.id]
    assert await eventually(lambda: len(bob.coordinator.store) == 1)
    await within(alice_a.hangup(), 5)
    await within(bob_a.wait_for_end(), 5)
