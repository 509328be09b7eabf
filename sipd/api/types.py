"""Small value types of the simple API."""

from __future__ import annotations

import enum

__all__ = ["STATE_MAP", "CallDirection", "CallId", "CallState", "call_state_for"]


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


#: State-table states of the default table and the CallState each shows as.
#: A custom table's own states fall back on their name (``OnHold`` ->
#: ON_HOLD) and then on TERMINATING for anything unknown.
STATE_MAP: dict[str, CallState] = {
    "Idle": CallState.IDLE,
    "Calling": CallState.CALLING,
    "Ringing": CallState.RINGING,
    "Incoming": CallState.RINGING,
    "Answering": CallState.RINGING,
    "Active": CallState.ACTIVE,
    "OnHold": CallState.ON_HOLD,
    "Holding": CallState.ACTIVE,
    "Resuming": CallState.ON_HOLD,
    "RemoteHold": CallState.ON_HOLD,
    "Transferring": CallState.ACTIVE,
    "Cancelling": CallState.TERMINATING,
    "Terminating": CallState.TERMINATING,
    "Failing": CallState.TERMINATING,
    "Terminated": CallState.TERMINATED,
    "Failed": CallState.FAILED,
}


def call_state_for(state: str) -> CallState:
    """The :class:`CallState` for a state-table state name."""
    known = STATE_MAP.get(state)
    if known is not None:
        return known
    snake = "".join(f"_{c}" if c.isupper() else c for c in state).strip("_").upper()
    try:
        return CallState[snake]
    except KeyError:
        return CallState.TERMINATING
