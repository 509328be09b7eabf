"""An INVITE answered with a provisional and then nothing does not live for ever.

RFC 3261 gives the INVITE client transaction no timer in Proceeding: the TU
decides how long to wait. Found by bench/fuzz.py: a peer that answers our
re-INVITE (a hold, a session refresh) with 180 and never with a final
response kept that transaction for good. Where no human is asked (a
re-INVITE), and after a CANCEL (RFC 3261 §9.1: 64*T1 without the 487), the
dialog layer now limits Proceeding, and the call hears 408.
"""

from __future__ import annotations

from sipd.session import events as ev
from sipd.sip.message import Request, Response, make_response, parse_message
from sipd.sip.transaction import ClientState, new_branch
from sipd.sip.uri import parse_uri
from tests.unit.test_transaction_layer import UAS, Outcome, assert_clean, make_layer, request
from tests.unit.test_unsendable_dialogs import (
    PEER,
    SDP,
    Uas,
    in_dialog,
    invite,
    no_dns,  # noqa: F401 - autouse: no DNS query
)

# -- the transaction ------------------------------------------------------------------


def test_without_a_limit_proceeding_waits_as_rfc_3261_says() -> None:
    clock, _, _, layer = make_layer()
    invite_req = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(invite_req, UAS, out.on_response, out.on_timeout, out.on_error)
    layer.receive(_response(invite_req, 180), UAS)
    clock.advance(3600)
    assert txn.state is ClientState.PROCEEDING and out.timeouts == 0
    txn.terminate()


def test_a_proceeding_limit_ends_the_transaction_with_a_timeout() -> None:
    clock, _, _, layer = make_layer()
    invite_req = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(
        invite_req, UAS, out.on_response, out.on_timeout, out.on_error, proceeding_limit=32.0
    )
    clock.advance(0.2)
    layer.receive(_response(invite_req, 180), UAS)
    clock.advance(31.9)
    assert out.timeouts == 0
    clock.advance(0.1)
    assert out.timeouts == 1 and txn.state is ClientState.TERMINATED
    assert_clean(clock, layer)


def test_a_final_response_within_the_limit_cancels_it() -> None:
    clock, _, _, layer = make_layer()
    invite_req = request(branch=new_branch())
    out = Outcome()
    layer.send_request(
        invite_req, UAS, out.on_response, out.on_timeout, out.on_error, proceeding_limit=32.0
    )
    layer.receive(_response(invite_req, 180), UAS)
    clock.advance(10)
    layer.receive(_response(invite_req, 486), UAS)
    clock.advance(100)
    assert out.statuses == [180, 486] and out.timeouts == 0
    assert_clean(clock, layer)


def test_limit_proceeding_when_already_proceeding_runs_from_now() -> None:
    clock, _, _, layer = make_layer()
    invite_req = request(branch=new_branch())
    out = Outcome()
    txn = layer.send_request(invite_req, UAS, out.on_response, out.on_timeout, out.on_error)
    layer.receive(_response(invite_req, 180), UAS)
    clock.advance(100)
    txn.limit_proceeding(32.0)
    clock.advance(31)
    assert out.timeouts == 0
    clock.advance(1)
    assert out.timeouts == 1
    assert_clean(clock, layer)


# -- the dialog layer -----------------------------------------------------------------


def test_a_reinvite_answered_only_with_180_fails_with_408_after_64_t1() -> None:
    uas = Uas()
    uas.receive(invite(), SDP)
    leg = uas.legs[0]
    uas.receive(in_dialog("ACK", leg.local_tag, 1))
    uas.sent.clear()
    uas.adapter.reinvite(leg, SDP)
    reinvite = _sent_request(uas, "INVITE")
    uas.layer.receive(_response(reinvite, 180, to_tag="a1"), PEER)
    uas.clock.advance(32.5)  # 64*T1 with the default T1
    failed = uas.events[-1]
    assert isinstance(failed, ev.ReinviteFailed) and failed.status == 408
    uas.adapter.release(leg)
    uas.run_out()


def test_a_cancelled_invite_without_its_487_ends_64_t1_after_the_cancel() -> None:
    """RFC 3261 §9.1: the CANCEL got its 200, the 487 never came: InviteTimeout(408)."""
    uac = Uas()
    leg = uac.adapter.invite(parse_uri("sip:alice@127.0.0.1:5070"), SDP)
    sent_invite = _sent_request(uac, "INVITE")
    uac.layer.receive(_response(sent_invite, 180, to_tag="t9"), PEER)
    uac.adapter.cancel(leg)
    cancel = _sent_request(uac, "CANCEL")
    uac.layer.receive(_response(cancel, 200, to_tag="t9"), PEER)
    uac.clock.advance(31.9)
    assert not any(isinstance(e, ev.InviteTimeout) for e in uac.events)
    uac.clock.advance(0.2)
    timeout = uac.events[-1]
    assert isinstance(timeout, ev.InviteTimeout) and timeout.status == 408
    uac.adapter.release(leg)
    uac.run_out()


def _response(req: Request, status: int, to_tag: str | None = "a6c85cf") -> Response:
    message = parse_message(make_response(req, status, to_tag=to_tag).to_bytes())
    assert isinstance(message, Response)
    return message


def _sent_request(uas: Uas, method: str) -> Request:
    found = [parse_message(data) for data, _ in uas.sent]
    requests = [m for m in found if isinstance(m, Request) and m.method == method]
    assert requests, f"no {method} was sent"
    return requests[-1]
