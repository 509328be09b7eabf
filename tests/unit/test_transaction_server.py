"""Tests of the server transactions (RFC 3261 §17.2, RFC 6026 §7.1, §8.7) on a task.Clock."""

from __future__ import annotations

from itertools import pairwise

import pytest

from sipd.errors import TransactionError
from sipd.sip.errors import BadRequest
from sipd.sip.message import Request, Response, make_response
from sipd.sip.transaction import ServerState, ServerTransaction, TimerConfig
from tests.unit.test_transaction_layer import (
    UAC,
    RecordingTU,
    ack_for,
    assert_clean,
    make_layer,
    request,
    run,
)


def only_txn(tu: RecordingTU) -> ServerTransaction:
    txns = [e[3] for e in tu.events if e[0] == "request"]
    assert len(txns) == 1
    txn = txns[0]
    assert isinstance(txn, ServerTransaction)
    return txn


# --------------------------------------------------------------------------
# INVITE server transaction: 100 Trying and Proceeding
# --------------------------------------------------------------------------


def test_100_trying_is_sent_when_tu_stays_silent() -> None:
    """An INVITE the TU does not answer at once gets 100 Trying (no To tag), §17.2.1."""
    clock, wire, tu, layer = make_layer()
    invite = request()
    layer.receive(invite, UAC)
    assert tu.kinds() == ["request"] and tu.events[0][1] is invite
    txn = only_txn(tu)
    assert txn.state is ServerState.PROCEEDING
    [trying] = wire.messages()
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to.tag is None
    assert trying.top_via.branch == invite.top_via.branch
    assert wire.sent[0][2] == UAC
    txn.terminate()
    assert_clean(clock, layer)


@pytest.mark.parametrize("status", [180, 183, 200, 486])
def test_no_100_trying_when_tu_answers_in_request_received(status: int) -> None:
    """A TU that answers inside request_received suppresses the automatic 100."""
    clock, wire, tu, layer = make_layer()
    tu.on_request = lambda r, txn: txn.respond(make_response(r, status, to_tag="u1"))
    layer.receive(request(), UAC)
    assert wire.statuses() == [status]
    layer.close()
    assert_clean(clock, layer)


def test_no_100_trying_for_non_invite() -> None:
    """Non-INVITE requests never get an automatic provisional response."""
    clock, wire, tu, layer = make_layer()
    layer.receive(request("OPTIONS"), UAC)
    assert wire.sent == []
    assert only_txn(tu).state is ServerState.TRYING
    layer.close()
    assert_clean(clock, layer)


def test_retransmitted_invite_gets_last_provisional() -> None:
    """In Proceeding a retransmitted INVITE is absorbed and the latest 1xx re-sent."""
    clock, wire, tu, layer = make_layer()
    layer.receive(request(), UAC)
    txn = only_txn(tu)
    layer.receive(request(), UAC)
    assert wire.statuses() == [100, 100]
    ringing = make_response(txn.request, 180, to_tag="r1")
    txn.respond(ringing)
    layer.receive(request(), UAC)
    layer.receive(request(), UAC)
    assert wire.statuses() == [100, 100, 180, 180, 180]
    assert wire.data[-1] is wire.data[-2] is wire.data[-3]  # serialised once
    assert tu.kinds() == ["request"]
    assert clock.getDelayedCalls() == []  # Proceeding has no timer
    txn.terminate()
    assert_clean(clock, layer)


def test_responses_go_to_via_address_with_rport() -> None:
    """Responses follow RFC 3261 §18.2.2 / RFC 3581: received + rport from the source."""
    clock, wire, tu, layer = make_layer()
    invite = request(via="SIP/2.0/UDP alice.example.com:5070;rport")
    layer.receive(invite, ("127.0.0.1", 40000))
    txn = only_txn(tu)
    assert txn.source == ("127.0.0.1", 40000)
    # The Via has no received parameter, so the host comes from sent-by, the
    # port from the packet's source (rport).
    assert wire.sent[0][2] == ("alice.example.com", 40000)
    txn.terminate()
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# INVITE server transaction: non-2xx final, Timers G, H and I
# --------------------------------------------------------------------------


def test_timer_g_doubles_capped_at_t2_until_timer_h() -> None:
    """A 486 is re-sent after 0.5, 1, 2, then every 4 s (T2) until Timer H at 32 s
    tells the TU the ACK never came; all sends are the same bytes."""
    clock, wire, tu, layer = make_layer()
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 486, to_tag="b"))
    layer.receive(request(), UAC)
    txn = only_txn(tu)
    assert txn.state is ServerState.COMPLETED and txn.last_status == 486
    run(clock, 31.99)
    assert tu.kinds() == ["request"]
    run(clock, 32.0)
    assert wire.times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(d is wire.data[0] for d in wire.data)
    assert tu.kinds() == ["request", "timeout"] and tu.events[1][1] is txn
    assert txn.state is ServerState.TERMINATED
    assert_clean(clock, layer)


def test_timer_g_and_h_follow_configured_timers() -> None:
    """With T1 = 0.1 s and T2 = 0.4 s, G goes 0.1, 0.2, 0.4, 0.4... and H fires at 6.4 s."""
    clock, wire, tu, layer = make_layer(TimerConfig(t1=0.1, t2=0.4, t4=1.0))
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 500, to_tag="b"))
    layer.receive(request(), UAC)
    run(clock, 6.39)
    assert "timeout" not in tu.kinds()
    run(clock, 6.41)
    assert tu.kinds() == ["request", "timeout"]
    gaps = [round(b - a, 6) for a, b in pairwise(wire.times)]
    assert gaps[:3] == [0.1, 0.2, 0.4] and set(gaps[3:]) == {0.4}
    assert_clean(clock, layer)


def test_ack_confirms_and_timer_i_absorbs_acks() -> None:
    """The ACK stops Timer G and H; in Confirmed ACKs and INVITEs are absorbed for T4."""
    clock, wire, tu, layer = make_layer()
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 603, to_tag="d1"))
    invite = request()
    layer.receive(invite, UAC)
    txn = only_txn(tu)
    clock.advance(0.5)  # one Timer G retransmission
    layer.receive(request(), UAC)  # retransmitted INVITE in Completed: final again
    assert wire.statuses() == [603, 603, 603]
    clock.advance(0.3)
    layer.receive(ack_for(invite, "d1"), UAC)
    assert txn.state is ServerState.CONFIRMED
    sends = len(wire.sent)
    layer.receive(ack_for(invite, "d1"), UAC)
    layer.receive(request(), UAC)
    run(clock, 5.79)
    assert len(wire.sent) == sends  # no G any more, nothing answered in Confirmed
    assert txn.state is ServerState.CONFIRMED
    run(clock, 5.81)  # Timer I = T4 = 5 s after the ACK at 0.8 s
    assert txn.state is ServerState.TERMINATED
    assert tu.kinds() == ["request"]  # neither ACK reached the TU, no timeout
    assert_clean(clock, layer)


def test_respond_after_final_is_refused() -> None:
    """A second final on a Completed transaction raises TransactionError."""
    clock, _wire, tu, layer = make_layer()
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 404, to_tag="n"))
    layer.receive(request(), UAC)
    txn = only_txn(tu)
    with pytest.raises(TransactionError, match="404 on the INVITE"):
        txn.respond(make_response(txn.request, 404, to_tag="n"))
    with pytest.raises(TransactionError):
        txn.respond(make_response(txn.request, 200, to_tag="n"))
    layer.close()
    with pytest.raises(TransactionError):
        txn.respond(make_response(txn.request, 180, to_tag="n"))
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# INVITE server transaction: 2xx, Accepted and Timer L (RFC 6026)
# --------------------------------------------------------------------------


def test_2xx_enters_accepted_until_timer_l() -> None:
    """After a 2xx: retransmitted INVITEs are absorbed, the TU's further 2xx are sent,
    ACKs go to the TU, and Timer L ends the transaction after 64*T1."""
    clock, wire, tu, layer = make_layer()
    invite = request()
    layer.receive(invite, UAC)
    txn = only_txn(tu)
    clock.advance(2.0)
    ok = make_response(invite, 200, to_tag="ok1")
    txn.respond(ok)
    assert txn.state is ServerState.ACCEPTED
    assert wire.statuses() == [100, 200]
    layer.receive(request(), UAC)
    assert wire.statuses() == [100, 200]  # absorbed: the TU retransmits 2xx itself
    txn.respond(ok)
    assert wire.statuses() == [100, 200, 200]
    assert wire.data[-1] == wire.data[-2]
    with pytest.raises(TransactionError):
        txn.respond(make_response(invite, 486, to_tag="ok1"))
    with pytest.raises(TransactionError):
        txn.respond(make_response(invite, 180, to_tag="ok1"))

    same_branch_ack = ack_for(invite, "ok1")
    layer.receive(same_branch_ack, UAC)  # RFC 6026 §8.7: passed up
    layer.receive(ack_for(invite, "ok1", branch="z9hG4bKack2xx"), UAC)
    assert tu.kinds() == ["request", "ack", "ack"]
    assert tu.events[1][1] is same_branch_ack
    assert txn.state is ServerState.ACCEPTED
    clock.advance(31.99)
    assert txn.state is ServerState.ACCEPTED
    clock.advance(0.02)  # Timer L = 32 s after the 2xx at 2 s
    assert txn.state is ServerState.TERMINATED
    with pytest.raises(TransactionError):
        txn.respond(ok)
    assert_clean(clock, layer)


def test_timer_l_follows_configured_t1() -> None:
    """Timer L is 64*T1: 6.4 s with T1 = 0.1 s."""
    clock, _, tu, layer = make_layer(TimerConfig(t1=0.1, t2=1.0, t4=1.0))
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 200, to_tag="x"))
    layer.receive(request(), UAC)
    clock.advance(6.39)
    assert layer.server_count == 1
    clock.advance(0.02)
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# non-INVITE server transaction
# --------------------------------------------------------------------------


def test_non_invite_trying_absorbs_and_completed_resends_final_until_timer_j() -> None:
    """Trying absorbs retransmissions silently; Completed answers them with the final;
    Timer J (64*T1 for UDP) ends the transaction."""
    clock, wire, tu, layer = make_layer()
    options = request("OPTIONS")
    layer.receive(options, UAC)
    txn = only_txn(tu)
    layer.receive(request("OPTIONS"), UAC)
    assert wire.sent == [] and tu.kinds() == ["request"]
    clock.advance(1.0)
    txn.respond(make_response(options, 200, to_tag="o1"))
    assert txn.state is ServerState.COMPLETED
    clock.advance(10.0)
    layer.receive(request("OPTIONS"), UAC)
    assert wire.statuses() == [200, 200]
    assert wire.data[0] is wire.data[1]
    with pytest.raises(TransactionError):
        txn.respond(make_response(options, 200, to_tag="o1"))
    clock.advance(21.99)
    assert txn.state is ServerState.COMPLETED
    clock.advance(0.02)  # J = 32 s after the final at 1 s
    assert txn.state is ServerState.TERMINATED
    assert tu.kinds() == ["request"]
    # After J, the same request is new again.
    layer.receive(request("OPTIONS"), UAC)
    assert tu.kinds() == ["request", "request"]
    layer.close()
    assert_clean(clock, layer)


def test_non_invite_proceeding_resends_last_provisional() -> None:
    """In Proceeding a retransmitted non-INVITE request gets the latest 1xx."""
    clock, wire, tu, layer = make_layer()
    layer.receive(request("SUBSCRIBE"), UAC)
    txn = only_txn(tu)
    txn.respond(make_response(txn.request, 100))
    assert txn.state is ServerState.PROCEEDING
    layer.receive(request("SUBSCRIBE"), UAC)
    assert wire.statuses() == [100, 100]
    txn.respond(make_response(txn.request, 202, to_tag="s1"))
    assert txn.state is ServerState.COMPLETED
    clock.advance(32)
    assert_clean(clock, layer)


def test_timer_j_follows_configured_t1() -> None:
    """Timer J is 64*T1: 6.4 s with T1 = 0.1 s."""
    clock, _, tu, layer = make_layer(TimerConfig(t1=0.1, t2=1.0, t4=1.0))
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 200, to_tag="x"))
    layer.receive(request("BYE"), UAC)
    clock.advance(6.39)
    assert layer.server_count == 1
    clock.advance(0.02)
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_transport_error_on_respond_informs_tu_and_terminates() -> None:
    """An OSError from send terminates the transaction and reaches the TU (§17.2.4)."""
    clock, wire, tu, layer = make_layer()
    layer.receive(request("OPTIONS"), UAC)
    txn = only_txn(tu)
    wire.fail = OSError(101, "Network is unreachable")
    txn.respond(make_response(txn.request, 200, to_tag="e"))
    assert tu.kinds() == ["request", "transport_error"]
    assert tu.events[1][1] is txn and tu.events[1][2] is wire.fail
    assert txn.state is ServerState.TERMINATED
    assert_clean(clock, layer)


def test_transport_error_on_timer_g_informs_tu_and_terminates() -> None:
    """A failing Timer G retransmission ends the transaction and tells the TU."""
    clock, wire, tu, layer = make_layer()
    tu.on_request = lambda r, txn: txn.respond(make_response(r, 486, to_tag="b"))
    layer.receive(request(), UAC)
    wire.fail = OSError(111, "Connection refused")
    clock.advance(0.5)
    assert tu.kinds() == ["request", "transport_error"]
    assert_clean(clock, layer)


def test_tu_exception_is_answered_with_500() -> None:
    """A TU that raises on a new request leaves no hanging transaction: the peer gets 500."""
    clock, wire, tu, layer = make_layer()

    def broken(r: Request, txn: ServerTransaction) -> None:
        raise RuntimeError("handler bug")

    tu.on_request = broken
    layer.receive(request(), UAC)
    [resp] = wire.messages()
    assert isinstance(resp, Response) and resp.status == 500 and resp.to.tag
    clock.advance(32)
    assert tu.kinds() == ["request", "timeout"]  # no ACK came: Timer H
    assert_clean(clock, layer)


def test_tu_parse_error_is_answered_with_its_status() -> None:
    """A SipParseError raised by the TU becomes its own status (400 here)."""
    clock, wire, tu, layer = make_layer()

    def picky(r: Request, txn: ServerTransaction) -> None:
        raise BadRequest("malformed Contact")

    tu.on_request = picky
    layer.receive(request("MESSAGE"), UAC)
    [resp] = wire.messages()
    assert isinstance(resp, Response) and resp.status == 400
    assert resp.reason == "malformed Contact"
    clock.advance(32)
    assert_clean(clock, layer)
