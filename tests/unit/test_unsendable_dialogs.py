"""The dialog layer when an address from the wire cannot be sent to, on a task.Clock.

A UAS dialog adapter with its transaction layer gets requests as parsed
messages; its ``send`` refuses what a real IPv4 UDP socket refuses (a host
that is no IPv4 address: ValueError; a port above 65535: OverflowError).
Each failure must reach the session as an event at once (``TransportFailed``
for the INVITE's own answers, ``AckTimeout`` when a 2xx retransmission
cannot go, ``ByeCompleted(503)`` for a BYE), and leave no timer and no
transaction behind once the clock has run.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket

import pytest
from twisted.internet.task import Clock

from sipd.config import SipdConfig
from sipd.metrics import Metrics
from sipd.session import events as ev
from sipd.session.call_leg import CallLeg
from sipd.session.dialog_adapter import DialogAdapter
from sipd.sip.message import Request, parse_message
from sipd.sip.transaction import TransactionLayer

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
PEER = ("127.0.0.1", 5070)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names do not resolve, without asking a DNS server (resolve_host's lookup)."""

    def refuse(name: str) -> str:
        raise socket.gaierror(socket.EAI_NONAME, f"{name!r}: no DNS in this test")

    monkeypatch.setattr(socket, "gethostbyname", refuse)


class Uas:
    """One dialog adapter; its sink answers every INVITE and records the events."""

    def __init__(self, *, answer: bool = True, ringing: bool = False) -> None:
        self.clock = Clock()
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.refused: list[tuple[str, int]] = []
        config = SipdConfig(name="bob", host="127.0.0.1", port=5080)
        self.adapter = DialogAdapter(config, self.clock, self.send, Metrics())
        self.layer = TransactionLayer(self.clock, self.send, self.adapter)
        self.adapter.attach(self.layer, self, 5080)
        self.answer, self.ringing = answer, ringing
        self.events: list[ev.CallEvent] = []
        self.legs: list[CallLeg] = []
        self.cancelled: list[CallLeg] = []

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        """What an IPv4 socket does with a bad address (Twisted's udp.Port.write)."""
        host, port = dest
        if not 0 <= port <= 65535:
            self.refused.append(dest)
            raise OverflowError("sendto(): port must be 0-65535.")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            self.refused.append(dest)
            raise ValueError(f"write() only accepts IPv4 addresses, not {host!r}") from None
        self.sent.append((data, dest))

    # -- DialogEventSink ------------------------------------------------------------
    def new_invite(self, leg: CallLeg, request: Request, source: tuple[str, int]) -> None:
        self.legs.append(leg)
        if self.ringing:
            self.adapter.ringing(leg)
        if self.answer:
            self.adapter.answer(leg, SDP)

    def dialog_event(self, leg: CallLeg, event: ev.CallEvent) -> bool:
        self.events.append(event)
        if isinstance(event, ev.RemoteReinvite):
            self.adapter.answer_reinvite(leg, event.txn, 200, SDP)
        elif isinstance(event, ev.TransportFailed | ev.ByeCompleted):
            self.adapter.release(leg)
        return True

    def invite_cancelled(self, leg: CallLeg) -> None:
        self.cancelled.append(leg)
        self.adapter.release(leg)

    # -- the peer's side --------------------------------------------------------------
    def receive(self, text: str, body: bytes = b"") -> None:
        data = text.replace("\n", "\r\n").encode() + body
        message = parse_message(data)
        assert isinstance(message, Request)
        self.layer.receive(message, PEER)

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def run_out(self) -> None:
        """Let every timer run (64*T1 and more) and check nothing is left."""
        self.clock.advance(64)
        self.clock.advance(64)
        # Only per-call timers count: overload control's load sampler runs for the UA's life.
        left = [
            dc
            for dc in self.clock.getDelayedCalls()
            if not getattr(dc.func, "__module__", "").startswith("sipd.session.overload")
        ]
        assert left == []
        assert len(self.layer) == 0
        assert self.adapter.legs == {}


def invite(via_params: str = "rport", contact: str = "127.0.0.1:5070", call_id: str = "c1") -> str:
    return (
        "INVITE sip:bob@127.0.0.1:5080 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{secrets.token_hex(4)};{via_params}\n"
        "Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=a1\nTo: <sip:bob@127.0.0.1>\n"
        f"Call-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:alice@{contact}>\n"
        f"Content-Type: application/sdp\nContent-Length: {len(SDP)}\n\n"
    )


def in_dialog(method: str, to_tag: str, cseq: int, via_params: str = "rport") -> str:
    body = len(SDP) if method == "INVITE" else 0
    ctype = "Content-Type: application/sdp\n" if body else ""
    return (
        f"{method} sip:bob@127.0.0.1:5080 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{secrets.token_hex(4)};{via_params}\n"
        f"Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=a1\n"
        f"To: <sip:bob@127.0.0.1>;tag={to_tag}\nCall-ID: c1\nCSeq: {cseq} {method}\n"
        f"Contact: <sip:alice@127.0.0.1:5070>\n{ctype}Content-Length: {body}\n\n"
    )


VIAS = ["maddr=[::1]", "received=bogus", "maddr=999.999.999.999"]


@pytest.mark.parametrize("via", VIAS)
def test_an_unsendable_200_fails_the_call_at_once(via: str) -> None:
    """The 200 cannot reach the Via's address: TransportFailed now, no 2xx retransmission."""
    uas = Uas()
    uas.receive(invite(via), SDP)
    assert uas.names() == ["TransportFailed"]
    event = uas.events[0]
    assert isinstance(event, ev.TransportFailed) and event.status == 503
    assert "cannot send our response" in event.reason
    assert uas.sent == []
    uas.run_out()
    assert uas.names() == ["TransportFailed"]  # no AckTimeout later: nothing was retransmitted


@pytest.mark.parametrize("via", VIAS)
def test_an_unsendable_180_fails_the_call_at_once(via: str) -> None:
    uas = Uas(answer=False, ringing=True)
    uas.receive(invite(via), SDP)
    assert uas.names() == ["TransportFailed"]
    uas.run_out()


def test_an_invite_nobody_owns_yet_is_dropped_when_its_100_cannot_be_sent() -> None:
    """The handler is still deciding: the INVITE is dropped like a cancelled one."""
    uas = Uas(answer=False)
    uas.receive(invite("received=bogus"), SDP)
    assert uas.names() == ["TransportFailed"]  # offered to the sink, which did not take it
    uas.run_out()


def test_an_unsendable_2xx_retransmission_ends_the_wait_for_the_ack_at_once() -> None:
    """A re-INVITE whose Via is unusable: its 2xx cannot go, so AckTimeout after one T1."""
    uas = Uas()
    uas.receive(invite(), SDP)
    leg = uas.legs[0]
    uas.receive(in_dialog("ACK", leg.local_tag, 1))
    assert uas.names() == ["AckReceived"]
    uas.receive(in_dialog("INVITE", leg.local_tag, 2, "maddr=[::1]"), SDP)
    assert uas.names() == ["AckReceived", "RemoteReinvite"]
    uas.clock.advance(0.5)  # T1: the first retransmission is refused
    assert uas.names() == ["AckReceived", "RemoteReinvite", "AckTimeout"]
    uas.adapter.release(leg)
    uas.run_out()


@pytest.mark.parametrize("contact", ["999.999.999.999:5070", "peer.invalid:5070", "[::1]:5070"])
def test_a_bye_to_an_unsendable_target_completes_at_once(contact: str) -> None:
    uas = Uas()
    uas.receive(invite(contact=contact), SDP)
    leg = uas.legs[0]
    uas.receive(in_dialog("ACK", leg.local_tag, 1))
    uas.adapter.bye(leg)
    assert uas.names() == ["AckReceived", "ByeCompleted"]
    bye_done = uas.events[-1]
    assert isinstance(bye_done, ev.ByeCompleted) and bye_done.status == 503
    uas.run_out()
