"""What a session may ask of its user agent: the ``CallServices`` port, and call outcomes.

A session never sees the coordinator (docs/architecture.md, "ports, not
back-references"); it gets this narrow face of it. Kept apart from the
coordinator so that the coordinator module holds the wiring only.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from sipd.config import SipdConfig
from sipd.errors import CallCancelled, CallRejected, CallTimeout
from sipd.session.session import UnifiedSession
from sipd.sip.uri import Uri

__all__ = ["CoordinatorServices", "UserAgent", "call_outcome"]


class UserAgent(Protocol):
    """What :class:`CoordinatorServices` needs of the UA (the ``UnifiedCoordinator``)."""

    config: SipdConfig
    clock: IReactorTime

    def offer_incoming(self, session: UnifiedSession) -> None: ...

    def offer_transfer(self, old: UnifiedSession, new: UnifiedSession) -> None: ...

    def create_outgoing_call(
        self, target: str, *, headers: list[tuple[str, str]] | None = None
    ) -> UnifiedSession: ...

    def route_for(self, target: Uri) -> Uri | None: ...

    def target_uri(self, target: str) -> Uri: ...

    def session_ended(self, session: UnifiedSession) -> None: ...


class CoordinatorServices:
    """The application port a session gets: a narrow face of its coordinator."""

    __slots__ = ("_ua",)

    def __init__(self, ua: UserAgent) -> None:
        self._ua = ua

    @property
    def config(self) -> SipdConfig:
        return self._ua.config

    @property
    def clock(self) -> IReactorTime:
        return self._ua.clock

    def offer_incoming(self, session: UnifiedSession) -> None:
        self._ua.offer_incoming(session)

    def offer_transfer(self, old: UnifiedSession, new: UnifiedSession) -> None:
        self._ua.offer_transfer(old, new)

    def place_call(self, target: str, headers: list[tuple[str, str]]) -> UnifiedSession:
        return self._ua.create_outgoing_call(target, headers=headers)

    def route_for(self, target: Uri) -> Uri | None:
        return self._ua.route_for(target)

    def target_uri(self, target: str) -> Uri:
        return self._ua.target_uri(target)

    def session_ended(self, session: UnifiedSession) -> None:
        self._ua.session_ended(session)


def call_outcome(session: UnifiedSession) -> str:
    """The ``outcome`` label of ``sipd_calls_total`` for a session that has ended."""
    failure = session.failure
    if failure is None:
        answered = session.answer_outcome.settled and session.answer_outcome.error is None
        return "completed" if answered else "ended"
    if isinstance(failure, CallCancelled):
        return "cancelled"
    if isinstance(failure, CallRejected):
        return "rejected"
    if isinstance(failure, CallTimeout):
        return "timeout"
    return "failed"
