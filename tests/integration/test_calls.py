"""Calls between real UDP endpoints on 127.0.0.1 (issue 3, "Calls").

Two SimplePeers test the API end to end; a scripted raw endpoint plays the
other side where a test needs RFC 3261 mechanics a well-behaved peer never
shows (a lost ACK, a 200 crossing a CANCEL, a request for an unknown
dialog). The ``peers`` fixture checks after each test that the registry,
the store and the reactor hold nothing of the finished calls.
"""

from __future__ import annotations

import secrets

import pytest
import pytest_twisted

from sipd import (
    CallCancelled,
    CallDirection,
    CallFailed,
    CallRejected,
    CallState,
    CallTimeout,
)
from sipd.sip.message import Request
from tests.conftest import (
    PeerFactory,
    RawUA,
    eventually,
    get_reactor,
    is_request,
    is_response,
    settle,
    within,
)

SDP = (
    "v=0\n"
    "o=- 1 1 IN IP4 127.0.0.1\n"
    "s=-\n"
    "c=IN IP4 127.0.0.1\n"
    "t=0 0\n"
    "m=audio 40000 RTP/AVP 0 8\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
)


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def raw_invite(ua: RawUA, target_port: int, *, call_id: str, branch: str, cseq: int = 1) -> str:
    """An INVITE from the raw endpoint to a peer, written out by hand."""
    body = _crlf(SDP)
    return (
        f"INVITE sip:bob@127.0.0.1:{target_port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{branch};rport\n"
        "Max-Forwards: 70\n"
        f'From: "Raw" <sip:raw@127.0.0.1:{ua.port}>;tag=rawtag1\n'
        f"To: <sip:bob@127.0.0.1:{target_port}>\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} INVITE\n"
        f"Contact: <sip:raw@127.0.0.1:{ua.port}>\n"
        "Content-Type: application/sdp\n"
        f"Content-Length: {len(body)}\n"
        "\n" + body
    )


def raw_in_dialog(
    ua: RawUA,
    method: str,
    target_port: int,
    *,
    call_id: str,
    to_tag: str,
    cseq: int,
    from_tag: str = "rawtag1",
    branch: str | None = None,
) -> str:
    """ACK or BYE from the raw endpoint inside a dialog it set up."""
    branch = branch or secrets.token_hex(6)
    return (
        f"{method} sip:bob@127.0.0.1:{target_port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{branch};rport\n"
        "Max-Forwards: 70\n"
        f'From: "Raw" <sip:raw@127.0.0.1:{ua.port}>;tag={from_tag}\n'
        f"To: <sip:bob@127.0.0.1:{target_port}>;tag={to_tag}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} {method}\n"
        "Content-Length: 0\n\n"
    )


def raw_response(request: Request, status: int, reason: str, *, to_tag: str, sdp: bool) -> str:
    """A response from the raw endpoint, headers copied from ``request`` by hand."""
    h = request.headers
    body = _crlf(SDP) if sdp else ""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in h.get_all("Via")]
    lines.append(f"From: {h.get('From')}")
    to = h.get("To") or ""
    lines.append(f"To: {to}" if ";tag=" in to or status == 100 else f"To: {to};tag={to_tag}")
    lines.append(f"Call-ID: {h.get('Call-ID')}")
    lines.append(f"CSeq: {h.get('CSeq')}")
    if status < 300 and request.method == "INVITE":
        lines.append("Contact: <sip:raw@127.0.0.1:{port}>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return "\n".join(lines) + "\n\n" + body


def reply(
    ua: RawUA,
    request: Request,
    status: int,
    reason: str,
    source: tuple[str, int],
    *,
    to_tag: str = "rawuas1",
    sdp: bool = False,
) -> None:
    text = raw_response(request, status, reason, to_tag=to_tag, sdp=sdp)
    ua.send(text.replace("{port}", str(ua.port)), source)


# -- peer to peer ---------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_call_rings_is_answered_and_caller_hangs_up(peers: PeerFactory) -> None:
    """The caller sees RINGING then ACTIVE; its hang-up ends the call on both sides."""
    alice, bob = await peers("alice"), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    assert call.direction is CallDirection.OUTGOING
    incoming = await within(bob.wait_for_incoming(), 5)
    assert await eventually(lambda: call.state is CallState.RINGING)
    assert incoming.is_pending
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    assert call.is_active() and answered.is_active()
    assert answered.direction is CallDirection.INCOMING
    assert [c.id for c in alice.active_calls()] == [call.id]
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)
    assert call.state is CallState.TERMINATED
    assert answered.state is CallState.TERMINATED
    assert call.state_path == ["Idle", "Calling", "Ringing", "Active", "Terminating", "Terminated"]
    assert answered.state_path == ["Idle", "Incoming", "Answering", "Active", "Terminated"]
    assert alice.active_calls() == [] and bob.active_calls() == []


@pytest_twisted.ensureDeferred
async def test_callee_hangs_up_and_caller_sees_the_end(peers: PeerFactory) -> None:
    """A BYE from the callee ends the caller's call without a failure."""
    alice, bob = await peers("alice"), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    answered = await within((await within(bob.wait_for_incoming(), 5)).accept(), 5)
    await within(call.wait_for_answer(), 5)
    await within(answered.hangup(), 5)
    await within(call.wait_for_end(), 5)
    assert call.state is CallState.TERMINATED and call.failure is None
    assert answered.state_path[-2:] == ["Terminating", "Terminated"]
    assert call.state_path[-2:] == ["Active", "Terminated"]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (302, "Moved Temporarily"),
        (404, "Not Found"),
        (486, "Busy Here"),
        (503, "Service Unavailable"),
        (603, "Decline"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_rejected_call_fails_wait_for_answer_with_the_status(
    peers: PeerFactory, code: int, reason: str
) -> None:
    """A 3xx/4xx/5xx/6xx answer fails wait_for_answer with CallRejected carrying it."""
    alice, bob = await peers("alice"), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    await within(incoming.reject(code, reason), 5)
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 5)
    assert info.value.status == code
    assert info.value.reason == reason
    assert str(code) in str(info.value)
    assert call.state is CallState.FAILED and call.failure is info.value


@pytest_twisted.ensureDeferred
async def test_caller_cancels_before_answer(peers: PeerFactory) -> None:
    """Hanging up while ringing sends CANCEL: both sides end the call as cancelled."""
    alice, bob = await peers("alice"), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    assert await eventually(lambda: call.state is CallState.RINGING)
    await within(call.hangup(), 5)
    with pytest.raises(CallCancelled):
        await within(call.wait_for_answer(), 1)
    assert call.state is CallState.FAILED
    assert "Cancelling" in call.state_path
    await within(incoming.session.wait_for_end(), 5)
    assert not incoming.is_pending
    assert isinstance(incoming.session.failure, CallCancelled)
    assert bob.try_incoming() is None


@pytest_twisted.ensureDeferred
async def test_unanswered_call_is_cancelled_after_the_ring_timeout(peers: PeerFactory) -> None:
    """Nobody accepts: after ring_timeout the caller cancels and fails with CallTimeout."""
    alice, bob = await peers("alice", ring_timeout=0.5), await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    with pytest.raises(CallTimeout) as info:
        await within(call.wait_for_answer(), 5)
    assert "ring_timeout" in str(info.value)
    await within(call.wait_for_end(), 5)
    await within(incoming.session.wait_for_end(), 5)
    assert isinstance(incoming.session.failure, CallCancelled)


@pytest_twisted.ensureDeferred
async def test_incoming_call_not_accepted_in_time_is_answered_480(peers: PeerFactory) -> None:
    """The callee's own ring timeout answers 480 and the caller sees that status."""
    alice, bob = await peers("alice"), await peers("bob", ring_timeout=0.3)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 5)
    assert info.value.status == 480
    assert isinstance(incoming.session.failure, CallTimeout)


@pytest_twisted.ensureDeferred
async def test_inbound_request_details_are_visible_on_incoming_call(peers: PeerFactory) -> None:
    """IncomingCall exposes the Request-URI, To, From and the caller's custom headers."""
    alice, bob = await peers("alice"), await peers("bob")
    target = f"sip:4711@127.0.0.1:{bob.port};user=phone"
    call = await alice.call(target, headers={"X-Queue": "sales", "X-Priority": "7"})
    incoming = await within(bob.wait_for_incoming(), 5)
    assert incoming.request_uri.startswith(f"sip:4711@127.0.0.1:{bob.port}")
    assert incoming.dialled == "4711"
    assert incoming.callee == f"sip:4711@127.0.0.1:{bob.port}"
    assert incoming.caller == f"sip:alice@127.0.0.1:{alice.port}"
    assert incoming.headers.get("X-Queue") == "sales"
    assert incoming.headers.get("x-priority") == "7"
    assert incoming.sdp is not None and "m=audio" in incoming.sdp
    await within(incoming.reject_busy(), 5)
    with pytest.raises(CallRejected):
        await within(call.wait_for_answer(), 5)


@pytest_twisted.ensureDeferred
async def test_many_sequential_and_parallel_calls_leave_nothing_behind(
    peers: PeerFactory,
) -> None:
    """Ten calls at once, each answered and hung up, end with empty stores on both peers."""
    alice, bob = await peers("alice"), await peers("bob")

    async def one() -> None:
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
        await within(call.wait_for_answer(), 5)
        await within(call.hangup(), 5)

    async def answer_all() -> None:
        for _ in range(10):
            incoming = await within(bob.wait_for_incoming(), 5)
            await within(incoming.accept(), 5)

    from twisted.internet import defer

    answering = defer.ensureDeferred(answer_all())
    await within(defer.gatherResults([defer.ensureDeferred(one()) for _ in range(10)]), 10)
    await within(answering, 5)
    for peer, direction in ((alice, "outgoing"), (bob, "incoming")):
        completed = peer.coordinator.metrics.get(
            "sipd_calls_total", outcome="completed", direction=direction
        )
        assert completed == 10


# -- the RFC mechanics, with a scripted peer -----------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_callee_answers_cancel_with_200_and_the_invite_with_487(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """A CANCEL from the caller gets 200, the INVITE 487, and the call ends cancelled."""
    bob = await peers("bob")
    ua = raw_ua()
    call_id = f"{secrets.token_hex(8)}@raw"
    branch = secrets.token_hex(6)
    ringing = ua.expect(is_response(180, "INVITE"))
    ua.send(raw_invite(ua, bob.port, call_id=call_id, branch=branch), ("127.0.0.1", bob.port))
    incoming = await within(bob.wait_for_incoming(), 5)
    await ringing
    ok = ua.expect(is_response(200, "CANCEL"))
    terminated = ua.expect(is_response(487, "INVITE"))
    ua.send(
        f"CANCEL sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{branch};rport\n"
        "Max-Forwards: 70\n"
        f'From: "Raw" <sip:raw@127.0.0.1:{ua.port}>;tag=rawtag1\n'
        f"To: <sip:bob@127.0.0.1:{bob.port}>\n"
        f"Call-ID: {call_id}\n"
        "CSeq: 1 CANCEL\n"
        "Content-Length: 0\n\n",
        ("127.0.0.1", bob.port),
    )
    await ok
    final = await terminated
    # The ACK for a non-2xx final belongs to the INVITE transaction (same branch).
    ack = raw_in_dialog(
        ua, "ACK", bob.port, call_id=call_id, to_tag=final.to.tag or "", cseq=1, branch=branch
    )
    ua.send(ack, ("127.0.0.1", bob.port))
    await within(incoming.session.wait_for_end(), 5)
    assert isinstance(incoming.session.failure, CallCancelled)
    assert not incoming.is_pending


@pytest_twisted.ensureDeferred
async def test_caller_cancel_is_answered_and_call_ends_cancelled(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """The caller sends CANCEL after the 180, ACKs the 487 and fails with CallCancelled."""
    alice = await peers("alice")
    ua = raw_ua()
    invited = ua.expect(is_request("INVITE"))
    call = await alice.call(f"sip:bob@127.0.0.1:{ua.port}")
    invite, source = await invited, ua.log[-1][1]
    reply(ua, invite, 180, "Ringing", source)
    assert await eventually(lambda: call.state is CallState.RINGING)
    cancelled = ua.expect(is_request("CANCEL"))
    ended = call.hangup()
    cancel = await cancelled
    assert cancel.top_via.branch == invite.top_via.branch
    assert cancel.cseq.number == invite.cseq.number
    acked = ua.expect(is_request("ACK"))
    reply(ua, cancel, 200, "OK", source)
    reply(ua, invite, 487, "Request Terminated", source)
    ack = await acked
    assert ack.top_via.branch == invite.top_via.branch  # ACK for a non-2xx (§17.1.1.3)
    await within(ended, 5)
    assert isinstance(call.failure, CallCancelled)
    assert call.failure.status == 487


@pytest_twisted.ensureDeferred
async def test_200_crossing_cancel_is_acked_then_byed(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """When a 200 crosses our CANCEL, the caller sends ACK and then BYE (§9.1, §15)."""
    alice = await peers("alice")
    ua = raw_ua()
    invited = ua.expect(is_request("INVITE"))
    call = await alice.call(f"sip:bob@127.0.0.1:{ua.port}")
    invite, source = await invited, ua.log[-1][1]
    reply(ua, invite, 180, "Ringing", source)
    assert await eventually(lambda: call.state is CallState.RINGING)
    cancelled = ua.expect(is_request("CANCEL"))
    ended = call.hangup()
    cancel = await cancelled
    acked = ua.expect(is_request("ACK"))
    byed = ua.expect(is_request("BYE"))
    # The callee answered before the CANCEL arrived: 200 to the CANCEL, 200 to the INVITE.
    reply(ua, cancel, 200, "OK", source)
    reply(ua, invite, 200, "OK", source, sdp=True)
    ack = await acked
    bye = await byed
    assert ua.log.index(next(e for e in ua.log if e[0] is ack)) < ua.log.index(
        next(e for e in ua.log if e[0] is bye)
    )
    assert ack.to.tag == "rawuas1" and bye.to.tag == "rawuas1"
    assert ack.cseq.number == invite.cseq.number and ack.cseq.method == "ACK"
    assert bye.cseq.number > invite.cseq.number
    reply(ua, bye, 200, "OK", source)
    await within(ended, 5)
    assert isinstance(call.failure, CallCancelled)
    assert call.state is CallState.FAILED


@pytest_twisted.ensureDeferred
async def test_uas_retransmits_200_until_the_ack_arrives(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """The callee resends its 200 on T1, 2·T1, ... and stops once the ACK comes."""
    bob = await peers("bob", t1=0.05)
    ua = raw_ua()
    call_id = f"{secrets.token_hex(8)}@raw"
    ua.send(
        raw_invite(ua, bob.port, call_id=call_id, branch=secrets.token_hex(6)),
        ("127.0.0.1", bob.port),
    )
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = incoming.accept()
    first = await ua.expect(is_response(200, "INVITE"))
    # 50 + 100 + 200 ms: at least three retransmissions within 0.45 s.
    await settle(0.45)
    oks = ua.messages(is_response(200, "INVITE"))
    assert len(oks) >= 4, f"expected the 200 to be retransmitted, saw {len(oks)}"
    assert len(oks) <= 6
    assert all(m.to.tag == first.to.tag for m in oks)
    assert not answered.called
    ua.send(
        raw_in_dialog(ua, "ACK", bob.port, call_id=call_id, to_tag=first.to.tag or "", cseq=1),
        ("127.0.0.1", bob.port),
    )
    call = await within(answered, 5)
    assert call.is_active()
    count = len(ua.messages(is_response(200, "INVITE")))
    await settle(0.5)
    assert len(ua.messages(is_response(200, "INVITE"))) == count, "200 resent after the ACK"
    bye_ok = ua.expect(is_response(200, "BYE"))
    ua.send(
        raw_in_dialog(ua, "BYE", bob.port, call_id=call_id, to_tag=first.to.tag or "", cseq=2),
        ("127.0.0.1", bob.port),
    )
    await bye_ok
    await within(call.wait_for_end(), 5)
    assert call.state is CallState.TERMINATED


@pytest_twisted.ensureDeferred
async def test_missing_ack_ends_the_call_with_bye_after_64_t1(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """With no ACK, the callee gives up after 64·T1 (3.2 s at T1=50 ms) and sends BYE."""
    bob = await peers("bob", t1=0.05)
    ua = raw_ua()
    call_id = f"{secrets.token_hex(8)}@raw"
    ua.send(
        raw_invite(ua, bob.port, call_id=call_id, branch=secrets.token_hex(6)),
        ("127.0.0.1", bob.port),
    )
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = incoming.accept()
    first = await ua.expect(is_response(200, "INVITE"))
    t0 = get_reactor().seconds()
    byed = ua.expect(is_request("BYE"), timeout=6)
    ua.on_message = lambda m, src: (
        reply(ua, m, 200, "OK", src) if isinstance(m, Request) and m.method == "BYE" else None
    )
    bye = await byed
    elapsed = get_reactor().seconds() - t0
    assert 3.0 <= elapsed <= 4.5, f"BYE after {elapsed:.2f}s, expected about 3.2s"
    assert bye.to.tag == "rawtag1" and bye.from_.tag == first.to.tag
    await within(incoming.session.wait_for_end(), 5)
    failure = incoming.session.failure
    assert isinstance(failure, CallFailed) and "acknowledged" in str(failure)
    with pytest.raises(CallFailed):
        await answered


@pytest_twisted.ensureDeferred
async def test_caller_resends_ack_for_a_retransmitted_200(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """Each retransmission of the 200 (our ACK was lost) gets the same ACK again."""
    alice = await peers("alice")
    ua = raw_ua()
    invited = ua.expect(is_request("INVITE"))
    call = await alice.call(f"sip:bob@127.0.0.1:{ua.port}")
    invite, source = await invited, ua.log[-1][1]
    first_ack = ua.expect(is_request("ACK"))
    reply(ua, invite, 200, "OK", source, sdp=True)
    await within(call.wait_for_answer(), 5)
    ack1 = await first_ack
    second_ack = ua.expect(is_request("ACK"))
    reply(ua, invite, 200, "OK", source, sdp=True)
    ack2 = await second_ack
    assert ack1.to_bytes() == ack2.to_bytes()
    byed = ua.expect(is_request("BYE"))
    ended = call.hangup()
    bye = await byed
    reply(ua, bye, 200, "OK", source)
    await within(ended, 5)
    assert call.state is CallState.TERMINATED


@pytest_twisted.ensureDeferred
async def test_silent_callee_fails_the_call_with_timer_b(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """No response at all: after 64·T1 the call fails with CallTimeout (408)."""
    alice = await peers("alice", t1=0.03)
    ua = raw_ua()
    call = await alice.call(f"sip:bob@127.0.0.1:{ua.port}")
    with pytest.raises(CallTimeout) as info:
        await within(call.wait_for_answer(), 5)
    assert info.value.status == 408
    invites = ua.messages(is_request("INVITE"))
    assert len(invites) >= 5, "the INVITE is retransmitted on timer A"
    assert len({m.top_via.branch for m in invites}) == 1


@pytest.mark.parametrize("method", ["BYE", "INVITE"])
@pytest_twisted.ensureDeferred
async def test_in_dialog_request_matching_no_dialog_gets_481(
    peers: PeerFactory, raw_ua: type[RawUA], method: str
) -> None:
    """A BYE or re-INVITE with tags of no known dialog is answered 481."""
    bob = await peers("bob")
    ua = raw_ua()
    answered = ua.expect(is_response(481, method))
    ua.send(
        raw_in_dialog(ua, method, bob.port, call_id="nosuchcall@raw", to_tag="nosuch", cseq=5),
        ("127.0.0.1", bob.port),
    )
    response = await answered
    assert response.call_id == "nosuchcall@raw"


@pytest_twisted.ensureDeferred
async def test_cancel_matching_no_transaction_gets_481(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """A CANCEL for an INVITE the peer never saw is answered 481."""
    bob = await peers("bob")
    ua = raw_ua()
    answered = ua.expect(is_response(481, "CANCEL"))
    ua.send(
        f"CANCEL sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKnone1;rport\n"
        "Max-Forwards: 70\n"
        f"From: <sip:raw@127.0.0.1:{ua.port}>;tag=x1\n"
        f"To: <sip:bob@127.0.0.1:{bob.port}>\n"
        "Call-ID: nocancel@raw\n"
        "CSeq: 1 CANCEL\n"
        "Content-Length: 0\n\n",
        ("127.0.0.1", bob.port),
    )
    await answered


@pytest_twisted.ensureDeferred
async def test_bye_before_the_ack_ends_an_answered_call(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """A BYE that overtakes a lost ACK ends the call as answered, not as failed (§15.1.2)."""
    bob = await peers("bob", t1=0.05)
    ua = raw_ua()
    call_id = f"{secrets.token_hex(8)}@raw"
    ua.send(
        raw_invite(ua, bob.port, call_id=call_id, branch=secrets.token_hex(6)),
        ("127.0.0.1", bob.port),
    )
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = incoming.accept()
    ok = await ua.expect(is_response(200, "INVITE"))
    bye_ok = ua.expect(is_response(200, "BYE"))
    ua.send(
        raw_in_dialog(ua, "BYE", bob.port, call_id=call_id, to_tag=ok.to.tag or "", cseq=2),
        ("127.0.0.1", bob.port),
    )
    await bye_ok
    call = await within(answered, 5)
    await within(call.wait_for_end(), 5)
    assert call.state is CallState.TERMINATED and call.failure is None
    count = len(ua.messages(is_response(200, "INVITE")))
    await settle(0.3)
    assert len(ua.messages(is_response(200, "INVITE"))) == count, "200 resent after the BYE"
