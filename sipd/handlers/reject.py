"""``reject``: answer every INVITE with a configured final status."""

from __future__ import annotations

from typing import Any

from sipd import InviteDetails, Reject
from sipd.errors import ConfigError
from sipd.handlers.base import HandlerBase

__all__ = ["RejectHandler"]


class RejectHandler(HandlerBase):
    """Settings: ``status`` (default 486) and ``reason`` (optional)."""

    def __init__(self, coordinator: Any, settings: dict[str, Any]) -> None:
        super().__init__(coordinator, settings)
        status = settings.get("status", 486)
        if not isinstance(status, int) or not 300 <= status <= 699:
            raise ConfigError(f"handler.settings.status: {status!r} must be a final status 300-699")
        reason = settings.get("reason")
        self.decision = Reject(status, str(reason) if reason else None)

    def on_incoming_invite(self, invite: InviteDetails) -> Reject:
        return self.decision


def build(coordinator: Any, settings: dict[str, Any]) -> RejectHandler:
    return RejectHandler(coordinator, settings)
