"""Addresses sipd cannot send to fail their one call at once, over real UDP on 127.0.0.1.

A scripted peer (``raw_ua``) writes INVITEs whose top Via names an address
no response can reach (``rport=65536``, ``maddr=[::1]`` on sipd's IPv4
socket, a bogus ``received``), whose Contact no BYE can reach
(``999.999.999.999``), or whose SDP ``c=`` is a host name or holds a NUL.
Each call must end at once with a reason instead of waiting in Incoming,
Answering, Terminating or Failing for something that cannot come; no
exception may reach the reactor (a log observer counts logged failures);
and the ``peers`` fixture checks that store, registry, legs and RTP ports
are empty afterwards.
"""

from __future__ import annotations

import secrets
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from sipd import CallFailed
from sipd.session.session import UnifiedSession
from sipd.sip.message import Request, Response, make_response
from tests.conftest import PeerFactory, RawUA, eventually, get_reactor, settle, within


@pytest.fixture
def failures() -> Iterator[list[LogEvent]]:
    """Every logged failure (a traceback in a daemon's log) during the test."""
    seen: list[LogEvent] = []

    @implementer(ILogObserver)
    def observer(event: LogEvent) -> None:
        if "log_failure" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names do not resolve, without asking a DNS server (resolve_host's lookup)."""

    def refuse(name: str) -> str:
        raise socket.gaierror(socket.EAI_NONAME, f"{name!r}: no DNS in this test")

    monkeypatch.setattr(socket, "gethostbyname", refuse)


def _sdp(rtp_port: int, address: str = "127.0.0.1") -> bytes:
    return (
        "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
        f"c=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


class Caller:
    """The raw peer's side of one call to ``port``: INVITE, ACK, by hand."""

    def __init__(self, raw: RawUA, port: int, contact: str | None = None) -> None:
        self.raw = raw
        self.port = port
        self.call_id = f"{secrets.token_hex(8)}@127.0.0.1"
        self.contact = contact or f"127.0.0.1:{raw.port}"
        raw.on_message = self._answer_bye

    def _answer_bye(self, message: Request | Response, source: tuple[str, int]) -> None:
        if isinstance(message, Request) and message.method == "BYE":
            self.raw.send(make_response(message, 200).to_bytes(), source)

    def invite(self, sdp: bytes, via_params: str = "rport") -> None:
        lines = [
            f"INVITE sip:bob@127.0.0.1:{self.port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.raw.port};branch=z9hG4bK{secrets.token_hex(6)}"
            f";{via_params}",
            "Max-Forwards: 70",
            "To: <sip:bob@127.0.0.1>",
            f"From: <sip:raw@127.0.0.1:{self.raw.port}>;tag=raw1",
            f"Call-ID: {self.call_id}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:raw@{self.contact}>",
            "Content-Type: application/sdp",
            f"Content-Length: {len(sdp)}",
            "",
            "",
        ]
        self.raw.send("\r\n".join(lines).encode() + sdp, ("127.0.0.1", self.port))

    def ack(self, to_tag: str) -> None:
        lines = [
            f"ACK sip:bob@127.0.0.1:{self.port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.raw.port};branch=z9hG4bK{secrets.token_hex(6)}"
            ";rport",
            "Max-Forwards: 70",
            f"To: <sip:bob@127.0.0.1>;tag={to_tag}",
            f"From: <sip:raw@127.0.0.1:{self.raw.port}>;tag=raw1",
            f"Call-ID: {self.call_id}",
            "CSeq: 1 ACK",
            "Content-Length: 0",
            "",
            "",
        ]
        self.raw.send("\r\n".join(lines).encode(), ("127.0.0.1", self.port))

    def final(self, status: int) -> Any:
        """The next final response with ``status`` to this call's INVITE."""
        return self.raw.expect(
            lambda m: isinstance(m, Response) and m.status == status and m.call_id == self.call_id
        )


def _ended(bob: Any) -> list[UnifiedSession]:
    ended: list[UnifiedSession] = []
    bob.coordinator.on_session_end.append(ended.append)
    return ended


# -- the Via names an address no response can reach -------------------------------------

VIAS = ["rport=65536", "maddr=[::1]", "received=bogus", "maddr=999.999.999.999"]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("where", ["Incoming", "Answering"])
@pytest_twisted.ensureDeferred
async def test_invite_whose_via_is_unusable_fails_at_once(
    peers: PeerFactory, raw_ua: Any, failures: list[LogEvent], via: str, where: str
) -> None:
    """Its 180 (Incoming) or 200 (Answering) cannot be sent: the call fails with a reason.

    Before, the call waited in Answering for an ACK that could not come
    (forever: the 200's send error escaped the action, so no ACK timer ran).
    A Via the parser already refuses (an rport above 65535 is a 400, sent
    back to the packet's source) never makes a call at all, which is as good.
    """
    ringing = where == "Incoming"
    bob = await peers("bob", send_ringing=ringing)
    ended = _ended(bob)
    if not ringing:
        # Answer inside the offer, as a daemon handler would: the 200 is the first response.
        def answer(session: UnifiedSession) -> None:
            session.accept().addErrback(lambda f: f.trap(CallFailed))

        bob.coordinator.on_incoming = answer
    raw = raw_ua()
    Caller(raw, bob.port).invite(_sdp(40000), via)
    assert await eventually(lambda: bool(ended or raw.log), timeout=1.0), "the call lingers"
    if raw.log:
        # Refused before any call: a 400 to where the request came from.
        await settle(0.1)
        assert [m.status for m, _ in raw.log if isinstance(m, Response)] == [400]
        assert ended == [] and len(bob.coordinator.store) == 0
        assert failures == []
        return
    session = ended[0]
    assert session.state == "Failed"
    last = session.history[-1]
    assert (last.from_state, last.event.name) == (where, "TransportFailed")
    assert isinstance(session.failure, CallFailed)
    assert "cannot answer" in str(session.failure) and session.failure.status == 503
    assert len(bob.coordinator.store) == 0
    assert bob.coordinator.layer is not None and bob.coordinator.layer.server_count == 0
    assert raw.log == []  # nothing could be sent to the address the Via names
    if ringing:
        assert bob.try_incoming() is None  # the offered call is gone from the queue
    assert failures == []


# -- the Contact names an address no BYE can reach ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_bye_to_an_unsendable_target_ends_the_call_at_once(
    peers: PeerFactory, raw_ua: Any, failures: list[LogEvent]
) -> None:
    """hangup() of a call whose Contact is 999.999.999.999: Terminated at once, no Timer F."""
    bob = await peers("bob")
    raw = raw_ua()
    caller = Caller(raw, bob.port, contact="999.999.999.999:5060")
    incoming_d = bob.wait_for_incoming()
    caller.invite(_sdp(40002))
    incoming = await within(incoming_d, 2)
    ok_d = caller.final(200)
    accepted_d = incoming.accept()
    ok = await within(ok_d, 2)
    caller.ack(ok.to.tag or "")
    call = await within(accepted_d, 2)
    ended = _ended(bob)
    reactor = get_reactor()
    started = reactor.seconds()
    await within(call.hangup(), 1.0)  # Timer F would be 64*T1 = 3.2 s
    assert reactor.seconds() - started < 0.5
    session = ended[0]
    assert session.state == "Terminated"
    assert session.history[-1].event.name == "ByeCompleted"
    assert session.history[-1].event.status == 503
    assert failures == []


@pytest_twisted.ensureDeferred
async def test_unacknowledged_call_with_an_unsendable_contact_leaves_failing_at_once(
    peers: PeerFactory, raw_ua: Any, failures: list[LogEvent]
) -> None:
    """No ACK within 64*T1, and the BYE that follows cannot be sent: Failed at once."""
    bob = await peers("bob")
    ended = _ended(bob)
    raw = raw_ua()
    caller = Caller(raw, bob.port, contact="999.999.999.999:5060")
    incoming_d = bob.wait_for_incoming()
    caller.invite(_sdp(40004))
    incoming = await within(incoming_d, 2)
    accepted_d = incoming.accept()
    accepted_d.addErrback(lambda f: f.trap(CallFailed))
    await within(caller.final(200), 2)  # and never ACKed
    # 64*T1 = 3.2 s for the AckTimeout; the BYE's Timer F would add 3.2 s more.
    assert await eventually(lambda: bool(ended), timeout=4.2)
    session = ended[0]
    assert session.state == "Failed"
    states = [(t.from_state, t.event.name) for t in session.history[-2:]]
    assert states == [("Answering", "AckTimeout"), ("Failing", "ByeCompleted")]
    assert session.history[-1].at - session.history[-2].at < 0.1
    assert failures == []


# -- the SDP names an address RTP cannot be sent to ---------------------------------------


class RtpSink(DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.packets.append((data, addr))


@pytest_twisted.ensureDeferred
async def test_sdp_with_a_host_name_gives_a_call_without_remote_until_rtp_arrives(
    peers: PeerFactory, raw_ua: Any, failures: list[LogEvent]
) -> None:
    """c=IN IP4 media.example.invalid: answered, nothing sent, no traceback per 20 ms tick.

    Once the peer's first RTP packet arrives, symmetric RTP latches to its
    source and audio flows back.
    """
    sink = RtpSink()
    port_obj: Any = get_reactor().listenUDP(0, sink, interface="127.0.0.1")
    try:
        rtp_port = port_obj.getHost().port
        bob = await peers("bob")
        raw = raw_ua()
        caller = Caller(raw, bob.port)
        incoming_d = bob.wait_for_incoming()
        caller.invite(_sdp(rtp_port, "media.example.invalid"))
        incoming = await within(incoming_d, 2)
        ok_d = caller.final(200)
        accepted_d = incoming.accept()
        ok = await within(ok_d, 2)
        caller.ack(ok.to.tag or "")
        call = await within(accepted_d, 2)
        media = call.session.media
        assert media is not None and media.stream.remote is None
        await settle(0.2)
        assert failures == []
        assert sink.packets == []
        assert media.stream.stats.send_errors == 0
        # One RTP packet from the peer's socket: sipd latches and sends back.
        their_port = int(ok.body.decode().split("m=audio ", 1)[1].split()[0])
        packet = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + b"\xff" * 160
        port_obj.write(packet, ("127.0.0.1", their_port))
        assert await eventually(lambda: len(sink.packets) >= 3, timeout=1.0)
        assert media.stream.remote == ("127.0.0.1", rtp_port)
        await within(call.hangup(), 2)
        assert failures == []
    finally:
        await port_obj.stopListening()


@pytest_twisted.ensureDeferred
async def test_sdp_with_a_nul_in_its_address_gets_488(
    peers: PeerFactory, raw_ua: Any, failures: list[LogEvent]
) -> None:
    """A c= address that is no address at all: the offer is refused with 488 at once,
    before it rings or reaches the application."""
    bob = await peers("bob")
    raw = raw_ua()
    caller = Caller(raw, bob.port)
    refused_d = caller.final(488)
    caller.invite(_sdp(40006, "127.0.0.1\x00"))
    refused = await within(refused_d, 2)
    assert "usable address" in (refused.headers.get("Warning") or ""), refused
    assert bob.try_incoming() is None
    assert failures == []


def test_the_request_builders_parse() -> None:
    """The hand-written INVITE is valid SIP (so the tests above test what they claim)."""
    sent: list[bytes] = []

    class Capture:
        port = 5999

        def send(self, data: bytes, dest: tuple[str, int]) -> None:
            sent.append(data)

    from sipd.sip.message import parse_message

    caller = Caller(Capture(), 5060)  # type: ignore[arg-type]
    caller.invite(_sdp(4000), "maddr=[::1]")
    caller.ack("t")
    invite, ack = (parse_message(d) for d in sent)
    assert isinstance(invite, Request) and invite.top_via.maddr == "[::1]"
    assert isinstance(ack, Request) and ack.to.tag == "t"
