"""The actions the state table names.

Each is a small synchronous function of a session and the event being
handled: it changes the session's data, gives commands to its signalling and
media ports, and posts follow-up events to the session's one queue. None of
them calls the machine, starts a timer or answers SIP itself; what a failing
row reports comes from the row's ``error`` column
(:mod:`sipd.session.failures`), what it answers from its ``answer`` column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sipd.errors import CallError, CallFailed, SdpError
from sipd.logs import Logger
from sipd.sdp import SessionDescription, reoffer
from sipd.session import events as ev
from sipd.session import session_timer
from sipd.session.failures import build_error
from sipd.session.guards import (
    ack_answer,
    answer_to_2xx,
    offer_answer,
    redirect_target,
    reoffer_answer,
)
from sipd.session.negotiation import (
    Answered,
    make_offer,
    media_changed,
    read_answer,
    same_session,
)
from sipd.session.session import UnifiedSession
from sipd.session.table_model import Role
from sipd.sip.body import sdp_body
from sipd.sip.message import Request, Response
from sipd.sip.validate import quoted_text

__all__ = ["ACTIONS"]

_log = Logger()


def _row_error(s: UnifiedSession, event: object) -> CallError:
    """The error the running row's ``error`` column describes, filled in for ``event``."""
    row = s.machine.current_row
    spec = row.error if row is not None else None
    if spec is None:
        return CallFailed(f"call with {s.remote_uri} failed on {type(event).__name__}")
    context = s.error_context()
    context["detail"] = _negotiation_error(s, event)
    context["warning"] = _peer_warning(event)
    return build_error(spec, event, context)


def _peer_warning(event: object) -> str:
    """The text of a final response's Warning header (RFC 3261 §20.43) as " (text)".

    A 488's Warning is where the callee says why (sipd writes the SDP or SRTP
    problem there); '' when the event has no response or the response none.
    """
    response = getattr(event, "response", None)
    if not isinstance(response, Response):
        return ""
    value = response.headers.get("Warning")
    if not value:
        return ""
    _, quote, rest = value.partition('"')
    text = rest.rpartition('"')[0] if quote else value
    text = "".join(c for c in text if c.isprintable()).strip()[:200]
    return f" ({text})" if text else ""


def _negotiation_error(s: UnifiedSession, event: object) -> str:
    """Why negotiating this event's SDP failed, for error texts ('' if it did not)."""
    if isinstance(event, ev.Answered):
        result: object = answer_to_2xx(s, event)
    elif isinstance(event, ev.Accept | ev.IncomingCall):
        result = offer_answer(s, event)
    else:
        return ""
    return str(result) if isinstance(result, SdpError) else ""


# -- setting up ------------------------------------------------------------------------
def _allocate_media(s: UnifiedSession, event: object) -> None:
    s.media_port.open()
    if s.role is Role.UAC:
        s.local_sdp = make_offer(s.sdp_context())


def _send_invite(s: UnifiedSession, event: object) -> None:
    assert s.target is not None and s.local_sdp is not None
    config = s.config
    headers = list(s.extra_headers)
    if config.session_expires:
        headers += session_timer.offer_headers(config.session_expires, config.min_se)
    try:
        s.signalling.invite(s.target, s.local_sdp.to_bytes(), headers, s.proxy)
    except CallError as exc:
        s.post(ev.InviteTimeout(503, str(exc)))


def _follow_redirect(s: UnifiedSession, event: ev.Rejected) -> None:
    target = redirect_target(s, event)
    assert target is not None
    s.redirects += 1
    if s.target is not None:
        s.tried.append(s.target)  # never go back to where we were sent away from
    s.tried.append(target)
    _log.info(
        "call {session_id} redirected ({status}) to {target}",
        session_id=s.id,
        call_id=s.call_id,
        status=event.status,
        target=str(target),
    )
    s.target = target
    s.remote_uri = str(target)
    s.proxy = s.services.route_for(target)
    _send_invite(s, event)


def _notify_ringing(s: UnifiedSession, event: object) -> None:
    return None


def _send_ack(s: UnifiedSession, event: object) -> None:
    s.signalling.ack()


def _apply_answer(s: UnifiedSession, event: ev.Answered) -> None:
    result = answer_to_2xx(s, event)
    assert isinstance(result, Answered)
    s.negotiation = result.result
    s.remote_sdp = result.remote
    if event.response.contacts:
        s.remote_uri = str(event.response.to.uri)
    s.peer_allow = _allow(event.response)
    s.session_timer = session_timer.from_response(event.response)
    s.refreshed_at = s.services.clock.seconds()


def _start_media(s: UnifiedSession, event: object) -> None:
    if s.media is not None and s.negotiation is not None:
        s.media_port.start(s.negotiation)


def _stop_media(s: UnifiedSession, event: object) -> None:
    s.media_port.stop()


def _notify_answered(s: UnifiedSession, event: object) -> None:
    s.answered_at = s.services.clock.seconds()
    s.answer_outcome.succeed(None, s.later)


def _notify_failed(s: UnifiedSession, event: object) -> None:
    error = _row_error(s, event)
    if s.failure is None:
        s.failure = error
    s.answer_outcome.fail(error, s.later)


def _send_cancel(s: UnifiedSession, event: object) -> None:
    s.signalling.cancel()


def _send_bye(s: UnifiedSession, event: object) -> None:
    s.signalling.bye()


# -- answering ----------------------------------------------------------------------------
def _send_ringing(s: UnifiedSession, event: object) -> None:
    if s.config.send_ringing:
        s.signalling.ringing()


def _offer_to_application(s: UnifiedSession, event: object) -> None:
    s.services.offer_incoming(s)


def _apply_offer(s: UnifiedSession, event: object) -> None:
    request = s.signalling.invite_request
    if request is not None:
        config = s.config
        s.peer_allow = _allow(request)
        s.session_timer = session_timer.uas_timer(request, config.session_expires, config.min_se)
        s.refreshed_at = s.services.clock.seconds()
    result = offer_answer(s, event)
    if result is None:
        # Delayed offer: our 200 carries the offer; media starts on the ACK.
        s.local_sdp = make_offer(s.sdp_context())
        return
    assert isinstance(result, Answered)
    s.remote_sdp = result.remote
    s.negotiation = result.result
    s.local_sdp = result.result.answer


def _apply_ack_answer(s: UnifiedSession, event: ev.AckReceived) -> None:
    result = ack_answer(s, event)
    if isinstance(result, Answered):
        s.negotiation = result.result
        s.remote_sdp = result.remote


def _send_ok(s: UnifiedSession, event: object) -> None:
    assert s.local_sdp is not None
    request = s.signalling.invite_request
    headers = session_timer.answer_headers(s.session_timer, request) if request else []
    s.signalling.answer(s.local_sdp.to_bytes(), headers)


def _send_reject(s: UnifiedSession, event: object) -> None:
    row = s.machine.current_row
    if isinstance(event, ev.Reject):
        s.signalling.reject(event.code, event.reason or None)
    elif row is not None and row.answer is not None:
        s.signalling.reject(row.answer)


def _warning(error: object) -> list[tuple[str, str]]:
    text = quoted_text(str(error))  # the error may quote the peer's SDP
    return [("Warning", f"399 sipd {text}")] if isinstance(error, SdpError) else []


def _send_not_acceptable(s: UnifiedSession, event: object) -> None:
    s.signalling.reject(488, headers=_warning(offer_answer(s, event)))


def _send_request_terminated(s: UnifiedSession, event: object) -> None:
    s.signalling.reject(487)


def _cleanup(s: UnifiedSession, event: object) -> None:
    """The call is over: release what it holds and tell everyone who waits."""
    if s.operations:
        s.settle_operations(CallFailed(f"call with {s.remote_uri} ended"))
    s.ended_at = s.services.clock.seconds()
    s.media_port.close()
    s.signalling.release()
    s.services.session_ended(s)
    s.answer_outcome.fail(CallFailed(f"call with {s.remote_uri} ended"), s.later)
    s.end_outcome.succeed(None, s.later)


# -- hold, resume and re-offers ---------------------------------------------------------
def _send_reoffer(s: UnifiedSession, direction: str) -> None:
    if s.local_sdp is None:
        s.post(ev.ReinviteFailed(481, "No Dialog"))
        return
    offer = reoffer(s.local_sdp, direction=direction)
    s.pending_offer = offer
    # A re-INVITE refreshes the session too (RFC 4028 §9): it says the interval.
    timer = s.session_timer
    headers = session_timer.refresh_headers(timer, s.config.min_se) if timer else []
    s.signalling.reinvite(offer.to_bytes(), headers)


def _send_hold_reinvite(s: UnifiedSession, event: object) -> None:
    _send_reoffer(s, "sendonly")


def _send_resume_reinvite(s: UnifiedSession, event: object) -> None:
    _send_reoffer(s, "sendrecv")


def _apply_reanswer(s: UnifiedSession, event: ev.ReinviteAnswered) -> None:
    if s.session_timer is not None:
        _refreshed_by_answer(s, event.response, pending=s.refresh_sent_at)
    offer, s.pending_offer = s.pending_offer, None
    if offer is None:
        return
    result = read_answer(offer, sdp_body(event.response) or b"", "2xx")
    if isinstance(result, SdpError):
        _log.warn(
            "answer to our re-offer is unusable: {error}", error=str(result), call_id=s.call_id
        )
        return
    s.remote_sdp = result.remote
    s.local_sdp = offer
    s.sdp_version = offer.origin.session_version
    s.negotiation = result.result
    if s.media is not None:
        s.media_port.start(result.result)


def _restore_sdp(s: UnifiedSession, event: object) -> None:
    s.pending_offer = None


def _notify_reinvite_done(s: UnifiedSession, event: object) -> None:
    s.settle_operations(None)


def _notify_operation_failed(s: UnifiedSession, event: object) -> None:
    s.settle_operations(_row_error(s, event))


def _answer_reinvite(s: UnifiedSession, event: ev.RemoteReinvite) -> None:
    result = reoffer_answer(s, event)
    if not isinstance(result, Answered) or s.local_sdp is None:
        return
    if sdp_body(event.request):
        s.remote_sdp = result.remote
        answer: SessionDescription = result.result.answer
        if same_session(answer, s.local_sdp):
            answer = s.local_sdp  # nothing changed: same SDP, same version (RFC 3264 §8)
        else:
            s.sdp_version += 1
            answer.origin = dataclasses.replace(answer.origin, session_version=s.sdp_version)
        changed = media_changed(s.negotiation, result.result)
        s.local_sdp = answer
        s.negotiation = result.result
        if changed and s.media is not None:
            s.media_port.start(result.result)
    # Any re-INVITE refreshes the session (RFC 4028 §9).
    headers = _refreshed_by_peer(s, event.request)
    s.signalling.answer_reoffer(event.txn, 200, s.local_sdp.to_bytes(), headers)


def _reject_reoffer(s: UnifiedSession, event: ev.RemoteReinvite) -> None:
    s.signalling.answer_reoffer(event.txn, 488, b"", _warning(reoffer_answer(s, event)))


def _send_request_pending(s: UnifiedSession, event: ev.RemoteReinvite) -> None:
    s.signalling.answer_reoffer(event.txn, 491, b"", [("Retry-After", "1")])


# -- session timers (RFC 4028) -------------------------------------------------------------
def _allow(message: Request | Response) -> frozenset[str]:
    """The methods a message's Allow header lists."""
    return frozenset(
        method.strip().upper()
        for value in message.headers.get_all("Allow")
        for method in value.split(",")
        if method.strip()
    )


def _refreshed_by_peer(s: UnifiedSession, request: Request) -> list[tuple[str, str]]:
    """The peer refreshed the session: take its interval, say ours in the answer."""
    config = s.config
    s.session_timer = session_timer.uas_timer(request, config.session_expires, config.min_se)
    s.refreshed_at = s.services.clock.seconds()
    return session_timer.answer_headers(s.session_timer, request)


def _send_refresh(s: UnifiedSession, event: object) -> None:
    timer = s.session_timer
    if timer is None:
        return
    method = "UPDATE" if s.refresh_method == "UPDATE" and "UPDATE" in s.peer_allow else "INVITE"
    sdp = s.local_sdp.to_bytes() if method == "INVITE" and s.local_sdp is not None else None
    s.refresh_sent_at = s.services.clock.seconds()
    s.signalling.refresh(method, sdp, session_timer.refresh_headers(timer, s.config.min_se))


def _refreshed_by_answer(
    s: UnifiedSession, response: Response, pending: float | None = None
) -> None:
    """A 2xx to our refresh (or re-offer) settles the interval (RFC 4028 §7.2).

    A peer without timer support answers without Session-Expires: we keep
    timing the session ourselves rather than let the keep-alive lapse.
    """
    settled = session_timer.from_response(response)
    if settled is not None or session_timer.supports_timer(response):
        s.session_timer = settled
    s.refreshed_at = s.services.clock.seconds()
    s.refresh_sent_at = pending  # a re-offer's answer leaves our own refresh in flight


def _apply_refresh(s: UnifiedSession, event: ev.RefreshAnswered) -> None:
    _refreshed_by_answer(s, event.response)


def _retry_refresh(s: UnifiedSession, event: ev.RefreshFailed) -> None:
    """A refresh refused for a reason that does not end the call: try again.

    405/501: the peer has no UPDATE after all, re-INVITE next time; 422: ask
    for its Min-SE at once (RFC 4028 §7.3); anything else: a little later.
    """
    now = s.services.clock.seconds()
    timer = s.session_timer
    s.refresh_sent_at = None
    if event.status in (405, 501):
        s.refresh_method = "INVITE"
    if event.min_se is not None and timer is not None and event.min_se > timer.interval:
        s.session_timer = session_timer.SessionTimer(event.min_se, timer.we_refresh)
        return
    interval = timer.interval if timer is not None else 90
    s.refresh_not_before = now + min(10.0, interval / 8)


def _answer_refresh(s: UnifiedSession, event: ev.RemoteRefresh) -> None:
    headers = _refreshed_by_peer(s, event.request)
    s.signalling.answer_request(event.txn, 200, headers)


# -- transfer ------------------------------------------------------------------------------
def _send_refer(s: UnifiedSession, event: ev.Transfer) -> None:
    s.signalling.refer(event.target)


def _notify_transferred(s: UnifiedSession, event: object) -> None:
    s.settle_operations(None)


def _accept_refer(s: UnifiedSession, event: ev.ReferReceived) -> None:
    assert event.target is not None  # the TransferAllowed guard says so
    s.signalling.answer_request(event.txn, 202)
    s.signalling.notify_refer(100, "Trying", final=False)
    headers = [("Replaces", event.replaces)] if event.replaces else []
    try:
        new = s.services.place_call(event.target, headers)
    except CallError as exc:
        s.post(ev.ReferredCallFailed(503, str(exc)))
        return
    new.transferred_from = s
    s.replacement = new
    s.services.offer_transfer(s, new)

    def answered(_: object) -> None:
        s.post(ev.ReferredCallAnswered())
        s.replaced_by(new)

    def failed(failure: Any) -> None:
        error = failure.value
        status = getattr(error, "status", None) or 500
        s.post(ev.ReferredCallFailed(status, getattr(error, "reason", "") or "Call Failed"))

    new.wait_for_answer().addCallbacks(answered, failed)


def _reject_refer(s: UnifiedSession, event: ev.ReferReceived) -> None:
    s.signalling.answer_request(event.txn, 603)


def _notify_refer_success(s: UnifiedSession, event: object) -> None:
    s.signalling.notify_refer(200, "OK", final=True)


def _notify_refer_failure(s: UnifiedSession, event: ev.ReferredCallFailed) -> None:
    s.signalling.notify_refer(event.status, event.reason or "Call Failed", final=True)


def _answer_replacement(s: UnifiedSession, event: object) -> None:
    # Queued behind this transition: Incoming's Accept rows answer it.
    s.post(ev.Accept())


def _notify_replaced(s: UnifiedSession, event: ev.Replaced) -> None:
    s.replaced_by(event.session)


ACTIONS: dict[str, Callable[[UnifiedSession, Any], None]] = {
    "AllocateMedia": _allocate_media,
    "SendInvite": _send_invite,
    "FollowRedirect": _follow_redirect,
    "NotifyRinging": _notify_ringing,
    "SendAck": _send_ack,
    "ApplyAnswer": _apply_answer,
    "StartMedia": _start_media,
    "StopMedia": _stop_media,
    "NotifyAnswered": _notify_answered,
    "NotifyFailed": _notify_failed,
    "SendCancel": _send_cancel,
    "SendBye": _send_bye,
    "SendRinging": _send_ringing,
    "OfferToApplication": _offer_to_application,
    "ApplyOffer": _apply_offer,
    "ApplyAckAnswer": _apply_ack_answer,
    "SendOk": _send_ok,
    "SendReject": _send_reject,
    "SendNotAcceptable": _send_not_acceptable,
    "SendRequestTerminated": _send_request_terminated,
    "Cleanup": _cleanup,
    "SendHoldReinvite": _send_hold_reinvite,
    "SendResumeReinvite": _send_resume_reinvite,
    "ApplyReanswer": _apply_reanswer,
    "RestoreSdp": _restore_sdp,
    "NotifyReinviteDone": _notify_reinvite_done,
    "NotifyReinviteFailed": _notify_operation_failed,
    "AnswerReinvite": _answer_reinvite,
    "RejectReoffer": _reject_reoffer,
    "SendRequestPending": _send_request_pending,
    "SendRefer": _send_refer,
    "NotifyTransferred": _notify_transferred,
    "NotifyTransferFailed": _notify_operation_failed,
    "AcceptRefer": _accept_refer,
    "RejectRefer": _reject_refer,
    "NotifyReferSuccess": _notify_refer_success,
    "NotifyReferFailure": _notify_refer_failure,
    "AnswerReplacement": _answer_replacement,
    "NotifyReplaced": _notify_replaced,
    "SendRefresh": _send_refresh,
    "ApplyRefresh": _apply_refresh,
    "RetryRefresh": _retry_refresh,
    "AnswerRefresh": _answer_refresh,
}
