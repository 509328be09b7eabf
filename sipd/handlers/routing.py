"""Calls to registered users are connected to their contact (a small B2BUA).

When the daemon is also a registrar, an INVITE whose dialled user has a live
binding is not given to the configured handler: the daemon calls the
registered contact, and when it answers, answers the caller and bridges the
two calls' audio. Anything else goes to the wrapped handler.
"""

from __future__ import annotations

from typing import Any

from sipd import Defer, InviteDetails, Registrar, Reject, ResponseView, UnifiedSession
from sipd.errors import CallError
from sipd.handlers.base import HandlerBase
from sipd.logs import Logger
from sipd.media.bridge import bridge

__all__ = ["RoutingHandler"]

_log = Logger()


class RoutingHandler(HandlerBase):
    """Route INVITEs for registered users; delegate the rest to ``inner``."""

    def __init__(self, coordinator: Any, inner: Any, registrar: Registrar) -> None:
        super().__init__(coordinator, {})
        self.inner = inner
        self.registrar = registrar
        self.routed = 0

    def on_response(self, dialog_id: str, response: ResponseView) -> Any:
        return self.inner.on_response(dialog_id, response)

    def on_transfer_request(self, session: Any, target: str) -> Any:
        decide = getattr(self.inner, "on_transfer_request", None)
        return True if decide is None else decide(session, target)

    def on_incoming_invite(self, invite: InviteDetails) -> Any:
        bindings = self.registrar.location.lookup(invite.dialled)
        if not bindings:
            return self.inner.on_incoming_invite(invite)
        contact = bindings[0].contact.uri
        try:
            callee = self.coordinator.create_outgoing_call(str(contact))
        except CallError as exc:
            _log.warn(
                "cannot reach {user} at {contact}: {error}",
                user=invite.dialled,
                contact=str(contact),
                error=exc,
            )
            return Reject(480)
        self.routed += 1
        _log.info(
            "routing call {call_id} for {user} to {contact}",
            call_id=invite.call_id,
            user=invite.dialled,
            contact=str(contact),
        )

        def connect(caller: UnifiedSession) -> None:
            bridge(caller, callee)

        def answered(_: object) -> None:
            if invite.cancelled or invite.answered:
                callee.hangup()
                return
            invite.accept().addCallbacks(connect, lambda f: callee.hangup())

        def failed(failure: Any) -> None:
            status = getattr(failure.value, "status", None)
            if not isinstance(status, int) or not 400 <= status < 700 or status == 487:
                status = 480
            if not invite.answered and not invite.cancelled:
                invite.reject(status)

        callee.wait_for_answer().addCallbacks(answered, failed)
        invite.on_cancel.addCallback(lambda _: None if callee.is_ended else callee.hangup())
        return Defer()
