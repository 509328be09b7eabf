"""Small value types shared by the session layer and the simple API.

They live outside both packages so that the session layer can name the
public call state of each table state without importing the API that is
built on top of it.
"""

from __future__ import annotations

import enum

__all__ = ["CallDirection", "CallId", "CallState"]


class CallId(str):
    """A call's identifier (the session id); a ``str`` that says what it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"CallId({str.__repr__(self)})"


class CallDirection(enum.Enum):
    """Who placed the call."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"


class CallState(enum.Enum):
    """The simplified view of a call's state-table state."""

    IDLE = "idle"
    CALLING = "calling"
    RINGING = "ringing"
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"
