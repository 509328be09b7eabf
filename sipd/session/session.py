"""A call as the coordinator sees it: a state machine and its actions.

:class:`UnifiedSession` implements the guards and actions that the state
table names (``etc/state_table.yaml``); the table decides *when* each runs.
Actions are small and synchronous: they start I/O through the dialog and
media adapters, and what comes back arrives later as another event.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from sipd.errors import (
    CallCancelled,
    CallError,
    CallFailed,
    CallRejected,
    CallStateError,
    CallTimeout,
    SdpError,
    SipdError,
    UnhandledEvent,
)
from sipd.logs import Logger
from sipd.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    Direction,
    NegotiationResult,
    SessionDescription,
    build_offer,
    is_remote_hold,
    negotiate_answer,
    parse_sdp,
    process_answer,
    reoffer,
)
from sipd.session.interceptor import Accept
from sipd.session.machine import Event, SessionMachine, Transition
from sipd.session.state_table import Role
from sipd.sip.address import NameAddr, parse_name_addr
from sipd.sip.message import Request, Response, make_response
from sipd.sip.transaction import ServerTransaction
from sipd.sip.uri import Uri

if TYPE_CHECKING:
    from sipd.media.fanout import AudioSubscription
    from sipd.media.frame import AudioFrame
    from sipd.session.coordinator import UnifiedCoordinator
    from sipd.session.dialog_adapter import CallLeg
    from sipd.session.interceptor import InviteDetails
    from sipd.session.media_adapter import MediaSession

__all__ = ["GUARDS", "UnifiedSession"]

_log = Logger()

_CODECS = {"PCMU": PCMU, "PCMA": PCMA}


class UnifiedSession:
    """One call: its machine, its dialog leg, its media and its waiters."""

    def __init__(
        self,
        coordinator: UnifiedCoordinator,
        role: Role,
        *,
        remote_uri: str,
        local_uri: str,
        target: Uri | None = None,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.role = role
        self.coordinator = coordinator
        self.remote_uri = remote_uri
        self.local_uri = local_uri
        self.target = target
        self.leg: CallLeg | None = None
        self.media: MediaSession | None = None
        self.invite: InviteDetails | None = None
        self.local_sdp: SessionDescription | None = None
        self.remote_sdp: SessionDescription | None = None
        self.negotiation: NegotiationResult | None = None
        self.failure: CallError | None = None
        self.offer_to_application = True
        self.extra_headers: list[tuple[str, str]] = []
        #: The proxy the INVITE goes through (None: straight to the target).
        self.proxy: Uri | None = None
        self.created_at = coordinator.clock.seconds()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self._sdp_session_id = secrets.randbelow(2**31)
        self._sdp_version = 1
        self._ring_timer: IDelayedCall | None = None
        self._hangup_pending = False
        self._redirects = 0
        self._tried: list[Uri] = []
        # Mid-call operations (hold/resume/transfer) waiting for their outcome.
        self._op_waiters: list[defer.Deferred[None]] = []
        self._pending_offer: SessionDescription | None = None
        self._glare_timer: IDelayedCall | None = None
        self._transfer_waiters: list[defer.Deferred[UnifiedSession]] = []
        #: The peer-initiated REFER being served, and the call placed for it.
        self._refer_txn: object = None
        self.replacement: UnifiedSession | None = None
        self.transferred_from: UnifiedSession | None = None
        #: The call this one replaces (we accepted an INVITE with Replaces for it).
        self.replaces: UnifiedSession | None = None
        self._pending: tuple[str, NegotiationResult | SdpError] | None = None
        self._answer_waiters: list[defer.Deferred[UnifiedSession]] = []
        self._end_waiters: list[defer.Deferred[None]] = []
        self._listeners: list[Callable[[UnifiedSession, Transition], None]] = []
        # Waiter callbacks run after the machine settles, never mid-transition,
        # so user code sees the final state and may drive the call again.
        self._post: list[Callable[[], object]] = []
        self._firing = False
        self.machine: SessionMachine = coordinator.machine_factory(role).create(self)

    def __repr__(self) -> str:
        return f"<UnifiedSession {self.id} {self.role.value} {self.state}>"

    # -- reading state ------------------------------------------------------------
    @property
    def state(self) -> str:
        """The state-table state name (``Active``, ``Ringing``...)."""
        return self.machine.state

    @property
    def history(self) -> list[Transition]:
        """Every transition this session took, oldest first."""
        return list(self.machine.history)

    @property
    def path(self) -> list[str]:
        """The states visited, starting with the initial one."""
        hist = self.machine.history
        if not hist:
            return [self.state]
        return [hist[0].from_state, *(t.to_state for t in hist if not t.ignored)]

    @property
    def is_ended(self) -> bool:
        return self.machine.is_final

    @property
    def call_id(self) -> str | None:
        """The SIP Call-ID, once the INVITE exists."""
        return self.leg.call_id if self.leg else None

    @property
    def dialog_id(self) -> str | None:
        return self.leg.key if self.leg else None

    @property
    def duration(self) -> float:
        """Seconds since answer (0 if never answered)."""
        if self.answered_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self.coordinator.clock.seconds()
        return end - self.answered_at

    def add_listener(self, listener: Callable[[UnifiedSession, Transition], None]) -> None:
        """Call ``listener(session, transition)`` after every transition."""
        self._listeners.append(listener)

    # -- driving it ---------------------------------------------------------------
    def fire(self, event: str, **data: object) -> bool:
        """Feed an event; events a state has no row for are logged and dropped.

        Remote input can always arrive at an awkward moment (a BYE crossing
        ours, a late ACK); the table lists the expected ones, anything else
        must not break the call. Returns False when the event was dropped,
        so the signalling layer can still answer a request nobody took.
        """
        if self.machine.is_final:
            return False
        if self._firing:
            # Re-entered from a waiter or listener: queue behind the current event.
            self._post.append(partial(self.fire, event, **data))
            return True
        self._firing = True
        handled = True
        before = len(self.machine.history)
        try:
            self.machine.fire(event, **data)
        except UnhandledEvent as exc:
            handled = False
            _log.info(
                "call {session_id}: {event} ignored in state {state}: {exc}",
                session_id=self.id,
                call_id=self.call_id,
                event=event,
                state=self.state,
                exc=exc,
            )
        except Exception:
            _log.failure(
                "call {session_id}: action failed on {event}",
                session_id=self.id,
                call_id=self.call_id,
                event=event,
            )
        finally:
            self._firing = False
        if self._listeners:
            for transition in list(self.machine.history)[before:]:
                for listener in list(self._listeners):
                    listener(self, transition)
        while self._post:
            self._post.pop(0)()
        return handled

    def wait_for_answer(self) -> defer.Deferred[UnifiedSession]:
        """Fires with the session when answered; fails with the reason otherwise."""
        if self.answered_at is not None and self.failure is None:
            return defer.succeed(self)
        if self.failure is not None:
            return defer.fail(self.failure)
        if self.machine.is_final:
            return defer.fail(CallFailed(f"call {self.id} ended before it was answered"))
        d: defer.Deferred[UnifiedSession] = defer.Deferred()
        self._answer_waiters.append(d)
        return d

    def wait_for_end(self) -> defer.Deferred[None]:
        """Fires (with None) once the call has ended, however it ended."""
        if self.machine.is_final:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._end_waiters.append(d)
        return d

    def hangup(self) -> defer.Deferred[None]:
        """End the call (CANCEL, BYE or a decline, as the state requires)."""
        if not self.machine.is_final:
            self.fire("HangUp")
        return self.wait_for_end()

    def accept(self) -> defer.Deferred[UnifiedSession]:
        """Answer an incoming call; fires with the session once the ACK arrives."""
        if self.role is not Role.UAS:
            return defer.fail(CallStateError("only an incoming call can be accepted"))
        if self.state != "Incoming":
            return defer.fail(
                CallStateError(f"call {self.id} cannot be accepted in state {self.state}")
            )
        d = self.wait_for_answer()
        self.fire("Accept")
        return d

    def reject(self, code: int = 486, reason: str | None = None) -> defer.Deferred[None]:
        """Refuse an incoming call with a final status."""
        if self.role is not Role.UAS or self.state != "Incoming":
            return defer.fail(
                CallStateError(f"call {self.id} cannot be rejected in state {self.state}")
            )
        if not 300 <= code <= 699:
            return defer.fail(CallStateError(f"reject needs a 3xx-6xx status, not {code}"))
        self.fire("Reject", code=code, reason=reason)
        return self.wait_for_end()

    # -- mid-call control -------------------------------------------------------------
    def _operation(
        self,
        event: str,
        done_states: tuple[str, ...],
        allowed: tuple[str, ...],
        what: str,
        **data: object,
    ) -> defer.Deferred[None]:
        if self.state in done_states:
            return defer.succeed(None)
        if self.state not in allowed:
            return defer.fail(CallStateError(f"cannot {what} call {self.id} in state {self.state}"))
        d: defer.Deferred[None] = defer.Deferred()
        self._op_waiters.append(d)
        self.fire(event, **data)
        return d

    def hold(self) -> defer.Deferred[None]:
        """Put the call on hold (re-INVITE, a=sendonly); fires on the 2xx.

        Fails with :class:`~sipd.errors.CallRejected` carrying the status when
        the peer refuses; the previous SDP then stays in force.
        """
        return self._operation("Hold", ("OnHold",), ("Active", "RemoteHold", "Holding"), "hold")

    def resume(self) -> defer.Deferred[None]:
        """Take the call off hold (re-INVITE, a=sendrecv); fires on the 2xx."""
        return self._operation("Resume", ("Active", "RemoteHold"), ("OnHold", "Resuming"), "resume")

    def transfer(self, target: str | UnifiedSession) -> defer.Deferred[None]:
        """Transfer the peer (REFER): fires when the peer reports the new call answered.

        ``target`` is a URI (blind transfer) or another answered call of ours
        (attended transfer: the peer is asked to replace that call, RFC 5589
        §7). The call is then hung up; fails with the status the peer reports
        otherwise (and the call stays up).
        """
        try:
            if isinstance(target, UnifiedSession):
                if target is self:
                    raise CallStateError(f"cannot transfer call {self.id} to itself")
                uri = target.replacing_uri()
            else:
                uri = self.coordinator.target_uri(target)
        except Exception:
            return defer.fail()
        if self.state != "Active":
            return defer.fail(
                CallStateError(f"cannot transfer call {self.id} in state {self.state}")
            )
        d: defer.Deferred[None] = defer.Deferred()
        self._op_waiters.append(d)
        self.fire("Transfer", target=str(uri))
        return d

    def replacing_uri(self) -> Uri:
        """Where to send an INVITE that replaces this call: the Refer-To of an
        attended transfer.

        The peer's remote target (its Contact: the very UA holding this
        dialog, where an address-of-record might fork elsewhere) with a
        ``Replaces`` URI header naming the dialog from that peer's side
        (RFC 3891 §3): its tag is the to-tag, ours the from-tag.
        """
        leg = self.leg
        dialog = leg.dialog if leg is not None else None
        if leg is None or dialog is None or self.answered_at is None or self.is_ended:
            raise CallStateError(
                f"call {self.id} cannot be the target of a transfer in state {self.state}: "
                "it must be answered"
            )
        replaces = f"{leg.call_id};to-tag={dialog.id.remote_tag};from-tag={leg.local_tag}"
        return dialog.remote_target.replace(headers=(("Replaces", replaces),))

    def wait_for_transfer(self) -> defer.Deferred[UnifiedSession]:
        """Fires with the new session when this call is handed over to another:
        the peer transfers us (REFER) and the new call is answered, or an INVITE
        with Replaces takes this call's place (attended transfer) and is answered."""
        if self.replacement is not None and self.replacement.answered_at is not None:
            return defer.succeed(self.replacement)
        d: defer.Deferred[UnifiedSession] = defer.Deferred()
        self._transfer_waiters.append(d)
        return d

    def _settle_ops(self, error: CallError | None) -> None:
        waiters, self._op_waiters = self._op_waiters, []
        for d in waiters:
            if error is None:
                self._post.append(partial(d.callback, None))
            else:
                self._post.append(partial(d.errback, error))

    # -- media ---------------------------------------------------------------------
    def _media_session(self) -> MediaSession:
        if self.media is None:
            raise CallStateError(f"call {self.id} has no media (it failed before media was set up)")
        return self.media

    def send_audio(self, frame: AudioFrame) -> defer.Deferred[None]:
        """Queue a frame for the 20 ms clock; fires when it is on the wire."""
        try:
            return self._media_session().stream.queue_audio(frame)
        except CallStateError:
            return defer.fail()

    def recv_audio(self) -> defer.Deferred[AudioFrame | None]:
        """The next received frame; None once the call has ended."""
        if self.media is None:
            return defer.succeed(None)
        return self.media.queue.get()

    def try_recv_audio(self) -> AudioFrame | None:
        """A received frame if one is waiting, else None."""
        return self.media.queue.try_get() if self.media is not None else None

    def subscribe_to_audio(self) -> AudioSubscription:
        """An independent stream of this call's received frames (``get()`` / ``try_get()``)."""
        return self._media_session().subscribe()

    def send_dtmf(self, digits: str) -> defer.Deferred[None]:
        """Send RFC 4733 digits (0-9 * # A-D); fires when the last one is sent."""
        try:
            return self._media_session().stream.queue_dtmf(digits)
        except CallStateError:
            return defer.fail()

    def on_dtmf(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(digit)`` for every digit received."""
        self._media_session().dtmf_callbacks.append(callback)

    def recv_dtmf(self) -> defer.Deferred[str | None]:
        """The next received digit; None once the call has ended."""
        if self.media is None:
            return defer.succeed(None)
        return self.media.digits.get()

    def try_recv_dtmf(self) -> str | None:
        return self.media.digits.try_get() if self.media is not None else None

    def play_wav(self, path: str | os.PathLike[str]) -> defer.Deferred[None]:
        """Send a WAV file's audio (converted to 8 kHz mono); fires when sent."""
        try:
            return self._media_session().play(path)
        except CallStateError:
            return defer.fail()

    def record_wav(self, path: str | os.PathLike[str]) -> defer.Deferred[None]:
        """Record what the call receives to ``path``; fires when the file is final."""
        try:
            return self._media_session().record(path)
        except Exception:
            return defer.fail()

    def stop_recording(self, path: str | os.PathLike[str] | None = None) -> None:
        """Finalise a recording before the call ends (all of them if no path)."""
        if self.media is not None:
            self.media.stop_recording(path)

    def stats(self) -> dict[str, object]:
        """Media statistics: packets, loss, jitter, RTT, codec."""
        if self.media is None:
            return {}
        result: dict[str, object] = dict(self.media.stats().as_dict())
        negotiation = self.media.negotiation
        result["codec"] = negotiation.codec.name if negotiation and negotiation.codec else None
        result["local_port"] = self.media.port
        result["remote"] = self.media.stream.remote
        return result

    # -- SessionHooks ---------------------------------------------------------------
    def check_guard(self, name: str, event: Event) -> bool:
        guard: Callable[[UnifiedSession, Event], bool] = GUARDS[name]
        return guard(self, event)

    def run_action(self, name: str, event: Event) -> None:
        action: Callable[[UnifiedSession, Event], None] = ACTIONS[name]
        action(self, event)

    # -- helpers for actions ---------------------------------------------------------
    @property
    def _codecs(self) -> list[Codec]:
        config = self.coordinator.config
        codecs = [_CODECS[c.upper()] for c in config.codecs]
        if config.dtmf:
            codecs.append(TELEPHONE_EVENT)
        return codecs

    def _next_sdp_version(self) -> int:
        self._sdp_version += 1
        return self._sdp_version

    def _evaluate_answer(self, event: Event) -> NegotiationResult | SdpError:
        response = event.data.get("response")
        if self._pending is not None and self._pending[0] == f"answer:{id(event)}":
            return self._pending[1]
        result: NegotiationResult | SdpError
        try:
            if not isinstance(response, Response) or not response.body:
                raise SdpError("the 2xx carried no SDP answer")
            assert self.local_sdp is not None
            result = process_answer(self.local_sdp, parse_sdp(response.body))
        except SdpError as exc:
            result = exc
        self._pending = (f"answer:{id(event)}", result)
        return result

    def _evaluate_offer(self, event: Event) -> NegotiationResult | SdpError | None:
        """The answer to the INVITE's offer; None for an INVITE without SDP.

        An INVITE without a body is a delayed offer (RFC 3261 §13.2.1): we
        make the offer in our 200 and the caller answers in its ACK.
        """
        if self._pending is not None and self._pending[0] == f"offer:{id(event)}":
            return self._pending[1]
        assert self.leg is not None and self.media is not None
        body = self.leg.invite.body
        if not body:
            return None
        result: NegotiationResult | SdpError
        try:
            offer = parse_sdp(body)
            self.remote_sdp = offer
            result = negotiate_answer(
                offer,
                self.coordinator.config.contact_host,
                self.media.port,
                self._codecs,
                session_id=self._sdp_session_id,
                session_version=self._sdp_version,
            )
        except SdpError as exc:
            result = exc
        self._pending = (f"offer:{id(event)}", result)
        return result

    def _fail(self, error: CallError) -> None:
        if self.failure is None:
            self.failure = error
        waiters, self._answer_waiters = self._answer_waiters, []
        for d in waiters:
            self._post.append(partial(d.errback, error))

    def _stop_ring_timer(self) -> None:
        if self._ring_timer is not None and self._ring_timer.active():
            self._ring_timer.cancel()
        self._ring_timer = None

    def _on_ring_timeout(self) -> None:
        self._ring_timer = None
        self.fire("RingTimeout")


def _txn(event: Event) -> ServerTransaction:
    txn = event.data.get("txn")
    assert isinstance(txn, ServerTransaction), "event carries no server transaction"
    return txn


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and value else default


# -- guards ----------------------------------------------------------------------------
def _guard_answer_acceptable(s: UnifiedSession, event: Event) -> bool:
    return isinstance(s._evaluate_answer(event), NegotiationResult)


def _guard_offer_acceptable(s: UnifiedSession, event: Event) -> bool:
    return not isinstance(s._evaluate_offer(event), SdpError)


def _guard_hangup_pending(s: UnifiedSession, event: Event) -> bool:
    return s._hangup_pending


def _evaluate_reoffer(s: UnifiedSession, event: Event) -> NegotiationResult | SdpError:
    key = f"reoffer:{id(event)}"
    if s._pending is not None and s._pending[0] == key:
        return s._pending[1]
    request = event.data.get("request")
    result: NegotiationResult | SdpError
    try:
        if not isinstance(request, Request) or s.media is None:
            raise SdpError("no media for this call")
        if not request.body:
            # An offerless re-INVITE: we offer our current SDP again (§14.2).
            assert s.local_sdp is not None and s.negotiation is not None
            result = s.negotiation
        else:
            offer = parse_sdp(request.body)
            # While we hold the call our answer keeps it held (sendonly, or
            # inactive if the peer holds too) instead of resuming silently.
            holding = s.state in ("OnHold", "Resuming")
            result = negotiate_answer(
                offer,
                s.coordinator.config.contact_host,
                s.media.port,
                s._codecs,
                direction=Direction.SENDONLY if holding else Direction.SENDRECV,
                session_id=s._sdp_session_id,
                session_version=s._sdp_version,
            )
    except SdpError as exc:
        result = exc
    s._pending = (key, result)
    return result


def _guard_reoffer_acceptable(s: UnifiedSession, event: Event) -> bool:
    return isinstance(_evaluate_reoffer(s, event), NegotiationResult)


def _guard_offer_is_hold(s: UnifiedSession, event: Event) -> bool:
    request = event.data.get("request")
    if not isinstance(request, Request) or not request.body:
        return False
    try:
        return is_remote_hold(parse_sdp(request.body))
    except SdpError:
        return False


def _guard_reinvite_in_progress(s: UnifiedSession, event: Event) -> bool:
    # After a 491 our re-INVITE is over: only the glare timer is left.
    return s.leg is not None and s.leg.reinvite_pending


def _guard_transfer_allowed(s: UnifiedSession, event: Event) -> bool:
    handler = s.coordinator.interceptor.handler
    decide = getattr(handler, "on_transfer_request", None)
    request = event.data.get("request")
    target = _refer_target(request)
    if target is None:
        return False
    if decide is None:
        return True
    try:
        decision = decide(s, target)
    except Exception:
        _log.failure("handler.on_transfer_request failed", call_id=s.call_id)
        return False
    return decision is True or isinstance(decision, Accept)


def _sipfrag(event: Event) -> int | None:
    status = event.data.get("status")
    return status if isinstance(status, int) else None


def _guard_transfer_succeeded(s: UnifiedSession, event: Event) -> bool:
    status = _sipfrag(event)
    return status is not None and 200 <= status < 300


def _guard_transfer_failed(s: UnifiedSession, event: Event) -> bool:
    status = _sipfrag(event)
    return status is not None and status >= 300


GUARDS: dict[str, Callable[[UnifiedSession, Event], bool]] = {
    "ReofferAcceptable": _guard_reoffer_acceptable,
    "OfferIsHold": _guard_offer_is_hold,
    "TransferAllowed": _guard_transfer_allowed,
    "ReinviteInProgress": _guard_reinvite_in_progress,
    "TransferSucceeded": _guard_transfer_succeeded,
    "TransferFailedStatus": _guard_transfer_failed,
    "AnswerAcceptable": _guard_answer_acceptable,
    "OfferAcceptable": _guard_offer_acceptable,
    "HangupPending": _guard_hangup_pending,
}


# -- actions ---------------------------------------------------------------------------
def _allocate_media(s: UnifiedSession, event: Event) -> None:
    coordinator = s.coordinator
    s.media = coordinator.media.allocate()
    coordinator.registry.register_media(s.id, s.media.id)
    if s.role is Role.UAC:
        s.local_sdp = build_offer(
            coordinator.config.contact_host,
            s.media.port,
            s._codecs,
            session_id=s._sdp_session_id,
            session_version=s._sdp_version,
        )


def _send_invite(s: UnifiedSession, event: Event) -> None:
    assert s.target is not None and s.local_sdp is not None
    coordinator = s.coordinator
    try:
        s.leg = coordinator.dialogs.invite(
            s.target, s.local_sdp.to_bytes(), extra_headers=s.extra_headers, proxy=s.proxy
        )
    except CallError as exc:
        s.machine.fire("InviteTimeout", status=503, reason=str(exc), error=exc)
        return
    coordinator.registry.register_dialog(s.id, s.leg.key)


def _redirect_target(s: UnifiedSession, event: Event) -> Uri | None:
    """The Contact of a 3xx to try next (highest ``q`` first), if one may be followed."""
    status = event.data.get("status")
    response = event.data.get("response")
    limit = s.coordinator.config.follow_redirects
    if not isinstance(status, int) or not 300 <= status < 400 or s._redirects >= limit:
        return None
    if not isinstance(response, Response):
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
        if contact.uri.scheme in ("sip", "sips") and contact.uri not in s._tried:
            return contact.uri.replace(headers=())
    return None


def _guard_redirect_allowed(s: UnifiedSession, event: Event) -> bool:
    return _redirect_target(s, event) is not None


GUARDS["RedirectAllowed"] = _guard_redirect_allowed


def _follow_redirect(s: UnifiedSession, event: Event) -> None:
    target = _redirect_target(s, event)
    assert target is not None
    s._redirects += 1
    if s.target is not None:
        s._tried.append(s.target)  # never go back to where we were sent away from
    s._tried.append(target)
    old = s.leg
    if old is not None:
        s.coordinator.dialogs.release(old)
    _log.info(
        "call {session_id} redirected ({status}) to {target}",
        session_id=s.id,
        call_id=s.call_id,
        status=event.data.get("status"),
        target=str(target),
    )
    s.target = target
    s.remote_uri = str(target)
    s.proxy = s.coordinator.route_for(target)
    _send_invite(s, event)


def _start_ring_timer(s: UnifiedSession, event: Event) -> None:
    s._stop_ring_timer()
    s._ring_timer = s.coordinator.clock.callLater(
        s.coordinator.config.ring_timeout, s._on_ring_timeout
    )


def _stop_ring_timer(s: UnifiedSession, event: Event) -> None:
    s._stop_ring_timer()


def _notify_ringing(s: UnifiedSession, event: Event) -> None:
    return None


def _send_ack(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None:
        s.coordinator.dialogs.send_ack(s.leg)


def _apply_answer(s: UnifiedSession, event: Event) -> None:
    result = s._evaluate_answer(event)
    assert isinstance(result, NegotiationResult)
    s.negotiation = result
    response = event.data.get("response")
    if isinstance(response, Response):
        s.remote_sdp = parse_sdp(response.body)
        contacts = response.contacts
        if contacts:
            s.remote_uri = str(response.to.uri)


def _start_media(s: UnifiedSession, event: Event) -> None:
    if s.media is not None and s.negotiation is not None:
        s.coordinator.media.start(s.media, s.negotiation)


def _stop_media(s: UnifiedSession, event: Event) -> None:
    if s.media is not None:
        s.coordinator.media.stop(s.media, s._post.append)


def _notify_answered(s: UnifiedSession, event: Event) -> None:
    s.answered_at = s.coordinator.clock.seconds()
    waiters, s._answer_waiters = s._answer_waiters, []
    for d in waiters:
        s._post.append(partial(d.callback, s))


def _failure_for(s: UnifiedSession, event: Event) -> CallError:
    data = event.data
    who = s.remote_uri
    name = event.name
    if name == "Rejected":
        status = _int(data.get("status"), 0)
        reason = str(data.get("reason") or "")
        if status == 487:
            return CallCancelled(f"call to {who} was cancelled: 487 {reason}".strip(), status=487)
        return CallRejected(
            f"call to {who} was rejected: {status} {reason}".strip(), status=status, reason=reason
        )
    if name == "InviteTimeout":
        status = _int(data.get("status"), 408)
        reason = str(data.get("reason") or "Request Timeout")
        if status == 408:
            return CallTimeout(
                f"call to {who} got no response (408 {reason}); is the peer running and reachable?",
                status=408,
            )
        return CallFailed(f"call to {who} failed: {status} {reason}", status=status, reason=reason)
    if name == "RingTimeout":
        timeout = s.coordinator.config.ring_timeout
        if s.role is Role.UAS:
            return CallTimeout(f"incoming call from {who} was not accepted within {timeout:g}s")
        return CallTimeout(f"call to {who} was not answered within {timeout:g}s (ring_timeout)")
    if name == "HangUp":
        if s.role is Role.UAS:
            return CallCancelled(
                f"incoming call from {who} was declined before answering", status=603
            )
        return CallCancelled(f"call to {who} was cancelled before it was answered")
    if name == "RemoteCancel":
        return CallCancelled(f"{who} cancelled the call before it was answered")
    if name == "Reject":
        code = _int(data.get("code"), 486)
        return CallRejected(f"incoming call from {who} was rejected with {code}", status=code)
    if name == "Accept":
        return CallFailed(
            f"cannot answer {who}: {s._evaluate_offer(event)}; answered 488", status=488
        )
    if name == "Answered":
        return CallFailed(
            f"call to {who} answered with unusable SDP: {s._evaluate_answer(event)}", status=488
        )
    if name == "AckTimeout":
        return CallFailed(f"{who} never acknowledged our 200 OK; the call was ended with BYE")
    if name == "RemoteBye":
        return CallFailed(f"{who} hung up before the call was established")
    return CallFailed(f"call with {who} failed on {name}")


def _notify_failed(s: UnifiedSession, event: Event) -> None:
    s._fail(_failure_for(s, event))


def _send_cancel(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None:
        s.coordinator.dialogs.cancel(s.leg)


def _send_bye(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None:
        s.coordinator.dialogs.bye(s.leg)
    else:
        s.machine.fire("ByeCompleted", status=None)


def _send_ringing(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None and s.coordinator.config.send_ringing:
        s.coordinator.dialogs.ringing(s.leg)


def _offer_to_application(s: UnifiedSession, event: Event) -> None:
    if s.offer_to_application:
        s.coordinator.offer_incoming(s)


def _apply_offer(s: UnifiedSession, event: Event) -> None:
    result = s._evaluate_offer(event)
    if result is None:
        # Delayed offer: our 200 carries the offer; media starts on the ACK.
        assert s.media is not None
        s.local_sdp = build_offer(
            s.coordinator.config.contact_host,
            s.media.port,
            s._codecs,
            session_id=s._sdp_session_id,
            session_version=s._sdp_version,
        )
        return
    assert isinstance(result, NegotiationResult)
    s.negotiation = result
    s.local_sdp = result.answer


def _apply_ack_answer(s: UnifiedSession, event: Event) -> None:
    """For a delayed offer, the ACK carries the answer to the offer in our 200."""
    if s.negotiation is not None or s.local_sdp is None:
        return
    request = event.data.get("request")
    try:
        if not isinstance(request, Request) or not request.body:
            raise SdpError("the ACK carried no SDP answer to our offer")
        answer = parse_sdp(request.body)
        s.negotiation = process_answer(s.local_sdp, answer)
        s.remote_sdp = answer
    except SdpError as exc:
        _log.warn(
            "call {session_id}: {error}; hanging up",
            session_id=s.id,
            call_id=s.call_id,
            error=str(exc),
        )
        s.machine.fire("HangUp")


def _send_ok(s: UnifiedSession, event: Event) -> None:
    assert s.leg is not None and s.local_sdp is not None
    s.coordinator.dialogs.answer(s.leg, s.local_sdp.to_bytes())


def _send_reject(s: UnifiedSession, event: Event) -> None:
    if s.leg is None:
        return
    if event.name == "Reject":
        code = _int(event.data.get("code"), 486)
        reason = event.data.get("reason")
        s.coordinator.dialogs.reject(s.leg, code, str(reason) if reason else None)
    elif event.name == "RingTimeout":
        s.coordinator.dialogs.reject(s.leg, 480)
    else:
        s.coordinator.dialogs.reject(s.leg, 603)


def _send_not_acceptable(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None:
        reason = s._evaluate_offer(event)
        headers = [("Warning", f'399 sipd "{reason}"')] if isinstance(reason, SdpError) else []
        s.coordinator.dialogs.reject(s.leg, 488, headers=headers)


def _send_request_terminated(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None:
        s.coordinator.dialogs.reject(s.leg, 487)


def _set_hangup_pending(s: UnifiedSession, event: Event) -> None:
    s._hangup_pending = True


def _cleanup(s: UnifiedSession, event: Event) -> None:
    s._stop_ring_timer()
    if s._glare_timer is not None and s._glare_timer.active():
        s._glare_timer.cancel()
    s._glare_timer = None
    if s._op_waiters:
        s._settle_ops(CallFailed(f"call with {s.remote_uri} ended"))
    s.ended_at = s.coordinator.clock.seconds()
    s.coordinator.session_ended(s)
    if s._answer_waiters:
        s._fail(CallFailed(f"call with {s.remote_uri} ended"))
    waiters, s._end_waiters = s._end_waiters, []
    for d in waiters:
        s._post.append(partial(d.callback, None))


def _send_reoffer(s: UnifiedSession, direction: str) -> None:
    if s.leg is None or s.local_sdp is None:
        s.machine.fire("ReinviteFailed", status=481, reason="No Dialog")
        return
    offer = reoffer(s.local_sdp, direction=direction)
    s._pending_offer = offer
    s.coordinator.dialogs.reinvite(s.leg, offer.to_bytes())


def _send_hold_reinvite(s: UnifiedSession, event: Event) -> None:
    _send_reoffer(s, "sendonly")


def _send_resume_reinvite(s: UnifiedSession, event: Event) -> None:
    _send_reoffer(s, "sendrecv")


def _apply_reanswer(s: UnifiedSession, event: Event) -> None:
    response = event.data.get("response")
    offer = s._pending_offer
    s._pending_offer = None
    if offer is None or not isinstance(response, Response):
        return
    try:
        remote = parse_sdp(response.body)
        result = process_answer(offer, remote)
    except SdpError as exc:
        _log.warn("answer to our re-offer is unusable: {error}", error=str(exc), call_id=s.call_id)
        return
    s.remote_sdp = remote
    s.local_sdp = offer
    s._sdp_version = offer.origin.session_version
    s.negotiation = result
    if s.media is not None:
        s.coordinator.media.start(s.media, result)


def _restore_sdp(s: UnifiedSession, event: Event) -> None:
    s._pending_offer = None


def _notify_reinvite_done(s: UnifiedSession, event: Event) -> None:
    s._settle_ops(None)


def _notify_reinvite_failed(s: UnifiedSession, event: Event) -> None:
    status = _int(event.data.get("status"), 0) or None
    reason = str(event.data.get("reason") or "")
    what = "hold" if s.state in ("Holding", "Active") else "resume"
    if event.name == "RemoteBye":
        error: CallError = CallFailed(f"{s.remote_uri} hung up during {what}")
    else:
        error = CallRejected(
            f"{s.remote_uri} refused the {what} re-INVITE: {status} {reason}".strip(),
            status=status,
            reason=reason,
        )
    s._settle_ops(error)


def _schedule_glare_retry(s: UnifiedSession, event: Event) -> None:
    # RFC 3261 §14.1: the Call-ID owner waits 2.1-4 s, the other side 0-2 s.
    if s.role is Role.UAC:
        delay = 2.1 + secrets.randbelow(190) / 100
    else:
        delay = secrets.randbelow(200) / 100
    if s._glare_timer is not None and s._glare_timer.active():
        s._glare_timer.cancel()
    s._glare_timer = s.coordinator.clock.callLater(delay, s.fire, "GlareRetry")


def _answer_reinvite(s: UnifiedSession, event: Event) -> None:
    request, txn = event.data.get("request"), _txn(event)
    result = _evaluate_reoffer(s, event)
    if s.leg is None or not isinstance(result, NegotiationResult) or s.local_sdp is None:
        return
    if isinstance(request, Request) and request.body:
        s.remote_sdp = parse_sdp(request.body)
        answer = result.answer
        if _same_session(answer, s.local_sdp):
            answer = s.local_sdp  # nothing changed: same SDP, same version (RFC 3264 §8)
        else:
            answer.origin = dataclasses.replace(
                answer.origin, session_version=s._next_sdp_version()
            )
        changed = _media_changed(s.negotiation, result)
        s.local_sdp = answer
        s.negotiation = result
        if changed and s.media is not None:
            s.coordinator.media.start(s.media, result)
    s.coordinator.dialogs.answer_reinvite(s.leg, txn, 200, s.local_sdp.to_bytes())


def _same_session(a: SessionDescription, b: SessionDescription) -> bool:
    a2 = dataclasses.replace(a.origin, session_version=0)
    b2 = dataclasses.replace(b.origin, session_version=0)
    if a2 != b2:
        return False
    original = a.origin
    a.origin = a2
    try:
        text_a = a.to_bytes()
    finally:
        a.origin = original
    original_b = b.origin
    b.origin = b2
    try:
        text_b = b.to_bytes()
    finally:
        b.origin = original_b
    return text_a == text_b


def _media_changed(old: NegotiationResult | None, new: NegotiationResult) -> bool:
    if old is None:
        return True
    return (
        old.codec != new.codec
        or old.remote_address != new.remote_address
        or old.remote_port != new.remote_port
        or old.direction != new.direction
        or old.telephone_event_pt != new.telephone_event_pt
    )


def _reject_reoffer(s: UnifiedSession, event: Event) -> None:
    txn = _txn(event)
    reason = _evaluate_reoffer(s, event)
    if s.leg is not None:
        headers = [("Warning", f'399 sipd "{reason}"')] if isinstance(reason, SdpError) else []
        s.coordinator.dialogs.answer_reinvite(s.leg, txn, 488, b"", headers)


def _send_request_pending(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None:
        retry = [("Retry-After", "1")]
        s.coordinator.dialogs.answer_reinvite(s.leg, _txn(event), 491, b"", retry)


def _send_refer(s: UnifiedSession, event: Event) -> None:
    target = str(event.data.get("target") or "")
    if s.leg is None:
        s.machine.fire("ReferRejected", status=481, reason="No Dialog")
        return
    s.coordinator.dialogs.refer(s.leg, target)


def _notify_transferred(s: UnifiedSession, event: Event) -> None:
    s._settle_ops(None)


def _notify_transfer_failed(s: UnifiedSession, event: Event) -> None:
    status = _int(event.data.get("status"), 0) or None
    reason = str(event.data.get("reason") or "")
    if event.name == "HangUp":
        error: CallError = CallCancelled("the transfer was abandoned by hanging up")
    else:
        error = CallRejected(
            f"transfer of {s.remote_uri} failed: {status} {reason}".strip(),
            status=status,
            reason=reason,
        )
    s._settle_ops(error)


def _refer_uri(request: object) -> Uri | None:
    if not isinstance(request, Request):
        return None
    value = request.headers.get("Refer-To")
    if not value:
        return None
    try:
        return parse_name_addr(value).uri
    except Exception:
        return None


def _refer_target(request: object) -> str | None:
    """The Refer-To URI without its URI headers: whom to call."""
    uri = _refer_uri(request)
    return str(uri.replace(headers=())) if uri is not None else None


def _refer_replaces(request: object) -> str | None:
    """The Refer-To's ``Replaces`` URI header (attended transfer), unescaped.

    Of the URI headers only this one is copied into the INVITE: the others
    would let the referrer write arbitrary headers into our request.
    """
    uri = _refer_uri(request)
    if uri is None:
        return None
    return next((v for n, v in uri.headers if n.lower() == "replaces"), None)


def _accept_refer(s: UnifiedSession, event: Event) -> None:
    request, txn = event.data.get("request"), _txn(event)
    target = _refer_target(request)
    if s.leg is None or target is None or not isinstance(request, Request):
        return
    txn.respond(make_response(request, 202))
    dialogs = s.coordinator.dialogs
    dialogs.notify_refer(s.leg, 100, "Trying", final=False)
    replaces = _refer_replaces(request)
    headers = [("Replaces", replaces)] if replaces else []
    try:
        new = s.coordinator.create_outgoing_call(target, headers=headers)
    except CallError as exc:
        s._post.append(partial(s.fire, "ReferredCallFailed", status=503, reason=str(exc)))
        return
    new.transferred_from = s
    s.replacement = new
    s.coordinator.offer_transfer(s, new)

    def answered(_: object) -> None:
        s.fire("ReferredCallAnswered")
        waiters, s._transfer_waiters = s._transfer_waiters, []
        for d in waiters:
            d.callback(new)

    def failed(failure: Any) -> None:
        error = failure.value
        s.fire(
            "ReferredCallFailed",
            status=getattr(error, "status", None) or 500,
            reason=getattr(error, "reason", "") or "Call Failed",
        )

    new.wait_for_answer().addCallbacks(answered, failed)


def _reject_refer(s: UnifiedSession, event: Event) -> None:
    request, txn = event.data.get("request"), event.data.get("txn")
    if isinstance(request, Request):
        txn.respond(make_response(request, 603))  # type: ignore[attr-defined]


def _notify_refer_success(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None:
        s.coordinator.dialogs.notify_refer(s.leg, 200, "OK", final=True)


def _notify_refer_failure(s: UnifiedSession, event: Event) -> None:
    if s.leg is not None:
        status = _int(event.data.get("status"), 500)
        reason = str(event.data.get("reason") or "Call Failed")
        s.coordinator.dialogs.notify_refer(s.leg, status, reason, final=True)


def _answer_replacement(s: UnifiedSession, event: Event) -> None:
    # Queued behind this transition: Incoming's Accept rows answer it.
    s.fire("Accept")


def _notify_replaced(s: UnifiedSession, event: Event) -> None:
    new = event.data.get("session")
    if not isinstance(new, UnifiedSession):
        return
    s.replacement = new
    waiters, s._transfer_waiters = s._transfer_waiters, []
    for d in waiters:
        s._post.append(partial(d.callback, new))


ACTIONS: dict[str, Callable[[UnifiedSession, Event], None]] = {
    "AnswerReplacement": _answer_replacement,
    "NotifyReplaced": _notify_replaced,
    "SendHoldReinvite": _send_hold_reinvite,
    "SendResumeReinvite": _send_resume_reinvite,
    "ApplyReanswer": _apply_reanswer,
    "RestoreSdp": _restore_sdp,
    "NotifyReinviteDone": _notify_reinvite_done,
    "NotifyReinviteFailed": _notify_reinvite_failed,
    "ScheduleGlareRetry": _schedule_glare_retry,
    "AnswerReinvite": _answer_reinvite,
    "RejectReoffer": _reject_reoffer,
    "SendRequestPending": _send_request_pending,
    "SendRefer": _send_refer,
    "NotifyTransferred": _notify_transferred,
    "NotifyTransferFailed": _notify_transfer_failed,
    "AcceptRefer": _accept_refer,
    "RejectRefer": _reject_refer,
    "NotifyReferSuccess": _notify_refer_success,
    "NotifyReferFailure": _notify_refer_failure,
    "AllocateMedia": _allocate_media,
    "SendInvite": _send_invite,
    "FollowRedirect": _follow_redirect,
    "StartRingTimer": _start_ring_timer,
    "StopRingTimer": _stop_ring_timer,
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
    "SetHangupPending": _set_hangup_pending,
    "Cleanup": _cleanup,
}
