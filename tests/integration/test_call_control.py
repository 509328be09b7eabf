"""Call control over real UDP (issue 7): hold/resume, glare, re-offers, blind transfer.

Two kinds of far end:

* another :class:`~sipd.SimplePeer`, where both sides' states, SDP and media
  counters can be read;
* a scripted raw SIP endpoint (``raw_ua``) with its own RTP socket, which
  writes its requests and answers by hand. It shows what sipd really puts on
  the wire (the re-INVITE's ``a=sendonly``, the answer's o= version, the RTP
  header fields) and plays the peer a SimplePeer never is (one that answers a
  re-INVITE with 488, or sends a session refresh or an UPDATE).
"""

from __future__ import annotations

import itertools
import re
import secrets
import struct
import time
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from sipd import CallRejected, CallState
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav
from sipd.session.interceptor import Accept, ISignalingHandler
from sipd.sip.message import Request, Response
from tests.conftest import (
    PeerFactory,
    RawUA,
    eventually,
    get_reactor,
    settle,
    within,
)

# -- helpers ---------------------------------------------------------------------------


def _direction(sdp_text: str) -> str:
    found = re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", sdp_text, re.M)
    return found[-1] if found else "sendrecv"


def _body(message: Request | Response) -> str:
    return message.body.decode()


async def connect(peers: PeerFactory, **bob_settings: Any) -> tuple[Any, Any, Any, Any]:
    """alice calls bob and bob answers: (alice, bob, alice's call, bob's call)."""
    alice, bob = await peers("alice"), await peers("bob", **bob_settings)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    return alice, bob, call, answered


async def sent_counter_moves(call: Any, seconds: float = 0.3) -> bool:
    """Whether the call put RTP on the wire during the next ``seconds``."""
    before = call.stats()["packets_sent"]
    await settle(seconds)
    return bool(call.stats()["packets_sent"] > before)


class RtpTap(DatagramProtocol):
    """The raw endpoint's RTP socket: logs each packet's header fields and arrival."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, int, bool, int, int]] = []
        self.port_obj: Any = get_reactor().listenUDP(0, self, "127.0.0.1")
        self.port: int = self.port_obj.getHost().port

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) < 12 or data[1] in (200, 201, 202, 203):  # RTCP
            return
        _b0, b1, seq, _ts, ssrc = struct.unpack("!BBHII", data[:12])
        self.packets.append((time.monotonic(), b1 & 0x7F, bool(b1 & 0x80), seq, ssrc))

    def since(self, t: float) -> list[tuple[float, int, bool, int, int]]:
        return [p for p in self.packets if p[0] >= t]


def _sdp(rtp_port: int, *, version: int = 1, codecs: str = "0 8", direction: str = "") -> str:
    names = {"0": "PCMU", "8": "PCMA"}
    lines = [
        "v=0",
        f"o=raw 4242 {version} IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP {codecs}",
        *(f"a=rtpmap:{pt} {names[pt]}/8000" for pt in codecs.split()),
    ]
    if direction:
        lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def _response(request: Request, status: int, reason: str, *, tag: str, port: int, body: str) -> str:
    h = request.headers
    to = h.get("To") or ""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in h.get_all("Via")]
    lines += [
        f"From: {h.get('From')}",
        f"To: {to}" if ";tag=" in to else f"To: {to};tag={tag}",
        f"Call-ID: {h.get('Call-ID')}",
        f"CSeq: {h.get('CSeq')}",
        f"Contact: <sip:raw@127.0.0.1:{port}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


class RawCallee:
    """A raw endpoint that answers INVITEs; ``reinvite_status`` decides re-INVITEs."""

    def __init__(self, ua: RawUA, tap: RtpTap) -> None:
        self.ua, self.tap = ua, tap
        self.tag = secrets.token_hex(4)
        self.reinvite_status = 200
        self.reinvites: list[Request] = []
        ua.on_message = self._on_message

    @property
    def uri(self) -> str:
        return f"sip:raw@127.0.0.1:{self.ua.port}"

    def _on_message(self, message: Request | Response, source: tuple[str, int]) -> None:
        if not isinstance(message, Request):
            return
        reply = self.ua.send
        port = self.ua.port
        if message.method == "INVITE" and message.to.tag is None:
            body = _sdp(self.tap.port)
            reply(_response(message, 200, "OK", tag=self.tag, port=port, body=body), source)
        elif message.method == "INVITE":
            if all(r.top_via.branch != message.top_via.branch for r in self.reinvites):
                self.reinvites.append(message)
            if self.reinvite_status == 200:
                offered = _direction(_body(message))
                answer = {"sendonly": "recvonly", "inactive": "inactive"}.get(offered, "")
                body = _sdp(self.tap.port, version=2, direction=answer)
                reply(_response(message, 200, "OK", tag=self.tag, port=port, body=body), source)
            else:
                status = self.reinvite_status
                text = _response(
                    message, status, "Not Acceptable Here", tag=self.tag, port=port, body=""
                )
                reply(text, source)
        elif message.method == "BYE":
            reply(_response(message, 200, "OK", tag=self.tag, port=port, body=""), source)


class RawCaller:
    """A raw endpoint that calls a peer and then sends in-dialog requests by hand."""

    def __init__(self, ua: RawUA, tap: RtpTap, peer_port: int) -> None:
        self.ua, self.tap, self.peer_port = ua, tap, peer_port
        self.call_id = f"{secrets.token_hex(8)}@raw"
        self.tag = secrets.token_hex(4)
        self.cseq = 1
        self.to_tag = ""
        self.target = f"sip:bob@127.0.0.1:{peer_port}"
        self.dest = ("127.0.0.1", peer_port)

    def _request(self, method: str, *, body: str = "", cseq: int | None = None) -> str:
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        lines = [
            f"{method} {self.target} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.ua.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:raw@127.0.0.1:{self.ua.port}>;tag={self.tag}",
            f"To: <sip:bob@127.0.0.1:{self.peer_port}>{to_tag}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq or self.cseq} {method}",
            f"Contact: <sip:raw@127.0.0.1:{self.ua.port}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def _final(self, method: str, cseq: int) -> Any:
        return self.ua.expect(
            lambda m: (
                isinstance(m, Response)
                and m.status >= 200
                and m.call_id == self.call_id
                and m.cseq.method == method
                and m.cseq.number == cseq
            )
        )

    async def transaction(self, method: str, body: str = "") -> Response:
        """Send ``method`` in the dialog, wait for its final response (and ACK a 2xx INVITE)."""
        if method != "INVITE" or self.to_tag:
            self.cseq += 1
        cseq = self.cseq
        final = self._final(method, cseq)
        self.ua.send(self._request(method, body=body), self.dest)
        response = await final
        assert isinstance(response, Response)
        if method == "INVITE" and response.status < 300:
            self.to_tag = response.to.tag or ""
            contact = response.contacts[0].uri
            self.target = str(contact)
            self.ua.send(self._request("ACK", cseq=cseq), self.dest)
        return response


# -- hold and resume between two SimplePeers ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_hold_and_resume_by_the_caller_change_sdp_and_pause_the_held_side(
    peers: PeerFactory,
) -> None:
    """alice holds: sendonly/recvonly SDP, bob is ON_HOLD and stops sending; resume undoes it."""
    _alice, _bob, call, answered = await connect(peers)
    version = call.session.local_sdp.origin.session_version
    assert await sent_counter_moves(answered)

    await within(call.hold(), 5)
    assert call.state is CallState.ON_HOLD and call.session.state == "OnHold"
    assert await eventually(lambda: answered.state is CallState.ON_HOLD)
    assert answered.session.state == "RemoteHold"
    assert call.session.local_sdp.origin.session_version == version + 1
    assert _direction(call.session.local_sdp.to_bytes().decode()) == "sendonly"
    assert _direction(answered.session.remote_sdp.to_bytes().decode()) == "sendonly"
    assert _direction(answered.session.local_sdp.to_bytes().decode()) == "recvonly"
    assert _direction(call.session.remote_sdp.to_bytes().decode()) == "recvonly"
    # The held side pauses its RTP; the holder may go on (hold music).
    await settle(0.1)
    assert not await sent_counter_moves(answered)
    assert await sent_counter_moves(call)

    await within(call.resume(), 5)
    assert call.state is CallState.ACTIVE
    assert await eventually(lambda: answered.state is CallState.ACTIVE)
    assert call.session.local_sdp.origin.session_version == version + 2
    assert _direction(call.session.local_sdp.to_bytes().decode()) == "sendrecv"
    assert await sent_counter_moves(answered)
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_hold_and_resume_by_the_callee_work_the_same_way(peers: PeerFactory) -> None:
    """bob (who answered) holds alice: alice is ON_HOLD and stops sending until bob resumes."""
    _alice, _bob, call, answered = await connect(peers)
    await within(answered.hold(), 5)
    assert answered.state is CallState.ON_HOLD
    assert await eventually(lambda: call.session.state == "RemoteHold")
    assert call.state is CallState.ON_HOLD
    await settle(0.1)
    assert not await sent_counter_moves(call)
    await within(answered.resume(), 5)
    assert answered.state is CallState.ACTIVE
    assert await eventually(lambda: call.state is CallState.ACTIVE)
    assert await sent_counter_moves(call)
    await within(answered.hangup(), 5)
    await within(call.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_glare_both_hold_at_once_one_491_and_both_end_on_hold(peers: PeerFactory) -> None:
    """Crossing holds get 491; the §14.1 timers retry and both sides settle on hold."""
    _alice, _bob, call, answered = await connect(peers)
    reactor = get_reactor()
    start = reactor.seconds()
    results = await within(
        defer.DeferredList(
            [call.hold(), answered.hold()], fireOnOneErrback=True, consumeErrors=True
        ),
        8,
    )
    elapsed = reactor.seconds() - start
    assert all(ok for ok, _ in results)
    glared = [
        c for c in (call, answered) if any(t.event.name == "ReinviteGlare" for t in c.history)
    ]
    assert glared, "neither side saw a 491"
    # The caller (Call-ID owner) waits 2.1-4 s, the callee 0-2 s: all done within ~4 s.
    assert elapsed < 4.5
    assert call.session.state == "OnHold" and answered.session.state == "OnHold"
    assert call.session.negotiation.direction == answered.session.negotiation.direction
    assert call.session.negotiation.direction.value == "inactive"
    await settle(0.1)
    assert not await sent_counter_moves(call)
    assert not await sent_counter_moves(answered)
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_remote_hold_puts_the_call_on_hold_and_hangup_still_works(
    peers: PeerFactory,
) -> None:
    """A call the peer holds is ON_HOLD, reports is_active(), and can be hung up."""
    _alice, _bob, call, answered = await connect(peers)
    await within(call.hold(), 5)
    assert await eventually(lambda: answered.state is CallState.ON_HOLD)
    assert answered.is_active()
    await within(answered.hangup(), 5)
    await within(call.wait_for_end(), 5)
    assert call.state is CallState.TERMINATED


# -- against a scripted raw endpoint ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_hold_reinvite_on_the_wire_carries_sendonly_then_sendrecv(
    peers: PeerFactory, raw_ua: Any
) -> None:
    """The re-INVITEs sipd sends hold with a=sendonly and resume with a=sendrecv, o= +1 each."""
    tap = RtpTap()
    try:
        far = RawCallee(raw_ua(), tap)
        alice = await peers("alice")
        call = await alice.call(far.uri)
        await within(call.wait_for_answer(), 5)
        await within(call.hold(), 5)
        await within(call.resume(), 5)
        hold, resume = far.reinvites
        assert _direction(_body(hold)) == "sendonly"
        assert _direction(_body(resume)) == "sendrecv"
        v = [int(re.search(r"^o=\S+ \d+ (\d+)", _body(r), re.M).group(1)) for r in far.reinvites]  # type: ignore[union-attr]
        assert v[1] == v[0] + 1
        assert hold.headers.get("Content-Type") == "application/sdp"
        await within(call.hangup(), 5)
    finally:
        await tap.port_obj.stopListening()


@pytest_twisted.ensureDeferred
async def test_rejected_hold_fails_with_488_and_keeps_the_previous_sdp(
    peers: PeerFactory, raw_ua: Any
) -> None:
    """The peer answers the hold re-INVITE 488: hold() fails with it, nothing changes."""
    tap = RtpTap()
    try:
        far = RawCallee(raw_ua(), tap)
        far.reinvite_status = 488
        alice = await peers("alice")
        call = await alice.call(far.uri)
        await within(call.wait_for_answer(), 5)
        before = call.session.local_sdp.to_bytes()
        negotiation = call.session.negotiation
        with pytest.raises(CallRejected) as info:
            await within(call.hold(), 5)
        assert info.value.status == 488
        assert "488" in str(info.value)
        assert call.state is CallState.ACTIVE
        assert call.session.local_sdp.to_bytes() == before
        assert call.session.negotiation is negotiation
        assert len(far.reinvites) == 1 and _direction(_body(far.reinvites[0])) == "sendonly"
        # Media still flows to the peer as before.
        t0 = time.monotonic()
        await settle(0.2)
        assert len(tap.since(t0)) >= 5
        await within(call.hangup(), 5)
    finally:
        await tap.port_obj.stopListening()


@pytest_twisted.ensureDeferred
async def test_session_refresh_reinvite_gets_the_same_sdp_and_media_flows_on(
    peers: PeerFactory, raw_ua: Any
) -> None:
    """A re-INVITE repeating the offer gets the same SDP (same o= version); RTP is untouched."""
    tap = RtpTap()
    try:
        bob = await peers("bob")
        raw = RawCaller(raw_ua(), tap, bob.port)
        offer = _sdp(tap.port)
        incoming_d = bob.wait_for_incoming()
        invite_d = defer.ensureDeferred(raw.transaction("INVITE", offer))
        incoming = await within(incoming_d, 5)
        answered_d = incoming.accept()
        first = await within(invite_d, 5)
        answered = await within(answered_d, 5)
        assert first.status == 200
        await settle(0.3)
        t0 = time.monotonic()
        refresh = await within(raw.transaction("INVITE", offer), 5)
        assert refresh.status == 200
        assert refresh.body == first.body  # byte for byte: o= version unchanged
        await settle(0.3)
        packets = tap.since(t0 - 0.2)
        assert len(packets) >= 20
        assert len({p[4] for p in tap.packets}) == 1  # one SSRC all along
        assert not any(p[2] for p in packets)  # no marker bit: no new talkspurt
        seqs = [p[3] for p in packets]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
        gaps = np.diff([p[0] for p in packets])
        assert gaps.max() < 0.15
        assert answered.state is CallState.ACTIVE
        bye = await within(raw.transaction("BYE"), 5)
        assert bye.status == 200
        await within(answered.wait_for_end(), 5)
    finally:
        await tap.port_obj.stopListening()


@pytest_twisted.ensureDeferred
async def test_update_with_sdp_changes_codec_and_update_without_sdp_changes_nothing(
    peers: PeerFactory, raw_ua: Any
) -> None:
    """UPDATE offering only PCMA switches bob's RTP to PT 8; an offerless UPDATE gets a bare 200."""
    tap = RtpTap()
    try:
        bob = await peers("bob")
        raw = RawCaller(raw_ua(), tap, bob.port)
        incoming_d = bob.wait_for_incoming()
        invite_d = defer.ensureDeferred(raw.transaction("INVITE", _sdp(tap.port)))
        answered = await within((await within(incoming_d, 5)).accept(), 5)
        await within(invite_d, 5)
        assert await eventually(lambda: len(tap.packets) > 3)
        assert tap.packets[-1][1] == 0  # PCMU first

        update = await within(raw.transaction("UPDATE", _sdp(tap.port, version=2, codecs="8")), 5)
        assert update.status == 200
        assert "PCMA/8000" in _body(update) and "PCMU" not in _body(update)
        t0 = time.monotonic()
        await settle(0.3)
        assert {p[1] for p in tap.since(t0 + 0.05)} == {8}
        assert answered.stats()["codec"] == "PCMA"
        ssrcs = {p[4] for p in tap.packets}

        bare = await within(raw.transaction("UPDATE"), 5)
        assert bare.status == 200 and not bare.body
        t1 = time.monotonic()
        await settle(0.3)
        after = tap.since(t1)
        assert len(after) >= 8 and {p[1] for p in after} == {8}
        assert {p[4] for p in tap.packets} == ssrcs
        assert answered.state is CallState.ACTIVE
        await within(raw.transaction("BYE"), 5)
        await within(answered.wait_for_end(), 5)
    finally:
        await tap.port_obj.stopListening()


# -- blind transfer ------------------------------------------------------------------------------


async def _tone_exchange(a: Any, b: Any, fa: float, fb: float, tmp: Any) -> tuple[float, float]:
    """a sends fa, b sends fb for 1 s; returns (what a heard, what b heard) as frequencies."""
    wa, wb = tmp / "a.wav", tmp / "b.wav"
    ra, rb = a.record_wav(wa), b.record_wav(wb)
    ga, gb = ToneGenerator(fa), ToneGenerator(fb)
    for _ in range(50):
        await defer.DeferredList([a.send_audio(ga.next_frame()), b.send_audio(gb.next_frame())])
    await settle(0.1)
    a.session.stop_recording(wa)
    b.session.stop_recording(wb)
    await within(defer.DeferredList([ra, rb]), 5)
    return dominant_frequency(read_wav(wa)), dominant_frequency(read_wav(wb))


@pytest_twisted.ensureDeferred
async def test_blind_transfer_connects_alice_to_carol_and_ends_the_old_call(
    peers: PeerFactory, tmp_path: Any
) -> None:
    """bob REFERs alice to carol: transfer() fires, alice and carol talk, alice-bob ends."""
    alice, _bob, call, answered = await connect(peers)
    carol = await peers("carol")
    new_call_d = call.wait_for_transfer()
    carol_in = carol.wait_for_incoming()
    transfer_d = answered.transfer(f"sip:carol@127.0.0.1:{carol.port}")
    incoming = await within(carol_in, 5)
    assert incoming.caller.startswith("sip:alice@")
    carol_call = await within(incoming.accept(), 5)
    await within(transfer_d, 5)
    new_call = await within(new_call_d, 5)
    await within(answered.wait_for_end(), 5)
    await within(call.wait_for_end(), 5)
    assert answered.state is CallState.TERMINATED and call.state is CallState.TERMINATED
    assert "Transferring" in answered.state_path
    assert new_call.remote_party.startswith("sip:carol@")
    assert [c.id for c in alice.active_calls()] == [new_call.id]
    heard_by_alice, heard_by_carol = await _tone_exchange(new_call, carol_call, 500, 1200, tmp_path)
    assert heard_by_alice == pytest.approx(1200, abs=10)
    assert heard_by_carol == pytest.approx(500, abs=10)
    await within(new_call.hangup(), 5)
    await within(carol_call.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_transfer_to_a_busy_target_fails_with_486_and_the_call_stays(
    peers: PeerFactory,
) -> None:
    """carol answers 486: transfer() fails with that status; alice and bob are still connected."""
    _alice, _bob, call, answered = await connect(peers)
    carol = await peers("carol")
    carol_in = carol.wait_for_incoming()
    transfer_d = answered.transfer(f"sip:carol@127.0.0.1:{carol.port}")
    await within((await within(carol_in, 5)).reject(486), 5)
    with pytest.raises(CallRejected) as info:
        await within(transfer_d, 5)
    assert info.value.status == 486
    assert answered.state is CallState.ACTIVE and call.state is CallState.ACTIVE
    assert await sent_counter_moves(answered) and await sent_counter_moves(call)
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)


@implementer(ISignalingHandler)
class NoTransfers:
    """Accepts calls but refuses to be transferred."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def on_incoming_invite(self, invite: Any) -> Accept:
        return Accept()

    def on_response(self, dialog_id: str, response: Any) -> Accept:
        return Accept()

    def on_transfer_request(self, session: Any, target: str) -> bool:
        self.asked.append(target)
        return False


@pytest_twisted.ensureDeferred
async def test_a_handler_that_vetoes_transfers_makes_the_refer_get_603(
    peers: PeerFactory,
) -> None:
    """on_transfer_request returning False: the REFER is declined 603 and no call is placed."""
    handler = NoTransfers()
    alice = await peers("alice", handler=handler)
    bob = await peers("bob")
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.port}")
    answered = await within((await within(bob.wait_for_incoming(), 5)).accept(), 5)
    await within(call.wait_for_answer(), 5)
    target = "sip:carol@127.0.0.1:9"
    with pytest.raises(CallRejected) as info:
        await within(answered.transfer(target), 5)
    assert info.value.status == 603
    assert handler.asked == [target]
    assert call.state is CallState.ACTIVE and answered.state is CallState.ACTIVE
    assert [c.id for c in alice.active_calls()] == [call.id]
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)
