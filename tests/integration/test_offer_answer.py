"""Offer/answer at call set-up over real UDP: the delayed offer (RFC 3261 §13.2.1:
an INVITE without SDP, we offer in the 200 and the ACK answers) and no common
codec (488 Not Acceptable Here)."""

from __future__ import annotations

import secrets
import socket

import pytest_twisted

from sipd import CallRejected
from sipd.media.rtp import RtpPacket
from sipd.sdp import parse_sdp
from tests.conftest import PeerFactory, RawUA, is_request, is_response, settle, within

PCMU_ANSWER = (
    "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


def _headers(ua: RawUA, bob_port: int, call_id: str, cseq: str, branch: str) -> str:
    return (
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{branch};rport\n"
        "Max-Forwards: 70\n"
        f"From: <sip:raw@127.0.0.1:{ua.port}>;tag=rawtag1\n"
        f"To: <sip:bob@127.0.0.1:{bob_port}>{{to_tag}}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq}\n"
    )


@pytest_twisted.ensureDeferred
async def test_delayed_offer_is_offered_in_the_200_and_answered_in_the_ack(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """The 200 carries our offer; media starts once the ACK brings the answer."""
    bob = await peers("bob")
    ua = raw_ua()
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    try:
        call_id = f"{secrets.token_hex(8)}@raw"
        ok = ua.expect(is_response(200, "INVITE"))
        invite = (
            f"INVITE sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
            + _headers(ua, bob.port, call_id, "1 INVITE", secrets.token_hex(6)).replace(
                "{to_tag}", ""
            )
            + f"Contact: <sip:raw@127.0.0.1:{ua.port}>\nContent-Length: 0\n\n"
        )
        ua.send(invite, ("127.0.0.1", bob.port))
        incoming = await within(bob.wait_for_incoming(), 5)
        assert incoming.sdp is None
        accepted = incoming.accept()
        response = await ok
        offer = parse_sdp(response.body)
        assert offer.audio is not None and {c.name for c in offer.audio.codecs} >= {"PCMU"}
        assert not accepted.called  # answered only when the ACK comes
        answer = PCMU_ANSWER.format(port=rtp.getsockname()[1])
        ack = (
            f"ACK sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
            + _headers(ua, bob.port, call_id, "1 ACK", secrets.token_hex(6)).replace(
                "{to_tag}", f";tag={response.to.tag}"
            )
            + f"Content-Type: application/sdp\nContent-Length: {len(answer)}\n\n{answer}"
        )
        ua.send(ack, ("127.0.0.1", bob.port))
        call = await within(accepted, 5)
        assert call.is_active()
        assert call.stats()["codec"] == "PCMU"
        # Bob's stream now sends to the port in the ACK's answer.
        await settle(0.2)
        packets = []
        while True:
            try:
                packets.append(RtpPacket.parse(rtp.recv(2048)))
            except BlockingIOError:
                break
        assert len(packets) >= 3 and all(p.payload_type == 0 for p in packets)
        bye_ok = ua.expect(is_response(200, "BYE"))
        ua.send(
            f"BYE sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
            + _headers(ua, bob.port, call_id, "2 BYE", secrets.token_hex(6)).replace(
                "{to_tag}", f";tag={response.to.tag}"
            )
            + "Content-Length: 0\n\n",
            ("127.0.0.1", bob.port),
        )
        await bye_ok
        await within(call.wait_for_end(), 5)
    finally:
        rtp.close()


@pytest_twisted.ensureDeferred
async def test_an_ack_without_the_answer_ends_the_call(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """A delayed offer whose ACK carries no SDP cannot have media: we hang up (BYE)."""
    bob = await peers("bob")
    ua = raw_ua()
    call_id = f"{secrets.token_hex(8)}@raw"
    ok = ua.expect(is_response(200, "INVITE"))
    ua.send(
        f"INVITE sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
        + _headers(ua, bob.port, call_id, "1 INVITE", secrets.token_hex(6)).replace("{to_tag}", "")
        + f"Contact: <sip:raw@127.0.0.1:{ua.port}>\nContent-Length: 0\n\n",
        ("127.0.0.1", bob.port),
    )
    incoming = await within(bob.wait_for_incoming(), 5)
    accepted = incoming.accept()
    response = await ok
    bye = ua.expect(is_request("BYE"))
    ua.send(
        f"ACK sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
        + _headers(ua, bob.port, call_id, "1 ACK", secrets.token_hex(6)).replace(
            "{to_tag}", f";tag={response.to.tag}"
        )
        + "Content-Length: 0\n\n",
        ("127.0.0.1", bob.port),
    )
    request = await bye
    ua.send(
        "SIP/2.0 200 OK\n"
        + "".join(f"Via: {v}\n" for v in request.headers.get_all("Via"))
        + f"From: {request.headers.get('From')}\nTo: {request.headers.get('To')}\n"
        f"Call-ID: {request.call_id}\nCSeq: {request.headers.get('CSeq')}\n"
        "Content-Length: 0\n\n",
        ("127.0.0.1", bob.port),
    )
    call = await within(accepted, 5)
    await within(call.wait_for_end(), 5)
    assert "Terminating" in call.state_path


@pytest_twisted.ensureDeferred
async def test_no_common_codec_is_answered_488_on_both_sides(peers: PeerFactory) -> None:
    """A caller offering only PCMA to a callee that takes only PCMU gets 488 Not Acceptable
    Here at once, with the reason in a Warning; the callee's application never sees the
    call (it does not ring), and nothing is left behind."""
    alice = await peers("alice", codecs=["PCMA"], dtmf=False)
    bob = await peers("bob", codecs=["PCMU"], dtmf=False)
    call = await alice.call(bob.uri)
    try:
        await within(call.wait_for_answer(), 5)
    except CallRejected as exc:
        assert exc.status == 488 and "no common codec" in str(exc), exc
    else:
        raise AssertionError("the call was answered despite having no common codec")
    assert bob.try_incoming() is None
