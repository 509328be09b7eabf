"""Tests of the client transactions (RFC 3261 §17.1, RFC 6026 §7.2, §8.4) on a task.Clock."""

from __future__ import annotations

from itertools import pairwise

import pytest

from sipd.sip.message import Request, Response, parse_message
from sipd.sip.transaction import (
    ClientState,
    TimerConfig,
    make_ack_for_non2xx,
    make_cancel,
    new_branch,
)
from tests.unit.test_transaction_layer import (
    UAS,
    Outcome,
    assert_clean,
    make_layer,
    request,
    response_to,
    run,
)

ROUTES = ("<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>")


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in pairwise(times)]


# --------------------------------------------------------------------------
# INVITE client transaction
# --------------------------------------------------------------------------


def test_timer_a_doubles_without_cap_until_timer_b() -> None:
    """Timer A retransmits after 0.5, 1, 2, 4, 8 and 16 s (not capped at T2, as
    RFC 3261 §17.1.1.2 says); Timer B at 32 s reports the timeout once."""
    clock, wire, tu, layer = make_layer()
    invite = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(invite, UAS, out.on_response, out.on_timeout)
    assert txn.state is ClientState.CALLING
    run(clock, 31.9)
    assert out.timeouts == 0
    run(clock, 32.0)
    assert wire.times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert gaps(wire.times) == [0.5, 1, 2, 4, 8, 16]
    assert out.timeouts == 1 and out.responses == []
    assert txn.state is ClientState.TERMINATED
    # Serialised once: every retransmission is the same bytes object.
    assert all(d is wire.data[0] for d in wire.data)
    assert all(addr == UAS for _, _, addr in wire.sent)
    assert tu.events == []
    assert_clean(clock, layer)


def test_timer_b_follows_configured_t1() -> None:
    """With T1 = 0.1 s, Timer A starts at 0.1 s and Timer B fires at 6.4 s."""
    clock, wire, _, layer = make_layer(TimerConfig(t1=0.1, t2=1.0, t4=1.0))
    out = Outcome()
    layer.send_request(request(branch=new_branch()), UAS, out.on_response, out.on_timeout)
    run(clock, 6.35)
    assert out.timeouts == 0
    run(clock, 6.41)
    assert out.timeouts == 1
    assert gaps(wire.times) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert_clean(clock, layer)


def test_provisional_stops_retransmissions_and_timer_b() -> None:
    """A 1xx moves Calling to Proceeding: no more retransmissions and no Timer B."""
    clock, wire, _, layer = make_layer()
    invite = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(invite, UAS, out.on_response, out.on_timeout)
    clock.advance(0.5)  # one retransmission
    layer.receive(response_to(invite, 100, to_tag=None), UAS)
    layer.receive(response_to(invite, 180), UAS)
    assert txn.state is ClientState.PROCEEDING
    assert clock.getDelayedCalls() == []
    run(clock, 100.0)
    assert len(wire.sent) == 2
    assert out.timeouts == 0 and out.statuses == [100, 180]
    layer.receive(response_to(invite, 183), UAS)
    assert out.statuses == [100, 180, 183]
    layer.receive(response_to(invite, 480), UAS)
    assert out.statuses == [100, 180, 183, 480]
    assert txn.state is ClientState.COMPLETED
    clock.advance(32)
    assert_clean(clock, layer)


def test_non2xx_final_is_acked_and_timer_d_absorbs_retransmissions() -> None:
    """A 486 is acknowledged per §17.1.1.3 and passed up once; in Completed each
    retransmitted final gets the same ACK bytes again; Timer D ends it at 32 s."""
    clock, wire, tu, layer = make_layer()
    invite = request(branch=new_branch(), routes=ROUTES, body=b"v=0\r\n")
    out = Outcome()
    txn = layer.send_request(invite, UAS, out.on_response, out.on_timeout)
    busy = response_to(invite, 486, to_tag="busy9")
    clock.advance(0.2)
    layer.receive(busy, UAS)
    assert txn.state is ClientState.COMPLETED
    assert out.statuses == [486] and out.responses[0] is busy

    ack = wire.messages()[-1]
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.call_id == invite.call_id
    assert (ack.cseq.number, ack.cseq.method) == (invite.cseq.number, "ACK")
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.to.tag == "busy9"
    assert [str(v) for v in ack.vias] == [str(invite.top_via)]
    assert ack.headers.values("Route") == list(ROUTES)
    assert ack.max_forwards == 70
    assert ack.body == b"" and ack.headers.get("Content-Length") == "0"
    assert wire.sent[-1][2] == UAS

    sends = len(wire.sent)
    clock.advance(3)
    layer.receive(response_to(invite, 486, to_tag="busy9"), UAS)
    clock.advance(20)
    layer.receive(response_to(invite, 486, to_tag="busy9"), UAS)
    assert len(wire.sent) == sends + 2
    assert wire.data[-1] is wire.data[-2] is wire.data[sends - 1]
    assert out.statuses == [486]  # retransmissions are not passed up
    run(clock, 32.19)  # D started with the final at 0.2 s
    assert txn.state is ClientState.COMPLETED
    run(clock, 32.21)
    assert txn.state is ClientState.TERMINATED
    assert out.timeouts == 0
    layer.receive(response_to(invite, 486, to_tag="busy9"), UAS)
    assert tu.kinds() == ["stray"]  # after D, a late final is no longer ours
    assert_clean(clock, layer)


def test_timer_d_runs_32_seconds_from_the_final() -> None:
    """Timer D is measured from the arrival of the final response."""
    clock, _, _, layer = make_layer()
    invite = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(invite, UAS, out.on_response, out.on_timeout)
    clock.advance(2.0)
    layer.receive(response_to(invite, 603), UAS)
    clock.advance(31.99)
    assert txn.state is ClientState.COMPLETED
    clock.advance(0.02)
    assert txn.state is ClientState.TERMINATED
    assert_clean(clock, layer)


def test_2xx_enters_accepted_and_every_2xx_is_passed_up_until_timer_m() -> None:
    """RFC 6026: a 2xx moves to Accepted; 2xx retransmissions reach the TU (each needs
    an ACK); the transaction sends no ACK itself; Timer M ends it after 64*T1."""
    clock, wire, tu, layer = make_layer()
    invite = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(invite, UAS, out.on_response, out.on_timeout)
    layer.receive(response_to(invite, 180), UAS)
    clock.advance(1)
    ok = response_to(invite, 200)
    layer.receive(ok, UAS)
    assert txn.state is ClientState.ACCEPTED
    layer.receive(response_to(invite, 200), UAS)
    layer.receive(response_to(invite, 180), UAS)  # late provisional: dropped
    layer.receive(response_to(invite, 500), UAS)  # non-2xx after a 2xx: dropped
    assert out.statuses == [180, 200, 200]
    assert len(wire.sent) == 1  # no ACK from the transaction for a 2xx
    clock.advance(31.99)
    assert txn.state is ClientState.ACCEPTED
    clock.advance(0.02)
    assert txn.state is ClientState.TERMINATED
    layer.receive(response_to(invite, 200), UAS)
    assert tu.kinds() == ["stray"]
    assert out.timeouts == 0
    assert_clean(clock, layer)


def test_timer_m_follows_configured_t1() -> None:
    """Timer M is 64*T1: 6.4 s with T1 = 0.1 s."""
    clock, _, _, layer = make_layer(TimerConfig(t1=0.1, t2=1.0, t4=1.0))
    invite = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(invite, UAS, out.on_response, out.on_timeout)
    layer.receive(response_to(invite, 200), UAS)
    clock.advance(6.39)
    assert txn.state is ClientState.ACCEPTED
    clock.advance(0.02)
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# non-INVITE client transaction
# --------------------------------------------------------------------------


def test_timer_e_doubles_capped_at_t2_until_timer_f() -> None:
    """Timer E: 0.5, 1, 2, then every 4 s (T2); Timer F at 32 s reports the timeout."""
    clock, wire, _, layer = make_layer()
    out = Outcome()
    txn = layer.send_request(
        request("OPTIONS", branch=new_branch()), UAS, out.on_response, out.on_timeout
    )
    assert txn.state is ClientState.TRYING
    run(clock, 31.95)
    assert out.timeouts == 0
    run(clock, 32.05)
    assert wire.times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert gaps(wire.times) == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert all(d is wire.data[0] for d in wire.data)
    assert out.timeouts == 1
    assert txn.state is ClientState.TERMINATED
    assert_clean(clock, layer)


def test_timer_e_fires_every_t2_in_proceeding_and_f_still_applies() -> None:
    """After a 1xx, Timer E is reset to T2 each time it fires; Timer F still ends it."""
    clock, wire, _, layer = make_layer()
    req = request("BYE", branch=new_branch())
    out = Outcome()
    txn = layer.send_request(req, UAS, out.on_response, out.on_timeout)
    clock.advance(0.2)
    layer.receive(response_to(req, 100, to_tag=None), UAS)
    assert txn.state is ClientState.PROCEEDING
    run(clock, 32.05)
    assert wire.times == [0.0, 0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    assert out.statuses == [100] and out.timeouts == 1
    assert_clean(clock, layer)


def test_e_switches_to_t2_once_proceeding_mid_backoff() -> None:
    """A 1xx arriving after the 2 s step makes the next interval T2, not 4 s doubled."""
    clock, wire, _, layer = make_layer(TimerConfig(t1=0.5, t2=3.0, t4=5.0))
    req = request("REGISTER", branch=new_branch())
    out = Outcome()
    layer.send_request(req, UAS, out.on_response, out.on_timeout)
    run(clock, 1.6)  # sends at 0, 0.5, 1.5; next due at 3.5
    layer.receive(response_to(req, 100, to_tag=None), UAS)
    run(clock, 10.0)
    assert wire.times == [0.0, 0.5, 1.5, 3.5, 6.5, 9.5]
    layer.receive(response_to(req, 200), UAS)
    run(clock, 15.0)
    assert_clean(clock, layer)


def test_final_completes_and_timer_k_absorbs_retransmissions() -> None:
    """A final response is passed up once; retransmissions are absorbed for T4 (Timer K)."""
    clock, wire, tu, layer = make_layer()
    req = request("OPTIONS", branch=new_branch())
    out = Outcome()
    txn = layer.send_request(req, UAS, out.on_response, out.on_timeout)
    clock.advance(0.7)
    layer.receive(response_to(req, 200), UAS)
    assert txn.state is ClientState.COMPLETED
    assert out.statuses == [200]
    clock.advance(4.0)
    layer.receive(response_to(req, 200), UAS)
    assert out.statuses == [200]
    assert len(wire.sent) == 2  # original + one retransmission at 0.5 s; none after
    clock.advance(0.99)
    assert txn.state is ClientState.COMPLETED
    clock.advance(0.02)
    assert txn.state is ClientState.TERMINATED
    assert tu.events == [] and out.timeouts == 0
    assert_clean(clock, layer)


def test_timer_k_follows_t4() -> None:
    """Timer K equals the configured T4."""
    clock, _, _, layer = make_layer(TimerConfig(t4=2.5))
    req = request("INFO", branch=new_branch())
    out = Outcome()
    txn = layer.send_request(req, UAS, out.on_response, out.on_timeout)
    layer.receive(response_to(req, 404), UAS)
    clock.advance(2.49)
    assert txn.state is ClientState.COMPLETED
    clock.advance(0.02)
    assert_clean(clock, layer)


# --------------------------------------------------------------------------
# transport errors and termination by the TU
# --------------------------------------------------------------------------


def test_transport_error_on_first_send_reports_and_terminates() -> None:
    """An OSError from send reaches on_transport_error and the transaction ends (§17.1.4)."""
    clock, wire, _, layer = make_layer()
    wire.fail = OSError(101, "Network is unreachable")
    out = Outcome()
    txn = layer.send_request(
        request(branch=new_branch()), UAS, out.on_response, out.on_timeout, out.on_error
    )
    assert out.errors == [wire.fail]
    assert out.timeouts == 0
    assert txn.state is ClientState.TERMINATED
    assert_clean(clock, layer)


def test_transport_error_on_retransmission_without_error_callback_times_out() -> None:
    """Without on_transport_error, a failing retransmission is reported as a timeout."""
    clock, wire, _, layer = make_layer()
    out = Outcome()
    txn = layer.send_request(
        request("OPTIONS", branch=new_branch()), UAS, out.on_response, out.on_timeout
    )
    wire.fail = OSError(111, "Connection refused")
    clock.advance(0.5)
    assert out.timeouts == 1
    assert txn.state is ClientState.TERMINATED
    clock.advance(40)
    assert out.timeouts == 1
    assert_clean(clock, layer)


def test_failing_ack_send_terminates_quietly_after_passing_the_final_up() -> None:
    """When the ACK cannot be sent, the final response still reaches the TU, once."""
    clock, wire, _, layer = make_layer()
    invite = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(invite, UAS, out.on_response, out.on_timeout, out.on_error)
    wire.fail = OSError(101, "Network is unreachable")
    layer.receive(response_to(invite, 404), UAS)
    assert out.statuses == [404] and out.errors == [] and out.timeouts == 0
    assert txn.state is ClientState.TERMINATED
    assert_clean(clock, layer)


def test_terminate_cancels_timers_and_is_idempotent() -> None:
    """terminate() leaves no timer and no table entry and runs no callback."""
    clock, _, _, layer = make_layer()
    out = Outcome()
    txn = layer.send_request(request(branch=new_branch()), UAS, out.on_response, out.on_timeout)
    txn.terminate()
    txn.terminate()
    assert_clean(clock, layer)
    clock.advance(64)
    assert out.timeouts == 0


# --------------------------------------------------------------------------
# message builders
# --------------------------------------------------------------------------


def test_make_cancel_follows_rfc3261_section_9_1() -> None:
    """CANCEL copies Request-URI, Call-ID, To, From, CSeq number, top Via and Routes."""
    invite = request(
        branch="z9hG4bKcan1",
        routes=ROUTES,
        via="SIP/2.0/UDP 127.0.0.1:5070",
        body=b"v=0\r\n",
    )
    invite.headers.add("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKlower")
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.call_id == invite.call_id
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert (cancel.cseq.number, cancel.cseq.method) == (invite.cseq.number, "CANCEL")
    assert [v.branch for v in cancel.vias] == ["z9hG4bKcan1"]
    assert cancel.headers.values("Route") == list(ROUTES)
    assert cancel.max_forwards == 70
    assert cancel.body == b""
    # It survives a round trip through the real parser.
    parsed = parse_message(cancel.to_bytes())
    assert isinstance(parsed, Request) and parsed.cseq.method == "CANCEL"


def test_make_ack_for_non2xx_takes_to_from_response() -> None:
    """The non-2xx ACK carries the response's To (with tag) and the INVITE's top Via only."""
    invite = request(branch="z9hG4bKack1")
    invite.headers.add("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKlower")
    resp: Response = response_to(invite, 404, to_tag="nf1")
    ack = make_ack_for_non2xx(invite, resp)
    assert ack.to.tag == "nf1"
    assert [v.branch for v in ack.vias] == ["z9hG4bKack1"]
    assert ack.cseq.method == "ACK" and ack.cseq.number == invite.cseq.number
    assert "Route" not in ack.headers
