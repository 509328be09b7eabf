"""RFC 3263 failover in the transaction layer, and RFC 3261 §18.1.1, on a task.Clock.

A :class:`TargetSet` locates ``example.test`` through the real
:class:`Rfc3263Resolver` over a fake DNS *backend* (canned records, fired
by hand where the test needs the wait); a real :class:`TransactionLayer`
sends through a recording ``send``. Timers are ``task.Clock`` advances.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.names import dns

from sipd.dns import Rfc3263Resolver, Transport
from sipd.errors import TransportError
from sipd.session.target_set import TargetSet
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response, make_response, parse_message
from sipd.sip.transaction import Addr, Flow, TransactionLayer, make_cancel, new_branch
from sipd.sip.uri import parse_uri
from tests.unit.test_dns_select import FakeBackend, rr

T1 = 0.5
TIMER_B = 64 * T1


def zone(*targets: tuple[str, int, int]) -> dict[tuple[str, str], Any]:
    """``_sip._udp.example.test`` SRV records (name, port, priority), each name 127.0.0.N."""
    records = [
        rr("_sip._udp.example.test", dns.Record_SRV(p, 0, port, name)) for name, port, p in targets
    ]
    found: dict[tuple[str, str], Any] = {("SRV", "_sip._udp.example.test"): records}
    for n, (name, _, _) in enumerate(targets, start=1):
        found[("A", name)] = [rr(name, dns.Record_A(f"127.0.0.{n}"))]
    return found


class Tu:
    """What the transaction user hears."""

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.timeouts = 0
        self.errors: list[OSError] = []

    def response(self, response: Response) -> None:
        self.responses.append(response)

    def timeout(self) -> None:
        self.timeouts += 1

    def error(self, error: OSError) -> None:
        self.errors.append(error)


class Net:
    """A layer on a clock with a recording send; ``refuse`` makes sends to an address fail."""

    def __init__(self, backend: FakeBackend) -> None:
        self.clock = task.Clock()
        self.sent: list[tuple[Request, Addr]] = []
        self.refuse: set[tuple[str, int]] = set()
        self.layer = TransactionLayer(self.clock, self.send, tu=None)  # type: ignore[arg-type]
        self.resolver = Rfc3263Resolver(
            ["127.0.0.1:53"], backend=backend, clock=self.clock, hosts_file=None
        )

    def send(self, data: bytes, addr: Addr) -> None:
        if (addr[0], addr[1]) in self.refuse:
            raise ConnectionRefusedError(f"refused by {addr}")
        message = parse_message(data)
        assert isinstance(message, Request)
        self.sent.append((message, addr))

    def route(self, uri: str = "sip:bob@example.test") -> TargetSet:
        return TargetSet(parse_uri(uri), self.resolver, supported=(Transport.UDP,))

    def answer(self, request: Request, status: int) -> None:
        self.layer.receive(make_response(request, status, to_tag="t"), ("127.0.0.9", 5060))


def request(method: str = "INVITE", body: bytes = b"") -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5080;branch={new_branch()};rport")
    h.add("From", "<sip:alice@127.0.0.1>;tag=a")
    h.add("To", "<sip:bob@example.test>")
    h.add("Call-ID", "c1@127.0.0.1")
    h.add("CSeq", f"1 {method}")
    h.add("Contact", "<sip:alice@127.0.0.1:5080>")
    return Request(method, parse_uri("sip:bob@example.test"), h, body)


def test_the_request_waits_for_location_and_goes_to_the_first_target() -> None:
    backend = FakeBackend(
        zone(("a.example.test", 5070, 10), ("b.example.test", 5071, 20)), hold=True
    )
    net = Net(backend)
    route = net.route()
    tu = Tu()
    net.layer.send_request(request(), route, tu.response, tu.timeout, tu.error)
    rounds = 0
    while backend.pending:  # NAPTR, then SRV, then A/AAAA: nothing is sent meanwhile
        assert net.sent == [] and route.target is None
        backend.release()
        rounds += 1
    assert rounds == 3
    assert [addr for _, addr in net.sent] == [("127.0.0.1", 5070)]
    assert route.target == ("127.0.0.1", 5070)


def test_a_timeout_moves_to_the_next_target_with_a_new_branch() -> None:
    net = Net(FakeBackend(zone(("a.example.test", 5070, 10), ("b.example.test", 5071, 20))))
    tu = Tu()
    txn = net.layer.send_request(request(), net.route(), tu.response, tu.timeout, tu.error)
    first_branch = net.sent[0][0].top_via.branch
    net.clock.advance(TIMER_B)
    assert tu.timeouts == 0 and tu.errors == []
    last, addr = net.sent[-1]
    assert addr == ("127.0.0.2", 5071)
    assert last.top_via.branch != first_branch
    # A CANCEL built from the original INVITE goes where the INVITE went, on its branch.
    net.answer(last, 180)
    cancel = net.layer.send_request(
        make_cancel(request_with(last, first_branch)), txn.dest, tu.response, tu.timeout
    )
    assert cancel.dest == ("127.0.0.2", 5071)
    assert net.sent[-1][0].method == "CANCEL"
    assert net.sent[-1][0].top_via.branch == last.top_via.branch


def request_with(sent: Request, branch: str | None) -> Request:
    """``sent`` as the TU built it: with its first branch."""
    h = sent.headers.copy()
    via = sent.top_via.with_param("branch", branch)
    h.pop_first_value("Via")
    h.prepend("Via", str(via))
    return Request(sent.method, sent.uri, h, sent.body)


def test_a_503_is_acked_and_the_next_target_tried() -> None:
    net = Net(FakeBackend(zone(("a.example.test", 5070, 10), ("b.example.test", 5071, 20))))
    tu = Tu()
    net.layer.send_request(request(), net.route(), tu.response, tu.timeout, tu.error)
    first = net.sent[0][0]
    net.answer(first, 503)
    methods = [(m.method, addr) for m, addr in net.sent]
    assert methods == [
        ("INVITE", ("127.0.0.1", 5070)),
        ("INVITE", ("127.0.0.2", 5071)),
        ("ACK", ("127.0.0.1", 5070)),
    ]
    assert tu.responses == []
    # The 503 retransmitted: the transaction left behind ACKs it again.
    net.answer(first, 503)
    assert [m.method for m, _ in net.sent].count("ACK") == 2
    second = net.sent[1][0]
    net.answer(second, 200)
    assert [r.status for r in tu.responses] == [200]
    net.clock.advance(TIMER_B)
    assert len(net.layer) == 0


def test_when_every_target_fails_the_tu_hears_which_and_why() -> None:
    net = Net(FakeBackend(zone(("a.example.test", 5070, 10), ("b.example.test", 5071, 20))))
    net.refuse.add(("127.0.0.1", 5070))
    tu = Tu()
    net.layer.send_request(request("OPTIONS"), net.route(), tu.response, tu.timeout, tu.error)
    assert [addr for _, addr in net.sent] == [("127.0.0.2", 5071)]  # refused, moved on at once
    net.answer(net.sent[-1][0], 503)
    assert len(tu.responses) == 1
    reason = tu.responses[0].reason
    assert "127.0.0.1:5070/UDP (a.example.test): transport error" in reason, reason
    assert "127.0.0.2:5071/UDP (b.example.test): 503" in reason, reason


def test_all_targets_silent_is_a_transport_error_listing_them() -> None:
    net = Net(FakeBackend(zone(("a.example.test", 5070, 10), ("b.example.test", 5071, 20))))
    tu = Tu()
    net.layer.send_request(request(), net.route(), tu.response, tu.timeout, tu.error)
    net.clock.advance(TIMER_B)
    net.clock.advance(TIMER_B)
    assert tu.timeouts == 0 and len(tu.errors) == 1
    assert "every target failed" in str(tu.errors[0])
    assert str(tu.errors[0]).count("no response (timeout)") == 2
    net.clock.advance(64)
    assert len(net.layer) == 0 and net.clock.getDelayedCalls() == []


def test_a_name_that_does_not_resolve_fails_the_request_with_the_dns_reason() -> None:
    net = Net(FakeBackend({}))
    tu = Tu()
    net.layer.send_request(request(), net.route(), tu.response, tu.timeout, tu.error)
    assert len(tu.errors) == 1 and isinstance(tu.errors[0], TransportError)
    assert "example.test" in str(tu.errors[0]) and "NXDOMAIN" in str(tu.errors[0])
    assert net.sent == [] and len(net.layer) == 0


def test_invalid_names_are_never_asked() -> None:
    backend = FakeBackend({})
    net = Net(backend)
    route = net.route("sip:bob@peer.invalid")
    assert route.error is not None and backend.calls == []


# -- RFC 3261 §18.1.1 ---------------------------------------------------------------------
def test_a_large_request_to_a_default_udp_address_goes_over_tcp() -> None:
    net = Net(FakeBackend({}))
    tu = Tu()
    big = request(body=b"x" * 1400)
    txn = net.layer.send_request(big, ("127.0.0.5", 5060), tu.response, tu.timeout, tu.error)
    sent, addr = net.sent[0]
    assert isinstance(addr, Flow) and addr.transport == "tcp"
    assert sent.top_via.transport == "TCP"
    # The connection is refused: the same request over UDP (§18.1.1), Via UDP again.
    net.layer.connection_failed(Flow("127.0.0.5", 5060, "tcp"), TransportError("refused"))
    sent, addr = net.sent[1]
    assert type(addr) is tuple and sent.top_via.transport == "UDP"
    assert sent.top_via.branch == big.top_via.branch
    net.clock.advance(T1)  # over UDP it is retransmitted
    assert len(net.sent) == 3 and tu.errors == []
    txn.terminate()


def test_a_small_request_and_a_pinned_udp_address_stay_on_udp() -> None:
    net = Net(FakeBackend({}))
    tu = Tu()
    net.layer.send_request(request(body=b"x" * 700), ("127.0.0.5", 5060), tu.response, tu.timeout)
    pinned = Flow("127.0.0.5", 5060, "udp")
    net.layer.send_request(request(body=b"x" * 1400), pinned, tu.response, tu.timeout)
    assert [(type(a) is tuple or a.transport == "udp") for _, a in net.sent] == [True, True]
    assert [m.top_via.transport for m, _ in net.sent] == ["UDP", "UDP"]
    net.layer.close()
