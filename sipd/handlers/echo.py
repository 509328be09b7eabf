"""``echo``: answer every call and send the caller's audio straight back."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from sipd import Defer, InviteDetails, UnifiedSession
from sipd.handlers.base import HandlerBase
from sipd.logs import Logger

__all__ = ["EchoHandler"]

_log = Logger()


class EchoHandler(HandlerBase):
    """Answers at once; every received frame is queued back to the caller."""

    def on_incoming_invite(self, invite: InviteDetails) -> Defer:
        invite.accept().addCallbacks(self._echo, lambda f: None)
        return Defer()

    def _echo(self, session: UnifiedSession) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._loop(session))

    async def _loop(self, session: UnifiedSession) -> None:
        while True:
            frame = await session.recv_audio()
            if frame is None:
                return
            # Not awaited: the caller's stream paces the echo.
            session.send_audio(frame).addErrback(lambda f: None)


def build(coordinator: Any, settings: dict[str, Any]) -> EchoHandler:
    return EchoHandler(coordinator, settings)
