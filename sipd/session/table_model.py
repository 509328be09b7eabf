"""The data model of a validated state table: what the loader produces.

Kept apart from the YAML reader (:mod:`sipd.session.table_reader`) and the
checks (:mod:`sipd.session.table_checks`) so that the executor
(:mod:`sipd.session.machine`), the sessions and the diagrams depend only on
plain frozen data, never on the parser.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ErrorSpec",
    "GuardTest",
    "Role",
    "Row",
    "StateInfo",
    "StateTable",
    "TimerSpec",
    "closure",
]


class Role(enum.Enum):
    """Which side of a call a session plays: it sent the INVITE (UAC) or received it (UAS)."""

    UAC = "UAC"
    UAS = "UAS"


@dataclass(frozen=True, slots=True)
class GuardTest:
    """One guard condition of a row: the guard ``name`` must pass, or fail if ``negated``."""

    name: str
    negated: bool = False

    def __str__(self) -> str:
        return f"!{self.name}" if self.negated else self.name


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """A timer a state owns: started on entering the state, cancelled on leaving it.

    ``delay`` names a deadline the session code computes from its data
    (``ring_timeout``: the end of the call's ring time; ``glare``: the
    RFC 3261 §14.1 wait; ``session_refresh``/``session_expiry``: RFC 4028;
    ``media_timeout``: the last RTP or RTCP plus the media timeout), ``event``
    is the event fed to the machine when it fires. The deadline is read again
    after every step in the state and when the timer fires, so a deadline that
    moves (a refresh, a packet) moves the timer; no deadline means no timer.
    """

    event: str
    delay: str


@dataclass(frozen=True, slots=True)
class StateInfo:
    """The columns of one state: the public call state, the allowed calls, its timer.

    ``call_state`` is the name of a :class:`~sipd.types.CallState` member
    (``None`` when the table does not say; a call table requires it),
    ``allows`` the application calls (``accept``, ``hold``...) the state
    takes, ``timers`` the timers it owns.
    """

    name: str
    line: int
    call_state: str | None = None
    allows: frozenset[str] = frozenset()
    timers: tuple[TimerSpec, ...] = ()

    @property
    def timer(self) -> TimerSpec | None:
        """The state's first timer (most states own at most one)."""
        return self.timers[0] if self.timers else None


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """What a failing row reports: a :class:`~sipd.errors.CallError` subclass and its text.

    ``message`` is a :meth:`str.format` template; the session fills in
    ``{remote}``, ``{ring_timeout}``, ``{detail}`` (why SDP negotiation
    failed) and the event's own fields (``{status}``, ``{reason}``,
    ``{code}``). ``status`` is the SIP status the error carries; without it
    the event's ``status`` (or ``code``) is used.
    """

    type: str
    message: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One transition row, with its position in the file for messages and diagrams.

    ``answer`` is the final SIP status the row's answering action sends
    (``SendReject``), ``error`` what its ``NotifyFailed`` reports.
    """

    index: int
    line: int
    roles: frozenset[Role]
    state: str
    event: str
    guards: tuple[GuardTest, ...]
    actions: tuple[str, ...]
    next_state: str
    answer: int | None = None
    error: ErrorSpec | None = None

    @property
    def is_ignore(self) -> bool:
        """True for a row that accepts its event and does nothing."""
        return self.next_state == self.state and not self.actions

    @property
    def role_label(self) -> str:
        """The row's role as written in the table: ``UAC``, ``UAS`` or ``both``."""
        return "both" if len(self.roles) == 2 else next(iter(self.roles)).value


@dataclass(frozen=True, slots=True)
class StateTable:
    """A validated state table; :class:`sipd.session.machine.MachineFactory` builds machines."""

    source: str
    version: int
    initial: str
    states: tuple[str, ...]
    final: frozenset[str]
    events: tuple[str, ...]
    guards: tuple[str, ...]
    actions: tuple[str, ...]
    rows: tuple[Row, ...]
    #: The columns of each state (every declared state has an entry).
    info: tuple[StateInfo, ...] = ()

    def rows_for(self, role: Role) -> tuple[Row, ...]:
        """The rows that apply to ``role``, in file order."""
        return tuple(row for row in self.rows if role in row.roles)

    def reachable_states(self, role: Role) -> frozenset[str]:
        """The states a ``role`` session can reach from ``initial`` through its rows."""
        edges: dict[str, set[str]] = {}
        for row in self.rows_for(role):
            edges.setdefault(row.state, set()).add(row.next_state)
        return frozenset(closure({self.initial}, edges))

    def state_info(self, name: str) -> StateInfo:
        """The columns of state ``name`` (defaults for a state declared by name only)."""
        for info in self.info:
            if info.name == name:
                return info
        return StateInfo(name, 0)


def closure(start: set[str], edges: dict[str, set[str]]) -> set[str]:
    """Every node reachable from ``start`` along ``edges`` (``start`` included)."""
    seen = set(start)
    todo = list(start)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
