"""The declarative call state table: its data model, loader and validator.

Call behaviour lives in a YAML file rather than in code so that it can be read,
reviewed, diagrammed (:mod:`sipd.session.diagram`) and replaced by a user
without touching Python. This module turns the text into a checked,
immutable :class:`StateTable`; :mod:`sipd.session.machine` turns that into
Automat machines. Everything that can be checked is checked here, at load
time, so a bad table fails when the daemon starts and never in the middle of a
call.

Format (version 1)
------------------

.. code-block:: yaml

    version: 1
    initial: Idle                 # a declared state; every session starts here
    states: [Idle, Calling, Active, Terminated, Failed]
    final: [Terminated, Failed]   # optional; where a session may end
    events: [MakeCall, Answered, HangUp, Timeout]
    guards: [HasSdp]              # optional; names only, implemented in code
    actions: [SendInvite, StartMedia, NotifyFailed]
    transitions:
      - {role: UAC, state: Idle, event: MakeCall, actions: [SendInvite], next: Calling}
      - {role: both, state: Calling, event: Answered, guards: [HasSdp],
         actions: [StartMedia], next: Active}
      - {role: both, state: Calling, event: Answered, guards: ["!HasSdp"],
         actions: [NotifyFailed], next: Failed}
      - {role: both, state: Active, event: Timeout}          # explicitly ignored

Top-level keys are exactly those above; ``final`` and ``guards`` may be
omitted (empty). Names of states, events, guards and actions match
``[A-Za-z][A-Za-z0-9_]*`` and are declared once.

Each row of ``transitions`` has:

``role`` (required)
    ``UAC``, ``UAS`` or ``both``: which side of a call the row applies to.
``state``, ``event`` (required)
    The declared state the row leaves from and the declared event it handles.
``guards`` (optional list)
    Declared guard names, each optionally negated with a leading ``!``. YAML
    reads an unquoted ``!Name`` as a tag, so negated guards must be quoted.
    The row applies only when every guard passes.
``actions`` (optional list)
    Declared action names, run in order when the row is taken.
``next`` (optional)
    The declared state to enter; omitted means "stay in ``state``".
``answer`` (optional)
    The final SIP status (300-699) the row's ``SendReject`` answers with.
``error`` (optional mapping)
    What the row's ``NotifyFailed`` reports: ``{type: CallTimeout, message:
    "...", status: 408}``; see :class:`ErrorSpec`.

A state is declared by name, or as a mapping with columns:
``{name: Incoming, call_state: RINGING, allows: [accept, reject, hangup],
timer: {event: RingTimeout, delay: ring_timeout}}``. ``call_state`` is the
public :class:`~sipd.types.CallState` the state shows as, ``allows`` the
application calls it takes, ``timer`` a timer the state owns: started when
the state is entered, cancelled when it is left (see :class:`TimerSpec`).

Rows for the same (role, state, event) are tried in file order and the first
whose guards all pass is taken. A row that stays in its state and has no
actions is an explicit *ignore*: the event is accepted and recorded, nothing
happens. An event with no matching row is an error at run time, so every event
a state may legitimately see should have a row.

Validation
----------

Each problem is reported as ``file:line: key path: what is wrong``, e.g.
``etc/state_table.yaml:42: transitions[7].event: unknown event 'Hangup'
(known: ...)``, and all problems of one load are raised together in one
:class:`~sipd.errors.StateTableError`. Checked are: YAML syntax; missing,
unknown and duplicate keys; value types; unknown names; a missing or undeclared
``initial``; negated-and-plain use of one guard in a row; duplicate rows (same
state, event and guard set, with overlapping roles); rows that can never be
taken because an earlier row for the same state and event matches whenever
they would; rows that leave a final state; states reachable from ``initial``
by no role; role-specific rows whose state that role never reaches; reachable
non-final states from which no final state can be reached. When the caller
passes the guard and action names its code implements, declared names that
are not implemented are errors too.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from os import PathLike
from pathlib import Path

import yaml

from sipd.errors import StateTableError
from sipd.session.table_checks import CallRules, TableChecker
from sipd.session.table_model import (
    ErrorSpec,
    GuardTest,
    Role,
    Row,
    StateInfo,
    StateTable,
    TimerSpec,
)
from sipd.session.table_reader import TableReader

__all__ = [
    "CallRules",
    "ErrorSpec",
    "GuardTest",
    "Role",
    "Row",
    "StateInfo",
    "StateTable",
    "TimerSpec",
    "load_state_table",
    "parse_state_table",
]


def load_state_table(
    path: str | PathLike[str],
    *,
    implemented_guards: Collection[str] | None = None,
    implemented_actions: Collection[str] | None = None,
    rules: CallRules | None = None,
) -> StateTable:
    """Read and validate the table at ``path``; see :func:`parse_state_table`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StateTableError((f"{source}: cannot read state table: {exc}",)) from exc
    return parse_state_table(
        text,
        source,
        implemented_guards=implemented_guards,
        implemented_actions=implemented_actions,
        rules=rules,
    )


def parse_state_table(
    text: str,
    source: str = "<string>",
    *,
    implemented_guards: Collection[str] | None = None,
    implemented_actions: Collection[str] | None = None,
    rules: CallRules | None = None,
) -> StateTable:
    """Parse and validate table text; ``source`` names the file in error messages.

        Pass ``implemented_guards`` / ``implemented_actions`` (the names the session
        code can evaluate and run) so that a table naming something the code lacks
        is refused here; ``rules`` adds the checks of a table meant for calls
    (:class:`CallRules`). Raises :class:`~sipd.errors.StateTableError`.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = exc.problem or exc.context or "invalid YAML"
        lines = text.splitlines()
        if 0 < line <= len(lines) and re.search(r"guards:.*[\[,\s]!", lines[line - 1]):
            what += ' (negated guards must be quoted: "!Name")'
        raise StateTableError((f"{source}:{line}: YAML syntax error: {what}",)) from exc
    except yaml.YAMLError as exc:
        raise StateTableError((f"{source}:1: YAML error: {exc}",)) from exc
    reader = TableReader(source)
    table = reader.read(root)
    if table is not None and not reader.problems:
        TableChecker(reader, table, implemented_guards, implemented_actions, rules).check()
    if reader.problems or table is None:
        raise StateTableError(tuple(reader.problems))
    return table
