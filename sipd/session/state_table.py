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

import difflib
import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sipd.errors import StateTableError

__all__ = [
    "GuardTest",
    "Role",
    "Row",
    "StateTable",
    "load_state_table",
    "parse_state_table",
]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_INT_TAG = "tag:yaml.org,2002:int"
_TOP_REQUIRED = ("version", "initial", "states", "events", "actions", "transitions")
_TOP_OPTIONAL = ("final", "guards")
_ROW_REQUIRED = ("role", "state", "event")
_ROW_OPTIONAL = ("guards", "actions", "next")
_ROLE_WORDS = {"UAC": "UAC", "UAS": "UAS", "both": "both"}


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
class Row:
    """One transition row, with its position in the file for messages and diagrams."""

    index: int
    line: int
    roles: frozenset[Role]
    state: str
    event: str
    guards: tuple[GuardTest, ...]
    actions: tuple[str, ...]
    next_state: str

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

    def rows_for(self, role: Role) -> tuple[Row, ...]:
        """The rows that apply to ``role``, in file order."""
        return tuple(row for row in self.rows if role in row.roles)

    def reachable_states(self, role: Role) -> frozenset[str]:
        """The states a ``role`` session can reach from ``initial`` through its rows."""
        edges: dict[str, set[str]] = {}
        for row in self.rows_for(role):
            edges.setdefault(row.state, set()).add(row.next_state)
        return frozenset(_closure({self.initial}, edges))


def load_state_table(
    path: str | PathLike[str],
    *,
    implemented_guards: Collection[str] | None = None,
    implemented_actions: Collection[str] | None = None,
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
    )


def parse_state_table(
    text: str,
    source: str = "<string>",
    *,
    implemented_guards: Collection[str] | None = None,
    implemented_actions: Collection[str] | None = None,
) -> StateTable:
    """Parse and validate table text; ``source`` names the file in error messages.

    Pass ``implemented_guards`` / ``implemented_actions`` (the names the session
    code can evaluate and run) so that a table naming something the code lacks
    is refused here. Raises :class:`~sipd.errors.StateTableError`.
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
    reader = _Reader(source)
    table = reader.read(root)
    if table is not None and not reader.problems:
        _Checker(reader, table, implemented_guards, implemented_actions).check()
    if reader.problems or table is None:
        raise StateTableError(tuple(reader.problems))
    return table


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, SequenceNode) else "a mapping"


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    known = list(known)
    hint = difflib.get_close_matches(name, known, n=1)
    did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
    return f"unknown {kind} '{name}' (known: {', '.join(known) or 'none'}){did_you_mean}"


class _Reader:
    """Turns the composed YAML node tree into a StateTable, collecting problems."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        # Declaration lines, for messages about whole states or names.
        self.decl_lines: dict[tuple[str, str], tuple[int, str]] = {}

    def problem(self, node: Node | int, path: str, detail: str) -> None:
        line = node if isinstance(node, int) else _line(node)
        self.problems.append(f"{self.source}:{line}: {path}: {detail}")

    def mapping(
        self, node: Node, path: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, Node] | None:
        if not isinstance(node, MappingNode):
            self.problem(node, path or "(top level)", "expected a mapping")
            return None
        allowed = required + optional
        found: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else "?"
            where = f"{path}.{key}" if path else key
            if key not in allowed:
                self.problem(key_node, where, f"unknown key (allowed: {', '.join(allowed)})")
            elif key in found:
                self.problem(key_node, where, "duplicate key")
            else:
                found[key] = value_node
        for key in required:
            if key not in found:
                self.problem(node, f"{path}.{key}" if path else key, "missing required key")
        return found

    def name(self, node: Node, path: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag.startswith("!"):
            self.problem(
                node, path, f"YAML tag '{node.tag}' where a name was expected; quote it: \"!...\""
            )
            return None
        if not isinstance(node, ScalarNode) or not _NAME.match(str(node.value)):
            self.problem(node, path, f"expected a name like 'Idle', got {_describe(node)}")
            return None
        return str(node.value)

    def names(self, node: Node | None, key: str) -> list[str]:
        if node is None:
            return []
        if not isinstance(node, SequenceNode):
            self.problem(node, key, "expected a list of names")
            return []
        result: list[str] = []
        for i, item in enumerate(node.value):
            path = f"{key}[{i}]"
            name = self.name(item, path)
            if name is None:
                continue
            if name in result:
                self.problem(item, path, f"'{name}' is declared twice")
                continue
            result.append(name)
            self.decl_lines[key, name] = (_line(item), path)
        return result

    def declared(self, node: Node, path: str, kind: str, known: list[str]) -> str | None:
        name = self.name(node, path)
        if name is not None and name not in known:
            self.problem(node, path, _unknown(kind, name, known))
            return None
        return name

    def read(self, root: Node | None) -> StateTable | None:
        if root is None:
            self.problem(1, "(top level)", "the state table is empty")
            return None
        top = self.mapping(root, "", _TOP_REQUIRED, _TOP_OPTIONAL)
        if top is None:
            return None
        version = top.get("version")
        if version is not None and not (
            isinstance(version, ScalarNode) and version.tag == _INT_TAG and version.value == "1"
        ):
            self.problem(
                version, "version", f"unsupported version {_describe(version)} (supported: 1)"
            )
        states = self.names(top.get("states"), "states")
        final = self.names(top.get("final"), "final")
        events = self.names(top.get("events"), "events")
        guards = self.names(top.get("guards"), "guards")
        actions = self.names(top.get("actions"), "actions")
        for name in final:
            if name not in states:
                line, path = self.decl_lines["final", name]
                self.problem(line, path, _unknown("state", name, states))
        initial = None
        if "initial" in top:
            initial = self.declared(top["initial"], "initial", "state", states)
        rows = self.rows(top.get("transitions"), states, events, guards, actions)
        if initial is None or self.problems:
            return None
        return StateTable(
            source=self.source,
            version=1,
            initial=initial,
            states=tuple(states),
            final=frozenset(final),
            events=tuple(events),
            guards=tuple(guards),
            actions=tuple(actions),
            rows=tuple(rows),
        )

    def rows(
        self,
        node: Node | None,
        states: list[str],
        events: list[str],
        guards: list[str],
        actions: list[str],
    ) -> list[Row]:
        if node is None:
            return []
        if not isinstance(node, SequenceNode):
            self.problem(node, "transitions", "expected a list of rows")
            return []
        rows: list[Row] = []
        for index, row_node in enumerate(node.value):
            before = len(self.problems)
            path = f"transitions[{index}]"
            fields = self.mapping(row_node, path, _ROW_REQUIRED, _ROW_OPTIONAL)
            if fields is None:
                continue
            roles = self.roles(fields.get("role"), f"{path}.role")
            state = event = None
            if "state" in fields:
                state = self.declared(fields["state"], f"{path}.state", "state", states)
            if "event" in fields:
                event = self.declared(fields["event"], f"{path}.event", "event", events)
            next_state = state
            if "next" in fields:
                next_state = self.declared(fields["next"], f"{path}.next", "state", states)
            tests = self.guard_tests(fields.get("guards"), f"{path}.guards", guards)
            names = self.action_names(fields.get("actions"), f"{path}.actions", actions)
            if len(self.problems) > before:
                continue
            assert roles and state and event and next_state
            rows.append(Row(index, _line(row_node), roles, state, event, tests, names, next_state))
        return rows

    def roles(self, node: Node | None, path: str) -> frozenset[Role]:
        if node is None:
            return frozenset()
        word = node.value if isinstance(node, ScalarNode) else None
        if word not in _ROLE_WORDS:
            self.problem(node, path, f"expected UAC, UAS or both, got {word!r}")
            return frozenset()
        return frozenset(Role) if word == "both" else frozenset({Role(word)})

    def guard_tests(self, node: Node | None, path: str, known: list[str]) -> tuple[GuardTest, ...]:
        if node is None:
            return ()
        if not isinstance(node, SequenceNode):
            self.problem(node, path, "expected a list of guard names")
            return ()
        tests: list[GuardTest] = []
        for i, item in enumerate(node.value):
            where = f"{path}[{i}]"
            negated = False
            if isinstance(item, ScalarNode) and not item.tag.startswith("!"):
                raw = str(item.value)
                if raw.startswith("!"):
                    negated = True
                    item = ScalarNode(item.tag, raw[1:], item.start_mark, item.end_mark)
            name = self.declared(item, where, "guard", known)
            if name is None:
                continue
            twin = next((t for t in tests if t.name == name), None)
            if twin is not None:
                detail = (
                    f"guard '{name}' appears twice in this row"
                    if twin.negated == negated
                    else f"guard '{name}' is both required and negated: the row can never be taken"
                )
                self.problem(item, where, detail)
                continue
            tests.append(GuardTest(name, negated))
        return tuple(tests)

    def action_names(self, node: Node | None, path: str, known: list[str]) -> tuple[str, ...]:
        if node is None:
            return ()
        if not isinstance(node, SequenceNode):
            self.problem(node, path, "expected a list of action names")
            return ()
        names = [
            self.declared(item, f"{path}[{i}]", "action", known)
            for i, item in enumerate(node.value)
        ]
        return tuple(name for name in names if name is not None)


class _Checker:
    """The whole-table checks that need every row: duplicates, shadowing, reachability."""

    def __init__(
        self,
        reader: _Reader,
        table: StateTable,
        implemented_guards: Collection[str] | None,
        implemented_actions: Collection[str] | None,
    ) -> None:
        self.reader = reader
        self.table = table
        self.implemented = {"guards": implemented_guards, "actions": implemented_actions}

    def check(self) -> None:
        self.check_implemented()
        self.check_rows()
        self.check_graph()

    def row_problem(self, row: Row, key: str, detail: str) -> None:
        self.reader.problem(row.line, f"transitions[{row.index}].{key}", detail)

    def decl_problem(self, kind: str, name: str, detail: str) -> None:
        line, path = self.reader.decl_lines[kind, name]
        self.reader.problem(line, path, detail)

    def check_implemented(self) -> None:
        for kind, declared in (("guards", self.table.guards), ("actions", self.table.actions)):
            implemented = self.implemented[kind]
            if implemented is None:
                continue
            for name in declared:
                if name not in implemented:
                    known = ", ".join(sorted(implemented)) or "none"
                    self.decl_problem(
                        kind,
                        name,
                        f"{kind[:-1]} '{name}' is not implemented by the code "
                        f"(implemented: {known})",
                    )

    def check_rows(self) -> None:
        earlier: dict[tuple[str, str], list[Row]] = {}
        for row in self.table.rows:
            if row.state in self.table.final and row.next_state != row.state:
                self.row_problem(
                    row,
                    "next",
                    f"a row may not leave final state '{row.state}'; omit next to stay in it",
                )
            guard_set = frozenset(row.guards)
            for prior in earlier.setdefault((row.state, row.event), []):
                if not prior.roles & row.roles:
                    continue
                prior_set = frozenset(prior.guards)
                where = f"transitions[{prior.index}] (line {prior.line})"
                if prior_set == guard_set:
                    self.row_problem(row, "event", f"duplicate of {where}")
                    break
                if prior.roles >= row.roles and prior_set <= guard_set:
                    self.row_problem(
                        row, "guards", f"never taken: {where} matches first whenever this row would"
                    )
                    break
            earlier[row.state, row.event].append(row)

    def check_graph(self) -> None:
        table = self.table
        reach: dict[Role, set[str]] = {}
        finish: dict[Role, set[str]] = {}
        for role in Role:
            backward: dict[str, set[str]] = {}
            for row in table.rows_for(role):
                backward.setdefault(row.next_state, set()).add(row.state)
            reach[role] = set(table.reachable_states(role))
            finish[role] = _closure(set(table.final), backward)
        for state in table.states:
            roles = [role for role in Role if state in reach[role]]
            if not roles:
                self.decl_problem(
                    "states",
                    state,
                    f"state '{state}' cannot be reached from initial state '{table.initial}'",
                )
                continue
            stuck = [r.value for r in roles if state not in table.final and state not in finish[r]]
            if stuck:
                finals = ", ".join(sorted(table.final)) or "none"
                self.decl_problem(
                    "states",
                    state,
                    f"state '{state}' is not final but no final state can be reached from it "
                    f"in {' and '.join(stuck)} sessions (final: {finals})",
                )
        for row in table.rows:
            # A row is dead when none of its roles reaches its state; when no role
            # reaches the state at all, the state's own problem already says so.
            if not any(row.state in reach[r] for r in row.roles) and any(
                row.state in reach[r] for r in Role
            ):
                self.row_problem(
                    row,
                    "state",
                    f"{row.role_label} sessions never reach state '{row.state}', "
                    "so this row never applies",
                )


def _closure(start: set[str], edges: dict[str, set[str]]) -> set[str]:
    seen = set(start)
    todo = list(start)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
