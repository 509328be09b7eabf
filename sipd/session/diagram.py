"""Draw a state table as Mermaid or Graphviz text, for the documentation.

The diagrams come from the same validated table the machines are built from,
so the pictures in the docs cannot drift from the behaviour. Each edge is
labelled ``event [guards] / actions``; on a diagram of both roles, rows that
apply to one role only are prefixed with ``(UAC)`` or ``(UAS)``. Ignore rows
(same state, no actions) are left out unless asked for, since they say "nothing
happens" and would clutter the picture.

States are annotated with their table columns (:func:`state_notes`): the
public ``call_state`` they show as and each timer they own, one line per
timer, e.g. ``Incoming`` reads ``RINGING`` and ``timer RingTimeout after
ring_timeout``. A state declared by name only has no annotation.
"""

from __future__ import annotations

from sipd.session.state_table import Role, Row, StateTable

__all__ = ["edge_label", "state_notes", "to_dot", "to_mermaid"]


def edge_label(row: Row, *, show_role: bool = False) -> str:
    """The text of one row's edge: ``event [guards] / actions``."""
    label = row.event
    if row.guards:
        label += f" [{', '.join(str(test) for test in row.guards)}]"
    if row.actions:
        label += f" / {', '.join(row.actions)}"
    if show_role and row.role_label != "both":
        label = f"({row.role_label}) {label}"
    return label


def state_notes(table: StateTable, state: str) -> list[str]:
    """The annotation lines of one state: its ``call_state`` and each of its timers."""
    info = table.state_info(state)
    notes = []
    if info.call_state is not None:
        notes.append(info.call_state)
    notes.extend(f"timer {timer.event} after {timer.delay}" for timer in info.timers)
    return notes


def _rows(table: StateTable, role: Role | None, show_ignored: bool) -> list[Row]:
    if role is None:
        rows = table.rows
    else:
        # A "both" row from a state this role never reaches is not part of its picture.
        reachable = table.reachable_states(role)
        rows = tuple(row for row in table.rows_for(role) if row.state in reachable)
    return [row for row in rows if show_ignored or not row.is_ignore]


def _used_states(table: StateTable, rows: list[Row]) -> list[str]:
    used = {table.initial}
    for row in rows:
        used.update((row.state, row.next_state))
    return [state for state in table.states if state in used]


def to_mermaid(
    table: StateTable,
    role: Role | None = None,
    *,
    show_ignored: bool = False,
    annotate: bool = True,
) -> str:
    """A Mermaid ``stateDiagram-v2`` of the table, or of one role's rows.

    With ``annotate`` each state with columns gets description lines
    (``Calling : CALLING``) from :func:`state_notes`.
    """
    rows = _rows(table, role, show_ignored)
    used = _used_states(table, rows)
    lines = ["stateDiagram-v2", f"    [*] --> {table.initial}"]
    if annotate:
        for state in used:
            lines.extend(f"    {state} : {note}" for note in state_notes(table, state))
    for row in rows:
        label = edge_label(row, show_role=role is None)
        lines.append(f"    {row.state} --> {row.next_state} : {label}")
    for state in used:
        if state in table.final:
            lines.append(f"    {state} --> [*]")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(
    table: StateTable,
    role: Role | None = None,
    *,
    show_ignored: bool = False,
    annotate: bool = True,
) -> str:
    """A Graphviz ``digraph`` of the table, or of one role's rows; final states are doubled.

    With ``annotate`` a state's label adds its :func:`state_notes`, one per line.
    """
    rows = _rows(table, role, show_ignored)
    name = "state_table" if role is None else f"state_table_{role.value}"
    lines = [
        f"digraph {_quote(name)} {{",
        "    rankdir=LR;",
        "    node [shape=box, style=rounded];",
        '    "__start" [shape=point, label=""];',
    ]
    for state in _used_states(table, rows):
        extra = ", peripheries=2" if state in table.final else ""
        notes = state_notes(table, state) if annotate else []
        label = "\\n".join(_quote(text)[1:-1] for text in (state, *notes))
        lines.append(f'    {_quote(state)} [label="{label}"{extra}];')
    lines.append(f'    "__start" -> {_quote(table.initial)};')
    for row in rows:
        label = _quote(edge_label(row, show_role=role is None))
        lines.append(f"    {_quote(row.state)} -> {_quote(row.next_state)} [label={label}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
