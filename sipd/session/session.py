"""``UnifiedSession``: one call's data, its machine, and the calls an application makes.

A session is created by the coordinator with narrow ports
(:class:`~sipd.session.ports.SignallingPort`,
:class:`~sipd.session.ports.MediaPort` and a :class:`CallServices`) and the
:class:`Behaviour` (the guards and actions the state table names, in
:mod:`sipd.session.guards` and :mod:`sipd.session.actions`). It never sees the
coordinator. Every event, from the application, the network or a timer, goes
through its machine's one queue (:meth:`UnifiedSession.post`); which
application calls a state takes and which public :class:`~sipd.types.CallState`
it shows are columns of the table, so nothing here tests a state's name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from sipd.config import SipdConfig
from sipd.errors import CallError, CallFailed, CallStateError
from sipd.sdp import NegotiationResult, SessionDescription
from sipd.session import events as ev
from sipd.session.machine import MachineFactory, SessionMachine, Transition
from sipd.session.media_timeout import media_deadline, media_failure_context
from sipd.session.negotiation import SdpContext, codecs_for
from sipd.session.outcome import Outcome, forget_traceback
from sipd.session.ports import MediaPort, SignallingPort
from sipd.session.session_timer import SessionTimer, expiry_margin
from sipd.session.table_model import Role, StateInfo
from sipd.sip.uri import Uri
from sipd.types import CallDirection, CallState

if TYPE_CHECKING:
    from sipd.media.fanout import AudioSubscription
    from sipd.media.frame import AudioFrame
    from sipd.session.media_adapter import MediaSession

__all__ = ["Behaviour", "CallServices", "Outcome", "UnifiedSession"]

T = TypeVar("T")


class CallServices(Protocol):
    """What a session may ask of the UA it belongs to (the application port)."""

    @property
    def config(self) -> SipdConfig:
        """The UA's settings (codecs, ring_timeout, contact host...)."""

    @property
    def clock(self) -> IReactorTime:
        """The clock for timestamps and timers."""

    def offer_incoming(self, session: UnifiedSession) -> None:
        """Hand an incoming call to the application (or answer it when nobody listens)."""

    def offer_transfer(self, old: UnifiedSession, new: UnifiedSession) -> None:
        """A REFER (or an INVITE with Replaces) made ``new`` take ``old``'s place."""

    def place_call(self, target: str, headers: list[tuple[str, str]]) -> UnifiedSession:
        """Place a new outgoing call (for a REFER)."""

    def route_for(self, target: Uri) -> Uri | None:
        """The proxy an INVITE to ``target`` goes through, if any."""

    def target_uri(self, target: str) -> Uri:
        """The URI to call for a user's ``target`` text."""

    def session_ended(self, session: UnifiedSession) -> None:
        """The session reached a final state: forget it."""


@dataclass(frozen=True, slots=True)
class Behaviour:
    """The guards and actions a table's names resolve to."""

    guards: Mapping[str, Callable[[UnifiedSession, Any], bool]]
    actions: Mapping[str, Callable[[UnifiedSession, Any], None]]


class UnifiedSession:
    """One call: its data, its machine, its ports and its waiters."""

    def __init__(
        self,
        services: CallServices,
        factory: MachineFactory,
        behaviour: Behaviour,
        signalling: SignallingPort,
        media: MediaPort,
        *,
        remote_uri: str,
        local_uri: str,
        target: Uri | None = None,
        session_id: str | None = None,
    ) -> None:
        self.id = session_id or secrets.token_hex(8)
        self.role: Role = factory.role
        self.services = services
        self.signalling = signalling
        self.media_port = media
        self._behaviour = behaviour
        self.remote_uri = remote_uri
        self.local_uri = local_uri
        self.target = target
        #: The proxy the INVITE goes through (None: straight to the target).
        self.proxy: Uri | None = None
        self.extra_headers: list[tuple[str, str]] = []
        #: This call's SRTP policy ("off", "optional", "required"): the UA's unless
        #: the call was placed with its own.
        self.srtp_policy: str = services.config.srtp
        #: The id of the call whose audio this one is bridged to (sipd.media.bridge),
        #: so that the console shows the two as legs of one call; None when unbridged.
        self.bridged_with: str | None = None
        #: This call's codec preference: the UA's unless the call was placed with its own.
        self.codecs: list[str] = list(services.config.codecs)
        #: The InviteDetails of an incoming call (what the handler saw).
        self.invite: Any = None
        self.local_sdp: SessionDescription | None = None
        self.remote_sdp: SessionDescription | None = None
        self.negotiation: NegotiationResult | None = None
        #: Our re-offer waiting for its answer (hold/resume).
        self.pending_offer: SessionDescription | None = None
        self.failure: CallError | None = None
        self.created_at = services.clock.seconds()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.sdp_session_id = secrets.randbelow(2**31)
        self.sdp_version = 1
        #: Redirect hops taken and the targets tried (for RedirectAllowed).
        self.redirects = 0
        self.tried: list[Uri] = []
        self.replacement: UnifiedSession | None = None
        self.transferred_from: UnifiedSession | None = None
        #: The call this one replaces (we accepted an INVITE with Replaces for it).
        self.replaces: UnifiedSession | None = None
        #: Settles (with no value: the session is what waiters get) once answered.
        self.answer_outcome: Outcome[None] = Outcome()
        self.end_outcome: Outcome[None] = Outcome()
        #: hold()/resume()/transfer() waiting for their outcome.
        self.operations: list[defer.Deferred[None]] = []
        self.transfer_waiters: list[defer.Deferred[UnifiedSession]] = []
        #: RFC 4028: the negotiated timer, when it was last refreshed, our refresh in flight.
        self.session_timer: SessionTimer | None = None
        self.refreshed_at = self.created_at
        self.refresh_sent_at: float | None = None
        self.refresh_not_before = 0.0
        self.refresh_method = "UPDATE"
        #: The methods the peer's INVITE or 2xx listed in Allow.
        self.peer_allow: frozenset[str] = frozenset()
        self._glare: tuple[float, float] = (-1.0, 0.0)
        self._memo_event: object = None
        self._memo: dict[str, object] = {}
        #: (INVITE, context, result) of the last offer checked: the early 488 row
        #: and the accept that follows ask the same question of the same offer.
        self.offer_cache: tuple[object, object, object] | None = None
        self.machine: SessionMachine = factory.create(self)

    def __repr__(self) -> str:
        return f"<UnifiedSession {self.id} {self.role.value} {self.state}>"

    # -- reading state ------------------------------------------------------------
    @property
    def state(self) -> str:
        """The state-table state name (``Active``, ``Ringing``...)."""
        return self.machine.state

    @property
    def state_info(self) -> StateInfo:
        """The table's columns for the current state."""
        return self.machine.state_info

    @property
    def call_state(self) -> CallState:
        """The public state of the call: the table's ``call_state`` column."""
        return CallState[self.machine.call_state]

    @property
    def direction(self) -> CallDirection:
        """OUTGOING for a call we placed, INCOMING for one we answered."""
        return CallDirection.OUTGOING if self.role is Role.UAC else CallDirection.INCOMING

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
    def leg(self) -> Any:
        """The dialog adapter's leg (read-only; for diagnostics and tests)."""
        return getattr(self.signalling, "leg", None)

    @property
    def media(self) -> MediaSession | None:
        """The call's media session, once ports are bound."""
        return self.media_port.media

    @property
    def call_id(self) -> str | None:
        """The SIP Call-ID, once the INVITE exists."""
        return self.signalling.call_id

    @property
    def dialog_id(self) -> str | None:
        leg = self.leg
        return str(leg.key) if leg is not None else None

    @property
    def duration(self) -> float:
        """Seconds since answer (0 if never answered)."""
        if self.answered_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self.services.clock.seconds()
        return end - self.answered_at

    @property
    def config(self) -> SipdConfig:
        return self.services.config

    def add_listener(self, listener: Callable[[UnifiedSession, Transition], None]) -> None:
        """Call ``listener(session, transition)`` after every transition."""
        self.machine.listeners.append(lambda transition: listener(self, transition))

    # -- driving it ---------------------------------------------------------------
    def post(self, event: ev.CallEvent) -> bool:
        """Feed ``event`` through the session's one queue.

        Remote input can always arrive at an awkward moment (a BYE crossing
        ours, a late ACK); the table lists the expected ones, anything else
        is logged and dropped. Returns False when the event was not taken
        (or the call has ended), so the signalling layer can still answer a
        request nobody took.
        """
        if self.machine.is_final:
            return False
        return self.machine.post(event)

    def fire(self, event: str, **data: object) -> bool:
        """Post the event named ``event`` with ``data`` as its fields (older callers)."""
        return self.post(ev.event_type(event)(**data))

    def later(self, effect: Callable[[], object]) -> None:
        """Run ``effect`` once the machine has settled (waiters, user callbacks)."""
        self.machine.after(effect)

    def _refuse(self, call: str, message: str) -> CallStateError | None:
        if call in self.machine.state_info.allows:
            return None
        return CallStateError(message)

    def wait_for_answer(self) -> defer.Deferred[UnifiedSession]:
        """Fires with the session when answered; fails with the reason otherwise."""
        if self.machine.is_final and not self.answer_outcome.settled:
            return defer.fail(CallFailed(f"call {self.id} ended before it was answered"))
        return self.answer_outcome.wait().addCallback(self._itself)

    def _itself(self, _: object) -> UnifiedSession:
        return self

    def release(self) -> None:
        """Break the call's reference cycles once it has ended (the coordinator calls this).

        The session stays readable (state, history, failure, stats); its
        machine, ports and waiters stop pointing back at it, so the call is
        freed by reference counting when the application drops it rather than
        by the cyclic collector, whose full passes stall a busy process.
        """
        if not self.machine.is_final:
            return
        self.machine.release()
        self.signalling.detach()
        self.media_port.detach()
        # A failure's traceback holds the frames that raised it, and they hold
        # this session: keep the exception (callers read it), not its frames.
        self._memo_event, self._memo, self.offer_cache = None, {}, None
        for error in (self.failure, self.answer_outcome.error, self.end_outcome.error):
            forget_traceback(error)

    def wait_for_end(self) -> defer.Deferred[None]:
        """Fires (with None) once the call has ended, however it ended."""
        return self.end_outcome.wait()

    def hangup(self) -> defer.Deferred[None]:
        """End the call (CANCEL, BYE or a decline, as the state requires)."""
        self.post(ev.HangUp())
        return self.wait_for_end()

    def accept(self) -> defer.Deferred[UnifiedSession]:
        """Answer an incoming call; fires with the session once the ACK arrives."""
        if self.role is not Role.UAS:
            return defer.fail(CallStateError("only an incoming call can be accepted"))
        error = self._refuse("accept", f"call {self.id} cannot be accepted in state {self.state}")
        if error is not None:
            return defer.fail(error)
        d = self.wait_for_answer()
        self.post(ev.Accept())
        return d

    def reject(self, code: int = 486, reason: str | None = None) -> defer.Deferred[None]:
        """Refuse an incoming call with a final status."""
        error = self._refuse("reject", f"call {self.id} cannot be rejected in state {self.state}")
        if error is not None:
            return defer.fail(error)
        if not 300 <= code <= 699:
            return defer.fail(CallStateError(f"reject needs a 3xx-6xx status, not {code}"))
        self.post(ev.Reject(code, reason))
        return self.wait_for_end()

    # -- mid-call control -------------------------------------------------------------
    def _operation(self, call: str, event: ev.CallEvent) -> defer.Deferred[None]:
        error = self._refuse(call, f"cannot {call} call {self.id} in state {self.state}")
        if error is not None:
            return defer.fail(error)
        d: defer.Deferred[None] = defer.Deferred()
        self.operations.append(d)
        self.post(event)
        return d

    def hold(self) -> defer.Deferred[None]:
        """Put the call on hold (re-INVITE, a=sendonly); fires on the 2xx.

        Fails with :class:`~sipd.errors.CallRejected` carrying the status when
        the peer refuses; the previous SDP then stays in force.
        """
        return self._operation("hold", ev.Hold())

    def resume(self) -> defer.Deferred[None]:
        """Take the call off hold (re-INVITE, a=sendrecv); fires on the 2xx."""
        return self._operation("resume", ev.Resume())

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
                uri = self.services.target_uri(target)
        except Exception:
            return defer.fail()
        return self._operation("transfer", ev.Transfer(str(uri)))

    def replacing_uri(self) -> Uri:
        """Where to send an INVITE that replaces this call: the Refer-To of an
        attended transfer.

        The peer's remote target (its Contact: the very UA holding this
        dialog, where an address-of-record might fork elsewhere) with a
        ``Replaces`` URI header naming the dialog from that peer's side
        (RFC 3891 §3): its tag is the to-tag, ours the from-tag.
        """
        ids = self.signalling.dialog_ids
        remote = self.signalling.remote_target
        established = self.call_state in (CallState.ACTIVE, CallState.ON_HOLD)
        if ids is None or remote is None or not established:
            raise CallStateError(
                f"call {self.id} cannot be the target of a transfer in state {self.state}: "
                "it must be answered"
            )
        call_id, local_tag, remote_tag = ids
        replaces = f"{call_id};to-tag={remote_tag};from-tag={local_tag}"
        return remote.replace(headers=(("Replaces", replaces),))

    def wait_for_transfer(self) -> defer.Deferred[UnifiedSession]:
        """Fires with the new session when this call is handed over to another:
        the peer transfers us (REFER) and the new call is answered, or an INVITE
        with Replaces takes this call's place (attended transfer) and is answered."""
        new = self.replacement
        if new is not None and new.answer_outcome.settled and new.answer_outcome.error is None:
            return defer.succeed(new)
        d: defer.Deferred[UnifiedSession] = defer.Deferred()
        self.transfer_waiters.append(d)
        return d

    def settle_operations(self, error: Exception | None) -> None:
        """Fire (or fail) every pending hold()/resume()/transfer() once settled."""
        waiters, self.operations = self.operations, []
        for d in waiters:
            if error is None:
                self.later(partial(d.callback, None))
            else:
                self.later(partial(d.errback, error))

    def replaced_by(self, new: UnifiedSession) -> None:
        """Record the call that took this one's place and tell the waiters."""
        self.replacement = new
        waiters, self.transfer_waiters = self.transfer_waiters, []
        for d in waiters:
            self.later(partial(d.callback, new))

    # -- media ---------------------------------------------------------------------
    def _media_session(self) -> MediaSession:
        media = self.media_port.media
        if media is None:
            raise CallStateError(f"call {self.id} has no media (it failed before media was set up)")
        return media

    def send_audio(self, frame: AudioFrame) -> defer.Deferred[None]:
        """Queue a frame for the 20 ms clock; fires when it is on the wire."""
        try:
            return self._media_session().stream.queue_audio(frame)
        except CallStateError:
            return defer.fail()

    def recv_audio(self) -> defer.Deferred[AudioFrame | None]:
        """The next received frame; None once the call has ended."""
        media = self.media_port.media
        return defer.succeed(None) if media is None else media.queue.get()

    def try_recv_audio(self) -> AudioFrame | None:
        """A received frame if one is waiting, else None."""
        media = self.media_port.media
        return media.queue.try_get() if media is not None else None

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
        media = self.media_port.media
        return defer.succeed(None) if media is None else media.digits.get()

    def try_recv_dtmf(self) -> str | None:
        media = self.media_port.media
        return media.digits.try_get() if media is not None else None

    def play_wav(self, path: str | os.PathLike[str]) -> defer.Deferred[None]:
        """Send a WAV file's audio (converted to mono at the UA's sample_rate); fires when sent."""
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
        media = self.media_port.media
        if media is not None:
            media.stop_recording(path)

    def stats(self) -> dict[str, object]:
        """Media statistics: packets, loss, jitter, RTT, codec."""
        media = self.media_port.media
        if media is None:
            return {}
        result: dict[str, object] = dict(media.stats().as_dict())
        negotiation = media.negotiation
        result["codec"] = negotiation.codec.name if negotiation and negotiation.codec else None
        result["local_port"] = media.port
        result["remote"] = media.stream.remote
        return result

    # -- SessionHooks and TimerHooks -------------------------------------------------------
    def check_guard(self, name: str, event: Any) -> bool:
        return self._behaviour.guards[name](self, event)

    def run_action(self, name: str, event: Any) -> None:
        self._behaviour.actions[name](self, event)

    def timer_deadline(self, delay: str, entered_at: float) -> float | None:
        """When a state's timer named ``delay`` fires, from the session's data.

        ``ring_timeout`` runs from the call's start; ``glare`` is the RFC 3261
        §14.1 wait from entering the state; ``session_refresh`` and
        ``session_expiry`` follow the RFC 4028 interval from the last refresh;
        ``media_timeout`` runs from the last RTP/RTCP heard (or from entering
        the state), shortened by ICMP evidence that the peer is gone
        (:func:`~sipd.session.media_timeout.media_deadline`). None: the timer
        is not needed now.
        """
        if delay == "ring_timeout":
            return self.created_at + self.config.ring_timeout
        if delay == "glare":
            if self._glare[0] != entered_at:
                # The Call-ID owner waits 2.1-4 s, the other side 0-2 s.
                wait = (
                    2.1 + secrets.randbelow(190) / 100
                    if self.role is Role.UAC
                    else secrets.randbelow(200) / 100
                )
                self._glare = (entered_at, wait)
            return entered_at + self._glare[1]
        if delay in ("session_refresh", "session_expiry"):
            timer = self.session_timer
            if timer is None:
                return None
            we_refresh = timer.we_refresh
            if delay == "session_expiry":
                margin = 0.0 if we_refresh else expiry_margin(timer.interval)
                return self.refreshed_at + timer.interval - margin
            if not we_refresh or self.refresh_sent_at is not None:
                return None
            return max(self.refreshed_at + timer.interval / 2, self.refresh_not_before)
        if delay == "media_timeout":
            media, config = self.media, self.config
            if media is None:
                return None
            return media_deadline(
                media.stream, entered_at, config.media_timeout, config.media_unreachable_timeout
            )
        raise KeyError(delay)

    def timer_event(self, event: str) -> object:
        return ev.event_type(event)()

    # -- helpers for guards and actions -------------------------------------------------------
    def sdp_context(self, *, unbound: bool = False) -> SdpContext:
        """Our side of an SDP negotiation: media address, codecs, o= line numbers.

        ``unbound``: the call has no RTP port yet (an INVITE checked before media
        is allocated); port 9 (discard) stands in, since only whether the offer
        can be answered is wanted, never the SDP itself.
        """
        media = self.media_port.media
        if media is None and not unbound:
            media = self._media_session()  # raises, naming the call
        config = self.config
        return SdpContext(
            host=config.contact_host,
            port=9 if media is None else media.port,
            codecs=codecs_for(self.codecs, config.dtmf),
            session_id=self.sdp_session_id,
            session_version=self.sdp_version,
            srtp=self.srtp_policy,
            srtp_keys=None if self.negotiation is None else self.negotiation.srtp,
        )

    def memo(self, kind: str, event: object, compute: Callable[[], T]) -> T:
        """``compute()`` once per event: a guard and the action after it share the result."""
        if self._memo_event is not event:
            self._memo_event, self._memo = event, {}
        if kind not in self._memo:
            self._memo[kind] = compute()
        return self._memo[kind]  # type: ignore[return-value]

    def error_context(self) -> dict[str, object]:
        """What a row's ``error.message`` may name besides the event's fields."""
        config, media = self.config, self.media
        stream = media.stream if media is not None else None
        return {
            "remote": self.remote_uri,
            "ring_timeout": f"{config.ring_timeout:g}",
            "media_timeout": f"{config.media_timeout:g}",
            **media_failure_context(stream, self.answered_at, self.services.clock.seconds()),
        }
