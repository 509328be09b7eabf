"""Reads a state table's YAML node tree into a :class:`StateTable`, collecting problems.

Every problem names the file, the line and the key path
(``etc/state_table.yaml:42: transitions[7].event: unknown event 'Hangup'``)
so that a broken table is fixed from the message alone. Whole-table checks
that need every row (duplicates, reachability, what the code implements) are
in :mod:`sipd.session.table_checks`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sipd.session.table_model import (
    ErrorSpec,
    GuardTest,
    Role,
    Row,
    StateInfo,
    StateTable,
    TimerSpec,
)

__all__ = ["TableReader", "line_of", "unknown_name"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_INT_TAG = "tag:yaml.org,2002:int"
_TOP_REQUIRED = ("version", "initial", "states", "events", "actions", "transitions")
_TOP_OPTIONAL = ("final", "guards")
_ROW_REQUIRED = ("role", "state", "event")
_ROW_OPTIONAL = ("guards", "actions", "next")
_ROW_COLUMNS = ("answer", "error")
_STATE_REQUIRED = ("name",)
_STATE_OPTIONAL = ("call_state", "allows", "timer", "timers")
_ROLE_WORDS = {"UAC": "UAC", "UAS": "UAS", "both": "both"}


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, SequenceNode) else "a mapping"


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    known = list(known)
    hint = difflib.get_close_matches(name, known, n=1)
    did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
    return f"unknown {kind} '{name}' (known: {', '.join(known) or 'none'}){did_you_mean}"


class TableReader:
    """Turns the composed YAML node tree into a StateTable, collecting problems."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        # Declaration lines, for messages about whole states or names.
        self.decl_lines: dict[tuple[str, str], tuple[int, str]] = {}

    def problem(self, node: Node | int, path: str, detail: str) -> None:
        line = node if isinstance(node, int) else line_of(node)
        self.problems.append(f"{self.source}:{line}: {path}: {detail}")

    def mapping(
        self,
        node: Node,
        path: str,
        required: tuple[str, ...],
        optional: tuple[str, ...],
        columns: tuple[str, ...] = (),
    ) -> dict[str, Node] | None:
        """The keys of a mapping node; ``columns`` are optional keys of call tables."""
        if not isinstance(node, MappingNode):
            self.problem(node, path or "(top level)", "expected a mapping")
            return None
        allowed = required + optional + columns
        found: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else "?"
            where = f"{path}.{key}" if path else key
            if key not in allowed:
                detail = f"unknown key (allowed: {', '.join(required + optional)})"
                if columns:
                    detail += f" or a call column ({', '.join(columns)})"
                self.problem(key_node, where, detail)
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
            self.decl_lines[key, name] = (line_of(item), path)
        return result

    def declared(self, node: Node, path: str, kind: str, known: list[str]) -> str | None:
        name = self.name(node, path)
        if name is not None and name not in known:
            self.problem(node, path, unknown_name(kind, name, known))
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
        states, info_nodes = self.state_entries(top.get("states"))
        final = self.names(top.get("final"), "final")
        events = self.names(top.get("events"), "events")
        guards = self.names(top.get("guards"), "guards")
        actions = self.names(top.get("actions"), "actions")
        for name in final:
            if name not in states:
                line, path = self.decl_lines["final", name]
                self.problem(line, path, unknown_name("state", name, states))
        initial = None
        if "initial" in top:
            initial = self.declared(top["initial"], "initial", "state", states)
        rows = self.rows(top.get("transitions"), states, events, guards, actions)
        info = [self.state_info(name, node, events) for name, node in info_nodes]
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
            info=tuple(i for i in info if i is not None),
        )

    def state_entries(self, node: Node | None) -> tuple[list[str], list[tuple[str, Node]]]:
        """The declared state names; an entry is a name or a mapping with columns."""
        if node is None:
            return [], []
        if not isinstance(node, SequenceNode):
            self.problem(node, "states", "expected a list of names")
            return [], []
        names: list[str] = []
        entries: list[tuple[str, Node]] = []
        for i, item in enumerate(node.value):
            path = f"states[{i}]"
            name_node = item
            if isinstance(item, MappingNode):
                fields = self.mapping(item, path, _STATE_REQUIRED, _STATE_OPTIONAL)
                if fields is None or "name" not in fields:
                    continue
                name_node = fields["name"]
                path = f"{path}.name"
            name = self.name(name_node, path)
            if name is None:
                continue
            if name in names:
                self.problem(name_node, path, f"'{name}' is declared twice")
                continue
            names.append(name)
            entries.append((name, item))
            self.decl_lines["states", name] = (line_of(item), f"states[{i}]")
        return names, entries

    def state_info(self, name: str, node: Node, events: list[str]) -> StateInfo | None:
        """The columns of one state entry (none for a plain name)."""
        line, path = self.decl_lines["states", name]
        if not isinstance(node, MappingNode):
            return StateInfo(name, line)
        fields = {
            key.value: value
            for key, value in node.value
            if isinstance(key, ScalarNode) and key.value in _STATE_OPTIONAL
        }
        call_state = None
        if "call_state" in fields:
            call_state = self.name(fields["call_state"], f"{path}.call_state")
        allows: list[str] = []
        if "allows" in fields:
            value = fields["allows"]
            if not isinstance(value, SequenceNode):
                self.problem(value, f"{path}.allows", "expected a list of call names")
            else:
                for j, item in enumerate(value.value):
                    word = self.name(item, f"{path}.allows[{j}]")
                    if word is not None:
                        allows.append(word)
        timers: list[TimerSpec | None] = []
        if "timer" in fields:
            timers.append(self.timer(fields["timer"], f"{path}.timer", events))
        if "timers" in fields:
            value = fields["timers"]
            if not isinstance(value, SequenceNode):
                self.problem(value, f"{path}.timers", "expected a list of timers")
            else:
                for j, item in enumerate(value.value):
                    timers.append(self.timer(item, f"{path}.timers[{j}]", events))
        found = tuple(t for t in timers if t is not None)
        return StateInfo(name, line, call_state, frozenset(allows), found)

    def timer(self, node: Node, path: str, events: list[str]) -> TimerSpec | None:
        fields = self.mapping(node, path, ("event", "delay"), ())
        if fields is None or len(fields) < 2:
            return None
        event = self.declared(fields["event"], f"{path}.event", "event", events)
        delay = self.name(fields["delay"], f"{path}.delay")
        if event is None or delay is None:
            return None
        return TimerSpec(event, delay)

    def answer(self, node: Node, path: str) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _INT_TAG:
            value = int(node.value)
            if 300 <= value <= 699:
                return value
        self.problem(node, path, f"expected a final SIP status 300-699, got {_describe(node)}")
        return None

    def error(self, node: Node, path: str) -> ErrorSpec | None:
        fields = self.mapping(node, path, ("type", "message"), ("status",))
        if fields is None or "type" not in fields or "message" not in fields:
            return None
        kind = self.name(fields["type"], f"{path}.type")
        message = fields["message"]
        if not isinstance(message, ScalarNode) or not str(message.value).strip():
            self.problem(message, f"{path}.message", "expected the error's message text")
            return None
        status = self.answer(fields["status"], f"{path}.status") if "status" in fields else None
        if kind is None:
            return None
        return ErrorSpec(kind, str(message.value), status)

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
            fields = self.mapping(row_node, path, _ROW_REQUIRED, _ROW_OPTIONAL, _ROW_COLUMNS)
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
            answer = self.answer(fields["answer"], f"{path}.answer") if "answer" in fields else None
            error = self.error(fields["error"], f"{path}.error") if "error" in fields else None
            if len(self.problems) > before:
                continue
            assert roles and state and event and next_state
            rows.append(
                Row(
                    index,
                    line_of(row_node),
                    roles,
                    state,
                    event,
                    tests,
                    names,
                    next_state,
                    answer,
                    error,
                )
            )
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
