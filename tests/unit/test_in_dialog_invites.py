"""One in-dialog INVITE at a time (RFC 3261 §14.1), and RFC 4028 refreshes on the wire.

Two dialog adapters with their transaction layers talk through an in-memory
network on ``task.Clock``: every datagram is parsed as the other side would
see it, so the tests check what goes on the wire, not what the code meant.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from sipd.config import SipdConfig
from sipd.metrics import Metrics
from sipd.session import events as ev
from sipd.session.call_leg import CallLeg
from sipd.session.dialog_adapter import DialogAdapter
from sipd.sip.message import Request, parse_message
from sipd.sip.transaction import TransactionLayer
from sipd.sip.uri import parse_uri

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)


class Node:
    """One UA's dialog layer; its sink records events and reacts like a session would."""

    def __init__(self, net: Net, name: str, port: int, **settings: Any) -> None:
        self.net, self.port = net, port
        config = SipdConfig(name=name, host="127.0.0.1", port=port, **settings)
        self.adapter = DialogAdapter(config, net.clock, self.send, Metrics())
        self.layer = TransactionLayer(net.clock, self.send, self.adapter)
        self.adapter.attach(self.layer, self, port)
        self.events: list[ev.CallEvent] = []
        self.legs: list[CallLeg] = []
        net.nodes[port] = self

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.net.queue.append((self.port, dest, data))

    # -- DialogEventSink ------------------------------------------------------------
    def new_invite(self, leg: CallLeg, request: Request, source: tuple[str, int]) -> None:
        self.legs.append(leg)
        self.adapter.answer(leg, SDP)

    def dialog_event(self, leg: CallLeg, event: ev.CallEvent) -> bool:
        self.events.append(event)
        if isinstance(event, ev.Answered):
            self.adapter.send_ack(leg)
        elif isinstance(event, ev.RemoteReinvite):
            self.adapter.answer_reinvite(leg, event.txn, 200, SDP)
        elif isinstance(event, ev.RemoteRefresh):
            self.adapter.answer_request(leg, event.txn, 200)
        return True

    def invite_cancelled(self, leg: CallLeg) -> None:
        self.adapter.release(leg)


class Net:
    def __init__(self) -> None:
        self.clock = Clock()
        self.queue: list[tuple[int, tuple[str, int], bytes]] = []
        self.wire: list[tuple[int, bytes]] = []
        self.nodes: dict[int, Node] = {}

    def deliver(self) -> None:
        for _ in range(1000):
            if not self.queue:
                return
            src, dest, data = self.queue.pop(0)
            self.wire.append((src, data))
            self.nodes[dest[1]].layer.receive(parse_message(data), ("127.0.0.1", src))
        raise AssertionError("the network never went quiet")

    def requests(self, src: int, method: str) -> list[Request]:
        found = [parse_message(data) for port, data in self.wire if port == src]
        return [m for m in found if isinstance(m, Request) and m.method == method]


def call(**settings: Any) -> tuple[Net, Node, Node, CallLeg]:
    net = Net()
    alice, bob = Node(net, "alice", 5070, **settings), Node(net, "bob", 5080, **settings)
    leg = alice.adapter.invite(parse_uri("sip:bob@127.0.0.1:5080"), SDP)
    net.deliver()
    assert any(isinstance(e, ev.Answered) for e in alice.events)
    return net, alice, bob, leg


def test_a_second_reinvite_waits_for_the_first_to_be_answered() -> None:
    """RFC 3261 §14.1: the second re-INVITE goes only after the first's 2xx (and ACK)."""
    net, alice, _bob, leg = call()
    alice.adapter.reinvite(leg, SDP)
    alice.adapter.reinvite(leg, SDP)
    queued = [parse_message(data) for _, _, data in net.queue]
    assert [m.method for m in queued if isinstance(m, Request)] == ["INVITE"]
    net.deliver()
    invites = net.requests(5070, "INVITE")
    assert [r.cseq.number for r in invites[1:]] == [
        invites[1].cseq.number,
        invites[1].cseq.number + 1,
    ]
    acks = net.requests(5070, "ACK")
    first_ack = next(i for i, (_, d) in enumerate(net.wire) if d.startswith(b"ACK") and i > 2)
    second_invite = max(i for i, (_, d) in enumerate(net.wire) if d.startswith(b"INVITE"))
    assert first_ack < second_invite, "the second re-INVITE went before the first was ACKed"
    assert len(acks) == 3  # the initial INVITE's and both re-INVITEs'
    assert sum(isinstance(e, ev.ReinviteAnswered) for e in alice.events) == 2


def test_a_refresh_reinvite_queues_behind_a_hold_reinvite() -> None:
    """A session refresh by re-INVITE waits too; an UPDATE refresh does not need to."""
    net, alice, _bob, leg = call()
    alice.adapter.reinvite(leg, SDP)
    alice.adapter.refresh(leg, "INVITE", SDP, [("Session-Expires", "120;refresher=uac")])
    alice.adapter.refresh(leg, "UPDATE", None, [("Session-Expires", "120;refresher=uac")])
    queued = [parse_message(data) for _, _, data in net.queue]
    assert sorted(m.method for m in queued if isinstance(m, Request)) == ["INVITE", "UPDATE"]
    net.deliver()
    assert sum(isinstance(e, ev.RefreshAnswered) for e in alice.events) == 2
    refresh = net.requests(5070, "INVITE")[-1]
    assert refresh.headers.get("Session-Expires") == "120;refresher=uac"


def test_a_refresh_below_our_minimum_gets_422_with_min_se() -> None:
    """RFC 4028 §9: an in-dialog refresh asking for less than our Min-SE is answered 422."""
    net, alice, bob, leg = call(min_se=100)
    alice.adapter.refresh(leg, "UPDATE", None, [("Session-Expires", "95")])
    net.deliver()
    failed = [e for e in alice.events if isinstance(e, ev.RefreshFailed)]
    assert failed == [ev.RefreshFailed(422, "Session Interval Too Small", 100)]
    assert not any(isinstance(e, ev.RemoteRefresh) for e in bob.events)
