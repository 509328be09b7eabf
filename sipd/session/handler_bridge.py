"""What the signalling handler says about events of calls that already exist.

Besides deciding on new INVITEs (:mod:`sipd.session.interceptor`), an
:class:`~sipd.session.interceptor.ISignalingHandler` sees every response to
our INVITEs (``on_response``, as a read-only
:class:`~sipd.session.views.ResponseView`) and may refuse a peer's transfer
request (optional ``on_transfer_request``). The handler is asked *before*
the event reaches the session, and its answer becomes part of the event
(``ReferReceived.allowed``) or another event (``AnswerRefused``), so that
the table's guards stay pure functions of the session and the event.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from twisted.internet import defer

from sipd.logs import Logger
from sipd.session import events as ev
from sipd.session.interceptor import Accept, Custom, Reject, SignalingInterceptor
from sipd.session.table_model import Role
from sipd.session.views import ResponseView

if TYPE_CHECKING:
    from sipd.session.session import UnifiedSession

__all__ = ["HandlerBridge"]

_log = Logger()


class HandlerBridge:
    """Asks the interceptor's current handler about events on their way to a session."""

    __slots__ = ("_interceptor",)

    def __init__(self, interceptor: SignalingInterceptor) -> None:
        self._interceptor = interceptor

    def before(self, session: UnifiedSession, dialog: str, event: ev.CallEvent) -> ev.CallEvent:
        """The event the session gets once the handler had its say."""
        if isinstance(event, ev.ReferReceived) and event.target is not None:
            return dataclasses.replace(event, allowed=self._transfer_allowed(session, event))
        if session.role is Role.UAC and isinstance(
            event, ev.Provisional | ev.Answered | ev.Rejected
        ):
            return self._consult(session, dialog, event)
        return event

    def _transfer_allowed(self, session: UnifiedSession, event: ev.ReferReceived) -> bool:
        """Ask the handler's optional ``on_transfer_request(session, target)``."""
        decide = getattr(self._interceptor.handler, "on_transfer_request", None)
        if decide is None:
            return True
        try:
            decision = decide(session, event.target)
        except Exception:
            _log.failure("handler.on_transfer_request failed", call_id=session.call_id)
            return False
        return decision is True or isinstance(decision, Accept)

    def _consult(
        self,
        session: UnifiedSession,
        dialog: str,
        event: ev.Provisional | ev.Answered | ev.Rejected,
    ) -> ev.CallEvent:
        """Show the handler the response; a Reject of a 2xx refuses the answer."""
        response = event.response
        if response is None:
            return event
        try:
            result = self._interceptor.handler.on_response(dialog, ResponseView.of(response))
        except Exception:
            _log.failure(
                "handler.on_response failed for {dialog}", dialog=dialog, call_id=session.call_id
            )
            return event
        if isinstance(result, defer.Deferred):
            # Decided later: the answer goes through now, a refusal follows.
            result.addCallback(self._late_decision, session, event)
            result.addErrback(
                lambda f: _log.failure(
                    "handler.on_response failed for {dialog}",
                    f,
                    dialog=dialog,
                    call_id=session.call_id,
                )
            )
            return event
        return _decided(result, event)

    def _late_decision(
        self, decision: object, session: UnifiedSession, event: ev.CallEvent
    ) -> None:
        refused = _decided(decision, event)
        if refused is not event:
            session.post(refused)


def _decided(decision: object, event: ev.CallEvent) -> ev.CallEvent:
    if isinstance(decision, Reject) and isinstance(event, ev.Answered):
        return ev.AnswerRefused(decision.code, decision.reason or "")
    if isinstance(decision, Custom):
        decision.action(None)  # type: ignore[arg-type]
    return event
