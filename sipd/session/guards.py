"""The guards the state table names: pure functions of a session's data and an event.

A guard reads; it never sends, starts or changes anything. Negotiation results
are memoised per event on the session (:meth:`UnifiedSession.memo`) so that
the action that applies them does not negotiate again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sipd.errors import SdpError, SipdError
from sipd.sdp import Direction, SessionDescription
from sipd.session import events as ev
from sipd.session.negotiation import Answered, answer_offer, offer_is_hold, read_answer
from sipd.session.session import UnifiedSession
from sipd.sip.address import NameAddr
from sipd.sip.body import sdp_body
from sipd.sip.uri import Uri

__all__ = [
    "GUARDS",
    "ack_answer",
    "answer_to_2xx",
    "offer_answer",
    "redirect_target",
    "reoffer_answer",
]


# -- negotiation results shared by guards and actions -------------------------------------
def answer_to_2xx(s: UnifiedSession, event: ev.Answered) -> Answered | SdpError:
    """The SDP answer in the 2xx to our INVITE, negotiated against our offer."""

    def compute() -> Answered | SdpError:
        if s.local_sdp is None:
            return SdpError("we made no offer")
        return read_answer(s.local_sdp, sdp_body(event.response) or b"", "2xx")

    return s.memo("answer", event, compute)


def offer_answer(s: UnifiedSession, event: object) -> Answered | SdpError | None:
    """Our answer to the INVITE's offer; None for an INVITE without SDP (delayed offer)."""

    def compute() -> Answered | SdpError | None:
        request = s.signalling.invite_request
        body = sdp_body(request) if request is not None else None
        if not body:
            return None
        context = s.sdp_context(unbound=True)
        # The IncomingCall row and the accept after it check the same offer:
        # negotiate once unless our side (codecs, SRTP policy...) changed between.
        cached = s.offer_cache
        if cached is not None and cached[0] is request and cached[1] == context:
            return cached[2]  # type: ignore[return-value]
        result = answer_offer(body, context)
        s.offer_cache = (request, context, result)
        return result

    return s.memo("offer", event, compute)


def ack_answer(s: UnifiedSession, event: ev.AckReceived) -> Answered | SdpError | None:
    """The answer in the ACK to the offer in our 200 (delayed offer); None if none was due."""

    def compute() -> Answered | SdpError | None:
        if s.negotiation is not None or s.local_sdp is None:
            return None
        # RFC 3261 §13.2.1: an ACK without a usable SDP body is no answer.
        body = sdp_body(event.request) if event.request is not None else None
        return read_answer(s.local_sdp, body or b"", "ACK")

    return s.memo("ack", event, compute)


def reoffer_answer(s: UnifiedSession, event: ev.RemoteReinvite) -> Answered | SdpError:
    """Our answer to the peer's re-INVITE/UPDATE offer.

    An offerless re-INVITE gets our current SDP again (§14.2). While we hold
    the call our answer keeps it held (sendonly) instead of resuming silently.
    """

    def compute() -> Answered | SdpError:
        if s.media is None or s.local_sdp is None or s.negotiation is None:
            return SdpError("no media for this call")
        body = sdp_body(event.request)
        if not body:
            return Answered(s.remote_sdp or s.local_sdp, s.negotiation)
        direction = Direction.SENDONLY if _we_hold(s.local_sdp) else Direction.SENDRECV
        return answer_offer(body, s.sdp_context(), direction)

    return s.memo("reoffer", event, compute)


def _we_hold(local: SessionDescription) -> bool:
    """True when our SDP in force only sends (or nothing): we hold the call."""
    audio = local.audio
    return audio is not None and local.direction_of(audio) in (
        Direction.SENDONLY,
        Direction.INACTIVE,
    )


def redirect_target(s: UnifiedSession, event: ev.Rejected) -> Uri | None:
    """The Contact of a 3xx to try next (highest ``q`` first), if one may be followed."""
    limit = s.config.follow_redirects
    response = event.response
    if not 300 <= event.status < 400 or s.redirects >= limit or response is None:
        return None
    try:
        contacts = response.contacts
    except SipdError:
        return None

    def q(contact: NameAddr) -> float:
        try:
            return float(contact.param("q") or 1.0)
        except ValueError:
            return 0.0

    for contact in sorted(contacts, key=q, reverse=True):
        if contact.uri.scheme in ("sip", "sips") and contact.uri not in s.tried:
            return contact.uri.replace(headers=())
    return None


# -- the guards ---------------------------------------------------------------------------
def _answer_acceptable(s: UnifiedSession, event: ev.Answered) -> bool:
    return isinstance(answer_to_2xx(s, event), Answered)


def _offer_acceptable(s: UnifiedSession, event: object) -> bool:
    return not isinstance(offer_answer(s, event), SdpError)


def _offer_unusable(s: UnifiedSession, event: object) -> bool:
    return isinstance(offer_answer(s, event), SdpError)


def _handler_answers(s: UnifiedSession, event: ev.IncomingCall) -> bool:
    return not event.offer


def _ack_answer_usable(s: UnifiedSession, event: ev.AckReceived) -> bool:
    return not isinstance(ack_answer(s, event), SdpError)


def _redirect_allowed(s: UnifiedSession, event: ev.Rejected) -> bool:
    return redirect_target(s, event) is not None


def _request_terminated(s: UnifiedSession, event: ev.Rejected) -> bool:
    return event.status == 487


def _timed_out(s: UnifiedSession, event: ev.InviteTimeout) -> bool:
    return event.status == 408


def _transport_broke(s: UnifiedSession, event: ev.InviteTimeout) -> bool:
    return event.transport_error


def _reoffer_acceptable(s: UnifiedSession, event: ev.RemoteReinvite) -> bool:
    return isinstance(reoffer_answer(s, event), Answered)


def _offer_is_hold(s: UnifiedSession, event: ev.RemoteReinvite) -> bool:
    return offer_is_hold(sdp_body(event.request) or b"")


def _transfer_allowed(s: UnifiedSession, event: ev.ReferReceived) -> bool:
    return event.allowed and event.target is not None


def _transfer_succeeded(s: UnifiedSession, event: ev.TransferProgress) -> bool:
    return event.status is not None and 200 <= event.status < 300


def _transfer_failed(s: UnifiedSession, event: ev.TransferProgress) -> bool:
    return event.status is not None and event.status >= 300


def _refresh_gone(s: UnifiedSession, event: ev.RefreshFailed) -> bool:
    # RFC 4028 §7.4: a refresh that times out or gets 481 means the session is gone.
    return event.status in (408, 481)


GUARDS: dict[str, Callable[[UnifiedSession, Any], bool]] = {
    "RefreshGone": _refresh_gone,
    "AnswerAcceptable": _answer_acceptable,
    "OfferAcceptable": _offer_acceptable,
    "HandlerAnswers": _handler_answers,
    "OfferUnusable": _offer_unusable,
    "AckAnswerUsable": _ack_answer_usable,
    "RedirectAllowed": _redirect_allowed,
    "RequestTerminated": _request_terminated,
    "TimedOut": _timed_out,
    "TransportBroke": _transport_broke,
    "ReofferAcceptable": _reoffer_acceptable,
    "OfferIsHold": _offer_is_hold,
    "TransferAllowed": _transfer_allowed,
    "TransferSucceeded": _transfer_succeeded,
    "TransferFailedStatus": _transfer_failed,
}
