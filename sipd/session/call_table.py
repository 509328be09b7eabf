"""The state table as calls use it: the behaviour it names and the rules it must follow.

:func:`load_call_table` reads a table (the shipped one or a user's
``state_table_path``) once per path and checks it against what the session
code implements (:data:`CALL_RULES`): every guard and action it names exists,
every event is an event class, every state says its public ``call_state``,
timers use known delays, failing rows say what they report. A table written
for an older sipd fails here with a message naming what to add
(:data:`RETIRED`).
"""

from __future__ import annotations

import dataclasses

from sipd.config import default_state_table_path
from sipd.session import events as ev
from sipd.session.actions import ACTIONS
from sipd.session.failures import ERROR_TYPES
from sipd.session.guards import GUARDS
from sipd.session.session import Behaviour
from sipd.session.state_table import CallRules, StateTable, load_state_table
from sipd.types import CallState

__all__ = ["BEHAVIOUR", "CALL_RULES", "RETIRED", "load_call_table"]

_TABLE_CACHE: dict[str, StateTable] = {}


#: The behaviour every session runs: the table's guard and action names, implemented.
BEHAVIOUR = Behaviour(guards=GUARDS, actions=ACTIONS)

_TIMERS = "timers belong to states now: give each state that waits a"
#: What tables written for older sipd versions name, and what replaced it.
RETIRED = {
    "StartRingTimer": f"{_TIMERS} 'timer: {{event: RingTimeout, delay: ring_timeout}}' column",
    "StopRingTimer": f"{_TIMERS} 'timer:' column; leaving the state cancels it",
    "ScheduleGlareRetry": f"{_TIMERS} 'timer: {{event: GlareRetry, delay: glare}}' column "
    "(a state such as HoldGlare that waits to retry)",
    "SetHangupPending": "a hang-up while answering is a state: route HangUp in Answering to "
    "one (HangingUpAnswered) whose AckReceived row sends BYE",
    "HangupPending": "a hang-up while answering is a state (HangingUpAnswered), not a guard",
    "ReinviteInProgress": "our re-INVITE is in progress in Holding/Resuming; the glare wait "
    "is its own state (HoldGlare/ResumeGlare)",
    "PendingCancelled": "a CANCEL before any session exists is handled by the interceptor",
}

#: What a table meant for calls must provide (checked when it is loaded).
CALL_RULES = CallRules(
    call_states=tuple(member.name for member in CallState),
    operations=("accept", "reject", "hangup", "hold", "resume", "transfer"),
    delays=("ring_timeout", "glare", "session_refresh", "session_expiry", "media_timeout"),
    error_types=tuple(ERROR_TYPES),
    event_fields={
        name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in ev.EVENT_TYPES.items()
    },
    retired=RETIRED,
)


def load_call_table(path: str | None) -> StateTable:
    """The validated table at ``path`` (None: the shipped one), loaded once per path."""
    key = path or str(default_state_table_path())
    table = _TABLE_CACHE.get(key)
    if table is None:
        table = load_state_table(
            key,
            implemented_guards=set(GUARDS),
            implemented_actions=set(ACTIONS),
            rules=CALL_RULES,
        )
        _TABLE_CACHE[key] = table
    return table
