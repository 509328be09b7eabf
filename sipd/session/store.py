"""The live sessions of a coordinator, by id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from sipd.errors import SipdError

if TYPE_CHECKING:
    from sipd.session.session import UnifiedSession

__all__ = ["SessionStore"]


class SessionStore:
    """Owns the :class:`UnifiedSession` objects between creation and cleanup."""

    __slots__ = ("_sessions",)

    def __init__(self) -> None:
        self._sessions: dict[str, UnifiedSession] = {}

    def add(self, session: UnifiedSession) -> None:
        """Store a new session; ids are unique."""
        if session.id in self._sessions:
            raise SipdError(f"session {session.id} is already stored")
        self._sessions[session.id] = session

    def get(self, session_id: str) -> UnifiedSession | None:
        """The session with this id, if it is still live."""
        return self._sessions.get(session_id)

    def remove(self, session_id: str) -> None:
        """Forget a session (no error if it is already gone)."""
        self._sessions.pop(session_id, None)

    def __iter__(self) -> Iterator[UnifiedSession]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)
