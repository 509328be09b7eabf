"""Every new INVITE meets the application's :class:`ISignalingHandler` first.

The :class:`SignalingInterceptor` sits between the dialog adapter and session
creation: before any session exists it asks the handler what to do with an
incoming INVITE, and acts on the decision:

* :class:`Accept` — create the UAS session and offer the call to the
  application (``SimplePeer.wait_for_incoming`` or the coordinator's
  ``on_incoming`` callback);
* :class:`Reject` — answer with that final status; no session is created;
* :class:`Defer` — the handler keeps the :class:`InviteDetails` and answers
  later with ``invite.accept()``, ``invite.reject()`` or ``invite.redirect()``
  (how a call engine queues callers);
* :class:`Custom` — run the handler's own function with the details.

A deferred (or custom) INVITE that nobody answers within ``defer_timeout``
gets ``defer_status`` (480 by default), so no caller waits forever.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from sipd.errors import CallStateError, SipdValueError
from sipd.logs import Logger
from sipd.media.ports import PortsExhausted
from sipd.session.views import ResponseView
from sipd.sip.body import sdp_body
from sipd.sip.headers import Headers
from sipd.sip.message import Request

if TYPE_CHECKING:
    from sipd.session.session import UnifiedSession

__all__ = [
    "Accept",
    "AcceptAllHandler",
    "Custom",
    "Defer",
    "ISignalingHandler",
    "ISignalingHandlerFactory",
    "InviteDetails",
    "InviteState",
    "Reject",
    "SignalingDecision",
    "SignalingInterceptor",
]

_log = Logger()


@dataclass(frozen=True, slots=True)
class Accept:
    """Create the session and offer the call to the application."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the INVITE with ``code`` (and ``reason``) and create no session."""

    code: int = 486
    reason: str | None = None

    def __post_init__(self) -> None:
        if not 300 <= self.code <= 699:
            raise SipdValueError(f"Reject needs a final 3xx-6xx status, not {self.code}")


@dataclass(frozen=True, slots=True)
class Defer:
    """The handler answers later through the :class:`InviteDetails` it was given."""


@dataclass(frozen=True, slots=True)
class Custom:
    """Run ``action(invite)``; like :class:`Defer`, the action owns the answer."""

    action: Callable[[InviteDetails], object]


SignalingDecision = Accept | Reject | Defer | Custom


class ISignalingHandler(Interface):
    """Decides what happens to new incoming calls (and sees call responses)."""

    def on_incoming_invite(invite: InviteDetails) -> Any:
        """Return a :data:`SignalingDecision`, or a Deferred firing with one."""

    def on_response(dialog_id: str, response: ResponseView) -> Any:
        """Seen for every non-100 response to an outgoing INVITE.

        Return a decision (or a Deferred of one): :class:`Reject` on a 2xx
        hangs the call up at once and fails it with that status;
        :class:`Custom` runs its action with the details of nothing — it is
        called as ``action(None)``; anything else lets the response through.
        """


class ISignalingHandlerFactory(Interface):
    """A plugin that builds a handler by name (used by the daemon)."""

    name = Attribute("The name used in the config's handler key")

    def build(coordinator: object, settings: dict[str, Any]) -> ISignalingHandler:
        """Return a handler for this coordinator, configured by ``settings``."""


@implementer(ISignalingHandler)
class AcceptAllHandler:
    """The default: every INVITE becomes an incoming call for the application."""

    def on_incoming_invite(self, invite: InviteDetails) -> SignalingDecision:
        return Accept()

    def on_response(self, dialog_id: str, response: ResponseView) -> SignalingDecision:
        return Accept()


class InviteResponder(Protocol):
    """What :class:`InviteDetails` needs from the coordinator to answer."""

    def accept_invite(self, invite: InviteDetails, *, offer: bool) -> UnifiedSession: ...

    def reject_invite(self, invite: InviteDetails, code: int, reason: str | None) -> None: ...

    def redirect_invite(self, invite: InviteDetails, target: str, code: int) -> None: ...


class InviteState(enum.Enum):
    """Where a new INVITE stands: waiting for a decision, answered, or cancelled by the caller."""

    PENDING = "pending"
    ANSWERED = "answered"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class InviteDetails:
    """Everything about a new INVITE, and the means to answer it.

    ``request_uri``, ``to`` and ``from_`` are the texts from the request, so a
    handler can route on the dialled number (``invite.dialled``); the raw
    request and all its headers are there too.
    """

    request: Request
    source: tuple[str, int]
    _responder: InviteResponder = field(repr=False)
    #: The dialog adapter's leg for this INVITE (opaque to handlers).
    leg: object = field(default=None, repr=False)
    state: InviteState = InviteState.PENDING
    #: Fires (with None) if the caller cancels before anyone answered.
    on_cancel: defer.Deferred[None] = field(default_factory=defer.Deferred, repr=False)
    _timeout: IDelayedCall | None = field(default=None, repr=False)

    @property
    def answered(self) -> bool:
        """True once someone answered the INVITE (accept, reject, redirect)."""
        return self.state is InviteState.ANSWERED

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled it before anyone answered."""
        return self.state is InviteState.CANCELLED

    @property
    def call_id(self) -> str:
        return self.request.call_id

    @property
    def request_uri(self) -> str:
        return str(self.request.uri)

    @property
    def dialled(self) -> str:
        """The user part of the Request-URI: the number or name that was dialled."""
        return self.request.uri.user or ""

    @property
    def caller(self) -> str:
        """The From URI as text."""
        return str(self.request.from_.uri)

    @property
    def callee(self) -> str:
        """The To URI as text."""
        return str(self.request.to.uri)

    @property
    def headers(self) -> Headers:
        return self.request.headers

    @property
    def sdp(self) -> bytes | None:
        """The SDP offer, if the INVITE carried one (alone or in ``multipart/mixed``)."""
        return sdp_body(self.request)

    def _claim(self) -> None:
        if self.state is InviteState.CANCELLED:
            raise CallStateError(f"call {self.call_id} was cancelled by the caller")
        if self.state is InviteState.ANSWERED:
            raise CallStateError(f"INVITE {self.call_id} has already been answered")
        self.state = InviteState.ANSWERED
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def accept(self) -> defer.Deferred[UnifiedSession]:
        """Answer the call (200 OK); fires with the session once the caller ACKs."""
        try:
            self._claim()
            session = self._responder.accept_invite(self, offer=False)
        except Exception:
            return defer.fail()
        return session.accept()

    def offer(self) -> UnifiedSession:
        """Create the session and offer it to the application as a ringing call."""
        self._claim()
        return self._responder.accept_invite(self, offer=True)

    def reject(self, code: int = 486, reason: str | None = None) -> None:
        """Answer with a final status (default 486 Busy Here)."""
        self._claim()
        self._responder.reject_invite(self, code, reason)

    def redirect(self, target: str, code: int = 302) -> None:
        """Answer 3xx with ``Contact: <target>`` so the caller retries there."""
        if not 300 <= code < 400:
            raise SipdValueError(f"a redirect needs a 3xx status, not {code}")
        self._claim()
        self._responder.redirect_invite(self, target, code)

    def _cancel(self) -> None:
        """The caller sent CANCEL before anyone answered."""
        if self.state is not InviteState.PENDING:
            return
        self.state = InviteState.CANCELLED
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        self.on_cancel.callback(None)


class SignalingInterceptor:
    """Runs the handler for each new INVITE and carries out its decision."""

    def __init__(
        self,
        handler: ISignalingHandler,
        clock: IReactorTime,
        *,
        defer_timeout: float,
        defer_status: int,
    ) -> None:
        self.handler = handler
        self._clock = clock
        self._defer_timeout = defer_timeout
        self._defer_status = defer_status
        self.pending: dict[str, InviteDetails] = {}

    def intercept(self, invite: InviteDetails) -> None:
        """Ask the handler about ``invite``; never raises."""
        self.pending[invite.call_id] = invite
        d = defer.maybeDeferred(self.handler.on_incoming_invite, invite)
        d.addCallbacks(
            self._decided, self._handler_failed, callbackArgs=(invite,), errbackArgs=(invite,)
        )

    def _decided(self, decision: object, invite: InviteDetails) -> None:
        if invite.cancelled:
            self.pending.pop(invite.call_id, None)
            return
        if isinstance(decision, Accept):
            self.pending.pop(invite.call_id, None)
            if not invite.answered:
                with contextlib.suppress(PortsExhausted):  # answered 503 already
                    invite.offer()
        elif isinstance(decision, Reject):
            self.pending.pop(invite.call_id, None)
            if not invite.answered:
                invite.reject(decision.code, decision.reason)
        elif isinstance(decision, Defer | Custom):
            if not invite.answered:
                invite._timeout = self._clock.callLater(self._defer_timeout, self._expire, invite)
            invite.on_cancel.addBoth(self._forget_cancelled, invite)
            if isinstance(decision, Custom):
                decision.action(invite)
            if invite.answered:
                self.pending.pop(invite.call_id, None)
        else:
            _log.error(
                "handler {handler!r} returned {decision!r}, not a SignalingDecision; answering 500",
                handler=self.handler,
                decision=decision,
                call_id=invite.call_id,
            )
            self.pending.pop(invite.call_id, None)
            if not invite.answered:
                invite.reject(500, "Handler Returned No Decision")

    def _forget_cancelled(self, result: object, invite: InviteDetails) -> object:
        # Pass the result on: the handler's own callbacks on on_cancel get None.
        self.pending.pop(invite.call_id, None)
        return result

    def _handler_failed(self, failure: Failure, invite: InviteDetails) -> None:
        _log.failure(
            "signalling handler failed on INVITE {call_id}", failure, call_id=invite.call_id
        )
        self.pending.pop(invite.call_id, None)
        if not invite.answered and not invite.cancelled:
            invite.reject(500, "Handler Error")

    def _expire(self, invite: InviteDetails) -> None:
        invite._timeout = None
        self.pending.pop(invite.call_id, None)
        if not invite.answered and not invite.cancelled:
            _log.info(
                "deferred INVITE {call_id} unanswered after {timeout}s; answering {status}",
                call_id=invite.call_id,
                timeout=self._defer_timeout,
                status=self._defer_status,
            )
            invite.reject(self._defer_status, None)

    def settle(self, invite: InviteDetails) -> None:
        """Forget a pending INVITE once it has been answered by any path."""
        if self.pending.get(invite.call_id) is invite and invite.answered:
            self.pending.pop(invite.call_id, None)

    def cancel_all(self) -> None:
        """Stop every pending timeout (the coordinator is closing)."""
        for invite in list(self.pending.values()):
            if invite._timeout is not None and invite._timeout.active():
                invite._timeout.cancel()
            invite._timeout = None
        self.pending.clear()
