"""Tests of the transaction layer: matching (RFC 3261 §17.1.3, §17.2.3, §9.2), the
RFC 2543 fallback, table hygiene, and two real layers talking over a lossy wire.

The helpers at the top (message builders on the real parser, a recording
``send`` and a recording transaction user) are shared with
``test_transaction_client.py`` and ``test_transaction_server.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet.task import Clock

from sipd.errors import SipdError, TransactionError
from sipd.sip.errors import SipParseError
from sipd.sip.message import Request, Response, make_response, parse_message
from sipd.sip.transaction import (
    DEFAULT_TIMERS,
    Addr,
    ClientState,
    ServerState,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
    make_cancel,
    new_branch,
)

# --------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------

UAC: Addr = ("127.0.0.1", 5070)
UAS: Addr = ("127.0.0.1", 5060)
CALL_ID = "a84b4c76e66710@127.0.0.1"


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK776asdhds",
    cseq: int = 314159,
    via: str = "SIP/2.0/UDP 127.0.0.1:5070",
    to_tag: str | None = None,
    from_tag: str = "1928301774",
    call_id: str = CALL_ID,
    uri: str = "sip:bob@127.0.0.1:5060",
    routes: tuple[str, ...] = (),
    body: bytes = b"",
) -> Request:
    """A realistic request (RFC 3261 §24.2 style), through the real parser."""
    to = "Bob <sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}" + (f";branch={branch}" if branch else ""),
        "Max-Forwards: 70",
        *(f"Route: {r}" for r in routes),
        f"To: {to}",
        f"From: Alice <sip:alice@127.0.0.1>;tag={from_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@127.0.0.1:5070>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines += [f"Content-Length: {len(body)}", "", ""]
    message = parse_message("\r\n".join(lines).encode() + body)
    assert isinstance(message, Request)
    return message


def response_to(req: Request, status: int, to_tag: str | None = "a6c85cf") -> Response:
    """A response to ``req`` as it arrives off the wire (built, serialised, parsed)."""
    message = parse_message(make_response(req, status, to_tag=to_tag).to_bytes())
    assert isinstance(message, Response)
    return message


def ack_for(req: Request, to_tag: str | None, branch: str | None = None) -> Request:
    """An ACK for ``req`` with the given To tag (same branch unless told otherwise)."""
    return request(
        "ACK",
        branch=branch if branch is not None else req.top_via.branch,
        cseq=req.cseq.number,
        to_tag=to_tag,
        via=str(req.top_via).split(";")[0],
        from_tag=req.from_.tag or "",
        call_id=req.call_id,
        uri=str(req.uri),
    )


class Wire:
    """The injected ``send``: records (time, bytes, address); can be made to fail."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes, Addr]] = []
        self.fail: OSError | None = None

    def __call__(self, data: bytes, addr: Addr) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((self.clock.seconds(), data, addr))

    @property
    def times(self) -> list[float]:
        return [t for t, _, _ in self.sent]

    @property
    def data(self) -> list[bytes]:
        return [d for _, d, _ in self.sent]

    def messages(self) -> list[Request | Response]:
        return [parse_message(d) for _, d, _ in self.sent]

    def statuses(self) -> list[int]:
        return [m.status for m in self.messages() if isinstance(m, Response)]


class RecordingTU:
    """A transaction user that records every upcall; ``on_request``/``on_cancel`` act."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.on_request: Callable[[Request, ServerTransaction], None] | None = None
        self.on_cancel: (
            Callable[[Request, ServerTransaction, ServerTransaction | None], None] | None
        ) = None

    def kinds(self) -> list[str]:
        return [str(e[0]) for e in self.events]

    def request_received(self, request: Request, source: Addr, txn: ServerTransaction) -> None:
        self.events.append(("request", request, source, txn))
        if self.on_request is not None:
            self.on_request(request, txn)

    def ack_received(self, request: Request, source: Addr) -> None:
        self.events.append(("ack", request, source))

    def cancel_received(
        self,
        cancel: Request,
        source: Addr,
        cancel_txn: ServerTransaction,
        invite_txn: ServerTransaction | None,
    ) -> None:
        self.events.append(("cancel", cancel, source, cancel_txn, invite_txn))
        if self.on_cancel is not None:
            self.on_cancel(cancel, cancel_txn, invite_txn)

    def stray_response_received(self, response: Response, source: Addr) -> None:
        self.events.append(("stray", response, source))

    def server_transaction_timeout(self, txn: ServerTransaction) -> None:
        self.events.append(("timeout", txn))

    def server_transport_error(self, txn: ServerTransaction, error: OSError) -> None:
        self.events.append(("transport_error", txn, error))


class Outcome:
    """The callbacks of one client transaction, recorded."""

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.timeouts = 0
        self.errors: list[OSError] = []

    def on_response(self, response: Response) -> None:
        self.responses.append(response)

    def on_timeout(self) -> None:
        self.timeouts += 1

    def on_error(self, error: OSError) -> None:
        self.errors.append(error)

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def make_layer(
    timers: TimerConfig = DEFAULT_TIMERS,
) -> tuple[Clock, Wire, RecordingTU, TransactionLayer]:
    clock = Clock()
    wire = Wire(clock)
    tu = RecordingTU()
    return clock, wire, tu, TransactionLayer(clock, wire, tu, timers)


def assert_clean(clock: Clock, layer: TransactionLayer) -> None:
    """No timer left on the clock and no transaction left in the tables."""
    assert clock.getDelayedCalls() == []
    assert layer.client_count == 0
    assert layer.server_count == 0
    assert len(layer) == 0
    assert layer._acks == {}


def run(clock: Clock, until: float) -> None:
    """Advance ``clock`` to ``until`` from one due timer to the next, as a reactor
    would, so each send is recorded at the exact time its timer was due."""
    while True:
        now = clock.seconds()
        due = [c.getTime() for c in clock.getDelayedCalls()]
        step = min(due) if due else until
        if step > until:
            step = until
        clock.advance(max(0.0, step - now))
        if step >= until:
            return


# --------------------------------------------------------------------------
# timer configuration and helpers
# --------------------------------------------------------------------------


def test_timer_config_derives_rfc3261_table4_values() -> None:
    """The default T1/T2/T4 give the RFC 3261 Table 4 UDP timer values."""
    t = TimerConfig()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert t.b == t.f == t.h == t.j == t.l == t.m == 32.0
    assert t.d == 32.0
    assert t.i == t.k == 5.0


def test_timer_config_scales_with_t1() -> None:
    """A smaller T1 shortens the 64*T1 timers; D keeps its 32 s floor for UDP."""
    t = TimerConfig(t1=0.1, t2=1.0, t4=2.0)
    assert t.b == pytest.approx(6.4)
    assert t.h == pytest.approx(6.4)
    assert t.d == 32.0
    assert TimerConfig(t1=1.0).d == 64.0


def test_timer_config_rejects_nonsense() -> None:
    """T1 must be positive and not above T2."""
    with pytest.raises(ValueError):
        TimerConfig(t1=0)
    with pytest.raises(ValueError):
        TimerConfig(t1=5.0, t2=4.0)


def test_new_branch_carries_magic_cookie_and_is_unique() -> None:
    """Branches start with z9hG4bK and do not repeat."""
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 7 + 8 for b in branches)


def test_transaction_error_is_a_sipd_error() -> None:
    """TransactionError belongs to the one sipd error hierarchy."""
    assert issubclass(TransactionError, SipdError)


# --------------------------------------------------------------------------
# server matching
# --------------------------------------------------------------------------


def test_cancel_is_matched_to_its_invite_transaction() -> None:
    """A CANCEL gets its own transaction and is paired with the INVITE of the same branch."""
    clock, wire, tu, layer = make_layer()
    invite = request()
    layer.receive(invite, UAC)
    invite_txn = tu.events[0][3]
    assert isinstance(invite_txn, ServerTransaction)

    def answer(cancel: Request, txn: ServerTransaction, inv: ServerTransaction | None) -> None:
        assert inv is not None
        txn.respond(make_response(cancel, 200))
        inv.respond(make_response(inv.request, 487, to_tag="x1"))

    tu.on_cancel = answer
    cancel = parse_message(make_cancel(invite).to_bytes())
    assert isinstance(cancel, Request)
    layer.receive(cancel, UAC)
    kind, got, _, cancel_txn, matched = tu.events[1]
    assert kind == "cancel" and got is cancel
    assert matched is invite_txn
    assert cancel_txn is not invite_txn
    assert isinstance(cancel_txn, ServerTransaction) and cancel_txn.request.method == "CANCEL"
    assert wire.statuses() == [100, 200, 487]
    assert layer.server_count == 2

    # A retransmitted CANCEL is absorbed and gets the 200 again.
    layer.receive(cancel, UAC)
    assert tu.kinds() == ["request", "cancel"]
    assert wire.statuses() == [100, 200, 487, 200]

    layer.receive(ack_for(invite, "x1"), UAC)
    assert invite_txn.state is ServerState.CONFIRMED
    assert tu.kinds() == ["request", "cancel"]  # the non-2xx ACK stays in the layer
    clock.advance(32)
    assert_clean(clock, layer)


def test_cancel_without_invite_transaction_gets_none() -> None:
    """A CANCEL whose INVITE is unknown reaches the TU with invite_txn None (it answers 481)."""
    clock, wire, tu, layer = make_layer()
    tu.on_cancel = lambda c, txn, inv: txn.respond(make_response(c, 481 if inv is None else 200))
    layer.receive(make_cancel(request()), UAC)
    assert tu.events[0][4] is None
    assert wire.statuses() == [481]
    clock.advance(32)
    assert_clean(clock, layer)


def test_cancel_from_other_sent_by_does_not_match() -> None:
    """Same branch but another sent-by is another transaction (§17.2.3)."""
    clock, _, tu, layer = make_layer()
    layer.receive(request(), UAC)
    other = request("CANCEL", via="SIP/2.0/UDP 127.0.0.1:5099")
    layer.receive(other, ("127.0.0.1", 5099))
    assert tu.events[1][0] == "cancel" and tu.events[1][4] is None
    layer.close()
    assert_clean(clock, layer)


def test_server_key_separates_sent_by_and_method() -> None:
    """Same branch with another sent-by port, or another method, starts a new transaction."""
    clock, _, tu, layer = make_layer()
    layer.receive(request(), UAC)
    layer.receive(request(), UAC)  # retransmission
    layer.receive(request(via="SIP/2.0/UDP 127.0.0.1:5071"), ("127.0.0.1", 5071))
    layer.receive(request("OPTIONS"), UAC)
    assert tu.kinds() == ["request", "request", "request"]
    assert layer.server_count == 3
    layer.close()
    assert_clean(clock, layer)


def test_server_matching_ignores_case_of_branch_and_host() -> None:
    """Branch and sent-by host compare case-insensitively (RFC 3261 §7.3.1)."""
    clock, _, tu, layer = make_layer()
    layer.receive(request(branch="z9hG4bKabc", via="SIP/2.0/UDP Alice.Example.com"), UAC)
    layer.receive(request(branch="z9hG4bKABC", via="SIP/2.0/UDP alice.example.COM"), UAC)
    assert tu.kinds() == ["request"]
    layer.close()
    assert_clean(clock, layer)


def test_ack_for_2xx_with_new_branch_goes_to_tu() -> None:
    """An ACK matching no transaction (the 2xx ACK has its own branch) is passed up."""
    clock, wire, tu, layer = make_layer()
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 200, to_tag="t2"))
    invite = request()
    layer.receive(invite, UAC)
    ack = ack_for(invite, "t2", branch="z9hG4bKnewack")
    layer.receive(ack, UAC)
    assert tu.kinds() == ["request", "ack"]
    assert tu.events[1][1] is ack
    assert wire.statuses() == [200]
    clock.advance(32)
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# RFC 2543 fallback
# --------------------------------------------------------------------------


def test_rfc2543_invite_retransmission_and_ack_are_matched_by_headers() -> None:
    """Without the magic cookie, the INVITE, its retransmission and its ACK match on
    Request-URI, tags, Call-ID, CSeq and top Via; the ACK by the To tag of our final."""
    clock, wire, tu, layer = make_layer()
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 486, to_tag="busy1"))
    old = request(branch=None)  # RFC 2543: no branch at all
    layer.receive(old, UAC)
    assert wire.statuses() == [486]
    layer.receive(request(branch=None), UAC)  # retransmission, parsed afresh
    assert tu.kinds() == ["request"]
    assert wire.statuses() == [486, 486]

    # An ACK with some other To tag is not ours: the TU gets it.
    layer.receive(ack_for(old, "someoneelse"), UAC)
    assert tu.kinds() == ["request", "ack"]
    assert layer.server_count == 1

    txn = tu.events[0][3]
    assert isinstance(txn, ServerTransaction)
    layer.receive(ack_for(old, "busy1"), UAC)
    assert txn.state is ServerState.CONFIRMED
    assert tu.kinds() == ["request", "ack"]
    clock.advance(5)
    assert_clean(clock, layer)


def test_rfc2543_old_style_branch_and_cancel() -> None:
    """A branch without the cookie is legacy too; its CANCEL finds the INVITE by headers."""
    clock, _wire, tu, layer = make_layer()
    old = request(branch="1")
    layer.receive(old, UAC)
    layer.receive(request(branch="1", cseq=old.cseq.number + 1), UAC)  # other CSeq: new
    assert tu.kinds() == ["request", "request"]
    invite_txn = tu.events[0][3]
    layer.receive(request("CANCEL", branch="1"), UAC)
    assert tu.events[2][0] == "cancel"
    assert tu.events[2][4] is invite_txn
    layer.receive(request("CANCEL", branch="1", from_tag="other"), UAC)
    assert tu.events[3][4] is None
    layer.close()
    assert_clean(clock, layer)


def test_rfc2543_ack_for_2xx_reaches_tu_and_accepted_absorbs_invite() -> None:
    """A legacy ACK for our 2xx (same To tag) matches the Accepted transaction and goes up."""
    clock, wire, tu, layer = make_layer()
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 200, to_tag="ok7"))
    old = request(branch=None)
    layer.receive(old, UAC)
    layer.receive(request(branch=None), UAC)
    assert wire.statuses() == [200]  # Accepted absorbs; the TU resends 2xx itself
    layer.receive(ack_for(old, "ok7"), UAC)
    assert tu.kinds() == ["request", "ack"]
    clock.advance(32)
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# client matching
# --------------------------------------------------------------------------


def test_response_matching_uses_branch_and_cseq_method() -> None:
    """A response to CANCEL matches the CANCEL transaction, not the INVITE with its branch."""
    clock, wire, _tu, layer = make_layer()
    invite = request(branch=new_branch())
    inv_out, can_out = Outcome(), Outcome()
    inv = layer.send_request(invite, UAS, inv_out.on_response, inv_out.on_timeout)
    layer.receive(response_to(invite, 180), UAS)
    cancel = make_cancel(invite)
    can = layer.send_request(cancel, UAS, can_out.on_response, can_out.on_timeout)
    layer.receive(response_to(cancel, 200), UAS)
    assert can_out.statuses == [200] and inv_out.statuses == [180]
    layer.receive(response_to(invite, 487), UAS)
    assert inv_out.statuses == [180, 487]
    assert inv.state is ClientState.COMPLETED and can.state is ClientState.COMPLETED
    ack = wire.messages()[-1]
    assert isinstance(ack, Request) and ack.method == "ACK"
    run(clock, 32.0)
    assert_clean(clock, layer)


def test_unmatched_responses_are_stray() -> None:
    """Responses for no client transaction (unknown branch or none) go to the TU."""
    clock, _, tu, layer = make_layer()
    r = response_to(request(branch=new_branch()), 200)
    layer.receive(r, UAS)
    no_branch = response_to(request(branch=None), 200)
    layer.receive(no_branch, UAS)
    assert tu.kinds() == ["stray", "stray"]
    assert tu.events[0][1] is r
    assert_clean(clock, layer)


def test_send_request_rejects_ack_legacy_branch_and_duplicates() -> None:
    """ACK, a branch without cookie and a reused branch are refused with TransactionError."""
    clock, wire, _, layer = make_layer()
    out = Outcome()
    with pytest.raises(TransactionError):
        layer.send_request(request("ACK"), UAS, out.on_response, out.on_timeout)
    with pytest.raises(TransactionError):
        layer.send_request(request(branch="1"), UAS, out.on_response, out.on_timeout)
    with pytest.raises(TransactionError):
        layer.send_request(request(branch=None), UAS, out.on_response, out.on_timeout)
    req = request(branch=new_branch())
    layer.send_request(req, UAS, out.on_response, out.on_timeout)
    with pytest.raises(TransactionError):
        layer.send_request(req, UAS, out.on_response, out.on_timeout)
    assert len(wire.sent) == 1
    layer.close()
    assert_clean(clock, layer)


def test_malformed_via_raises_parse_error_and_records_nothing() -> None:
    """A top Via that does not parse surfaces as SipParseError for the transport."""
    clock, wire, tu, layer = make_layer()
    raw = bytes(request()).replace(b"Via: SIP/2.0/UDP 127.0.0.1:5070", b"Via: garbage")
    with pytest.raises(SipParseError):
        layer.receive(parse_message(raw), UAC)
    assert tu.events == [] and wire.sent == []
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# hygiene and end-to-end
# --------------------------------------------------------------------------


def test_many_transactions_leave_nothing_behind() -> None:
    """Hundreds of mixed transactions all end; tables and clock are empty afterwards."""
    clock, _wire, tu, layer = make_layer()

    def answer(r: Request, txn: ServerTransaction) -> None:
        status = 200 if r.method == "OPTIONS" or r.cseq.number % 2 else 486
        txn.respond(make_response(r, status, to_tag="t"))

    tu.on_request = answer
    invites = []
    for n in range(100):
        inv = request(branch=f"z9hG4bKin{n}", cseq=n, call_id=f"c{n}")
        invites.append(inv)
        layer.receive(inv, UAC)
        layer.receive(request("OPTIONS", branch=f"z9hG4bKop{n}", cseq=n), UAC)
        out = Outcome()
        layer.send_request(
            request("BYE", branch=new_branch(), cseq=n), UAS, out.on_response, out.on_timeout
        )
    assert layer.server_count == 200 and layer.client_count == 100
    for inv in invites:
        if inv.cseq.number % 2 == 0:
            layer.receive(ack_for(inv, "t"), UAC)
    run(clock, 40.0)
    assert_clean(clock, layer)


def test_close_terminates_everything_without_callbacks() -> None:
    """close() cancels every timer and empties the tables; no TU or client callback runs."""
    clock, _, tu, layer = make_layer()
    out = Outcome()
    layer.send_request(request(branch=new_branch()), UAS, out.on_response, out.on_timeout)
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 603, to_tag="d"))
    layer.receive(request(), UAC)
    assert clock.getDelayedCalls() != []
    layer.close()
    assert_clean(clock, layer)
    clock.advance(100)
    assert out.timeouts == 0 and out.responses == []
    assert tu.kinds() == ["request"]


class LossyLink:
    """Delivers datagrams to another layer after 10 ms, dropping the first datagram
    that starts with each of the ``drop`` prefixes."""

    def __init__(self, clock: Clock, drop: list[bytes]) -> None:
        self.clock = clock
        self.drop = list(drop)
        self.peer: TransactionLayer | None = None
        self.source: Addr = ("0.0.0.0", 0)
        self.log: list[bytes] = []

    def __call__(self, data: bytes, addr: Addr) -> None:
        self.log.append(data)
        for prefix in self.drop:
            if data.startswith(prefix):
                self.drop.remove(prefix)
                return
        peer = self.peer
        assert peer is not None
        self.clock.callLater(0.01, peer.receive, parse_message(data), self.source)


def test_two_layers_recover_from_loss_end_to_end() -> None:
    """A real UAC layer and UAS layer complete OPTIONS and a rejected INVITE over a
    link that drops the first request, the first final response and the first ACK."""
    clock = Clock()
    a_link = LossyLink(clock, [b"OPTIONS ", b"ACK "])
    b_link = LossyLink(clock, [b"SIP/2.0 486"])
    a_tu, b_tu = RecordingTU(), RecordingTU()
    a = TransactionLayer(clock, a_link, a_tu)
    b = TransactionLayer(clock, b_link, b_tu)
    a_link.peer, a_link.source = b, UAC
    b_link.peer, b_link.source = a, UAS
    b_tu.on_request = lambda r, txn: txn.respond(
        make_response(r, 200 if r.method == "OPTIONS" else 486, to_tag="b1")
    )

    opt_out, inv_out = Outcome(), Outcome()
    a.send_request(
        request("OPTIONS", branch=new_branch()), UAS, opt_out.on_response, opt_out.on_timeout
    )
    run(clock, 2.0)
    assert opt_out.statuses == [200]  # first OPTIONS lost, retransmission answered
    invite = request(branch=new_branch(), cseq=2)
    a.send_request(invite, UAS, inv_out.on_response, inv_out.on_timeout)
    run(clock, 40.0)
    assert inv_out.statuses == [486]
    assert inv_out.timeouts == opt_out.timeouts == 0
    assert b_tu.kinds() == ["request", "request"]
    assert [e for e in b_tu.events if e[0] == "timeout"] == []
    acks = [d for d in a_link.log if d.startswith(b"ACK ")]
    assert len(acks) == 2 and acks[0] is acks[1]  # first ACK lost, the same bytes resent
    assert_clean(clock, a)
    assert_clean(clock, b)
