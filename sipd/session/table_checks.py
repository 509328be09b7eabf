"""Whole-table checks: what needs every row, and what a call table must say.

:class:`TableChecker` finds duplicate and shadowed rows, states that cannot
be reached or cannot end, and names the code does not implement. Given
:class:`CallRules` (the session layer passes them) it also checks the call
columns: each state's public ``call_state``, the application calls it
``allows``, its ``timer``, and the ``error``/``answer`` of failing rows, so
that a table written for an older sipd fails at load time with a message
naming the column to add, never in the middle of a call.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sipd.session.table_model import Role, Row, StateTable, closure
from sipd.session.table_reader import TableReader

__all__ = ["CallRules", "TableChecker"]


@dataclass(frozen=True, slots=True)
class CallRules:
    """What the call session code provides, for checking a table meant for calls."""

    #: Names of the public call states (``ACTIVE``...).
    call_states: Collection[str]
    #: Application calls a state may allow (``accept``, ``hold``...).
    operations: Collection[str]
    #: Timer delays the code computes (``ring_timeout``...).
    delays: Collection[str]
    #: Error classes a failing row may report (``CallRejected``...).
    error_types: Collection[str]
    #: Each event class the code has, with its field names.
    event_fields: Mapping[str, Collection[str]]
    #: Actions and guards of older tables, with what replaced them.
    retired: Mapping[str, str] = field(default_factory=dict)


class TableChecker:
    """The whole-table checks that need every row: duplicates, shadowing, reachability."""

    def __init__(
        self,
        reader: TableReader,
        table: StateTable,
        implemented_guards: Collection[str] | None,
        implemented_actions: Collection[str] | None,
        rules: CallRules | None = None,
    ) -> None:
        self.reader = reader
        self.table = table
        self.implemented = {"guards": implemented_guards, "actions": implemented_actions}
        self.rules = rules

    def check(self) -> None:
        self.check_implemented()
        self.check_rows()
        self.check_graph()
        if self.rules is not None:
            self.check_call_columns(self.rules)

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
                    retired = self.rules.retired.get(name) if self.rules else None
                    known = ", ".join(sorted(implemented)) or "none"
                    self.decl_problem(
                        kind,
                        name,
                        f"{kind[:-1]} '{name}' is not implemented by the code "
                        + (f"any more: {retired}" if retired else f"(implemented: {known})"),
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
            finish[role] = closure(set(table.final), backward)
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

    def check_call_columns(self, rules: CallRules) -> None:
        table = self.table
        for name in table.events:
            if name not in rules.event_fields:
                known = ", ".join(sorted(rules.event_fields))
                hint = rules.retired.get(name)
                self.decl_problem(
                    "events",
                    name,
                    f"event '{name}' has no event class in the code "
                    + (f"any more: {hint}" if hint else f"(known: {known})"),
                )
        states = ", ".join(rules.call_states)
        for name in table.states:
            info = table.state_info(name)
            if info.call_state is None:
                if _snake(name) not in rules.call_states:
                    self.decl_problem(
                        "states",
                        name,
                        f"state '{name}' needs a call_state column: write "
                        f"'- {{name: {name}, call_state: ..., allows: [...]}}' "
                        f"with one of {states}",
                    )
            elif info.call_state not in rules.call_states:
                self.decl_problem(
                    "states", name, f"unknown call_state '{info.call_state}' (known: {states})"
                )
            for word in sorted(info.allows - set(rules.operations)):
                known = ", ".join(sorted(rules.operations))
                self.decl_problem("states", name, f"allows: unknown call '{word}' (known: {known})")
            for timer in info.timers:
                if timer.delay not in rules.delays:
                    known = ", ".join(sorted(rules.delays))
                    self.decl_problem(
                        "states",
                        name,
                        f"timer.delay: unknown delay '{timer.delay}' (known: {known})",
                    )
            if info.timers and name == table.initial:
                self.decl_problem("states", name, "the initial state cannot own a timer")
        for row in table.rows:
            if row.error is not None and row.error.type not in rules.error_types:
                known = ", ".join(sorted(rules.error_types))
                self.row_problem(
                    row, "error.type", f"unknown error '{row.error.type}' (known: {known})"
                )
            if "NotifyFailed" in row.actions and row.error is None:
                self.row_problem(
                    row,
                    "error",
                    "a row that runs NotifyFailed must say what it reports: add "
                    "'error: {type: CallFailed, message: \"...\"}'",
                )
            has_code = "code" in rules.event_fields.get(row.event, ())
            if "SendReject" in row.actions and row.answer is None and not has_code:
                self.row_problem(
                    row,
                    "answer",
                    f"a row that runs SendReject on {row.event} must say which status it "
                    "answers with: add 'answer: 480' (or another 3xx-6xx)",
                )


def _snake(name: str) -> str:
    """``OnHold`` -> ``ON_HOLD``: a plain state name that is a call state needs no column."""
    return "".join(f"_{c}" if c.isupper() else c for c in name).strip("_").upper()
