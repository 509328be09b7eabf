"""Tests for loading and validating state tables, and for drawing them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipd.errors import SipdError, StateTableError
from sipd.session.diagram import edge_label, state_notes, to_dot, to_mermaid
from sipd.session.state_table import (
    GuardTest,
    Role,
    load_state_table,
    parse_state_table,
)

FIXTURE = Path(__file__).parent / "fixtures" / "small_state_table.yaml"
VALID = FIXTURE.read_text(encoding="utf-8")
SOURCE = "etc/test_table.yaml"
ALL_ACTIONS = {
    "SendInvite",
    "SendRinging",
    "SendOk",
    "SendBye",
    "StartMedia",
    "NotifyAnswered",
    "NotifyFailed",
    "Cleanup",
}


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the one line of ``text`` that contains ``fragment``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(hits) == 1, (fragment, hits)
    return hits[0]


def edited(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def with_rows(*rows: str) -> str:
    """The valid table with extra flow-style rows appended (indices 17, 18, ...)."""
    return VALID + "".join(f"  - {row}\n" for row in rows)


def problems(text: str, **kwargs: object) -> tuple[str, ...]:
    with pytest.raises(StateTableError) as info:
        parse_state_table(text, SOURCE, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def only_problem(text: str, **kwargs: object) -> str:
    found = problems(text, **kwargs)
    assert len(found) == 1, found
    return found[0]


# --- a valid table ---------------------------------------------------------------


def test_valid_table_loads_with_declared_names_and_rows() -> None:
    table = load_state_table(FIXTURE)
    assert table.source == str(FIXTURE)
    assert table.initial == "Idle"
    assert table.states[0] == "Idle" and "Terminating" in table.states
    assert table.final == frozenset({"Terminated", "Failed"})
    assert table.guards == ("HasSdp", "Reliable")
    assert len(table.rows) == VALID.count("role:")
    assert [row.index for row in table.rows] == list(range(len(table.rows)))


def test_rows_carry_roles_guards_actions_and_their_yaml_line() -> None:
    table = parse_state_table(VALID, SOURCE)
    first, answered_no_sdp = table.rows[0], table.rows[4]
    assert first.roles == frozenset({Role.UAC})
    assert first.line == line_of(VALID, "event: MakeCall")
    assert first.actions == ("SendInvite",) and first.next_state == "Calling"
    assert answered_no_sdp.roles == frozenset(Role)
    assert answered_no_sdp.guards == (GuardTest("HasSdp", negated=True),)
    assert str(answered_no_sdp.guards[0]) == "!HasSdp"
    block_row = table.rows[12]
    assert (block_row.state, block_row.event) == ("Active", "HangUp")
    assert block_row.line == line_of(VALID, "event: HangUp") - 2


def test_row_without_next_stays_in_its_state_and_is_an_ignore_row() -> None:
    table = parse_state_table(VALID, SOURCE)
    ignore = table.rows[6]
    assert (ignore.state, ignore.event, ignore.next_state) == ("Ringing", "Provisional", "Ringing")
    assert ignore.is_ignore
    assert not table.rows[0].is_ignore


def test_rows_for_filters_by_role_and_keeps_file_order() -> None:
    table = parse_state_table(VALID, SOURCE)
    uas = table.rows_for(Role.UAS)
    assert all(Role.UAS in row.roles for row in uas)
    assert [row.index for row in uas] == sorted(row.index for row in uas)
    assert "MakeCall" not in {row.event for row in uas}
    assert "Incoming" not in {row.event for row in table.rows_for(Role.UAC)}


def test_reachable_states_differ_per_role() -> None:
    table = parse_state_table(VALID, SOURCE)
    assert "Calling" in table.reachable_states(Role.UAC)
    assert "Calling" not in table.reachable_states(Role.UAS)
    assert "Failed" not in table.reachable_states(Role.UAS)


def test_implemented_names_that_cover_the_table_load() -> None:
    table = parse_state_table(
        VALID,
        SOURCE,
        implemented_actions=ALL_ACTIONS | {"Extra"},
        implemented_guards={"HasSdp", "Reliable"},
    )
    assert table.actions[0] == "SendInvite"


def test_same_state_event_and_guards_for_disjoint_roles_is_not_a_duplicate() -> None:
    text = with_rows("{role: UAS, state: Idle, event: MakeCall, actions: [SendInvite], next: Idle}")
    table = parse_state_table(text, SOURCE)
    assert table.rows[-1].roles == frozenset({Role.UAS})


# --- validation errors -----------------------------------------------------------


def test_error_is_a_sipd_error_naming_file_line_row_and_key() -> None:
    text = edited("event: HangUp", "event: Hangup")
    problem = only_problem(text)
    line = line_of(text, "event: Hangup")
    assert problem.startswith(f"{SOURCE}:{line}: transitions[12].event: unknown event 'Hangup'")
    assert "(known: MakeCall, Incoming," in problem
    assert "did you mean 'HangUp'?" in problem
    assert issubclass(StateTableError, SipdError)


def test_yaml_syntax_error_names_file_and_line() -> None:
    text = edited("next: Terminating}", "next: Terminating")
    problem = only_problem(text)
    assert re.match(rf"{re.escape(SOURCE)}:\d+: YAML syntax error: ", problem)
    bad_line = int(problem.split(":")[1])
    assert line_of(text, "event: Error") <= bad_line <= line_of(text, "event: Error") + 1


def test_unquoted_negated_guard_gets_a_quoting_hint() -> None:
    text = edited('guards: ["!HasSdp"]', "guards: [!HasSdp]")
    problem = only_problem(text)
    assert problem.startswith(f"{SOURCE}:{line_of(text, '[!HasSdp]')}: YAML syntax error")
    assert 'negated guards must be quoted: "!Name"' in problem


def test_block_style_unquoted_negated_guard_is_reported_as_a_tag() -> None:
    text = with_rows(
        "role: UAC\n    state: Ringing\n    event: Timeout\n    guards:\n      - !Reliable"
    )
    problem = only_problem(text)
    assert problem.startswith(
        f"{SOURCE}:{line_of(text, '- !Reliable')}: transitions[17].guards[0]:"
    )
    assert "YAML tag '!Reliable'" in problem


@pytest.mark.parametrize(
    ("old", "new", "key", "detail"),
    [
        ("next: Calling}", "next: Caling}", "transitions[0].next", "unknown state 'Caling'"),
        (
            "state: Idle, event: MakeCall",
            "state: Idel, event: MakeCall",
            "transitions[0].state",
            "unknown state 'Idel'",
        ),
        (
            "actions: [SendInvite]",
            "actions: [SendInvit]",
            "transitions[0].actions[0]",
            "unknown action 'SendInvit'",
        ),
        (
            "guards: [HasSdp], actions: [StartMedia",
            "guards: [HasSDP], actions: [StartMedia",
            "transitions[3].guards[0]",
            "unknown guard 'HasSDP'",
        ),
        (
            'guards: ["!HasSdp"]',
            'guards: ["!Sdp"]',
            "transitions[4].guards[0]",
            "unknown guard 'Sdp'",
        ),
        (
            "{role: UAC, state: Idle",
            "{role: UAX, state: Idle",
            "transitions[0].role",
            "expected UAC, UAS or both, got 'UAX'",
        ),
        ("{role: UAC, state: Idle", "{state: Idle", "transitions[0].role", "missing required key"),
        (
            "next: Calling}",
            "next: Calling, nxt: Idle}",
            "transitions[0].nxt",
            "unknown key (allowed: role, state, event, guards, actions, next)",
        ),
        (
            "actions: [SendInvite], next",
            "actions: SendInvite, next",
            "transitions[0].actions",
            "expected a list of action names",
        ),
    ],
)
def test_row_errors_name_the_row_and_key(old: str, new: str, key: str, detail: str) -> None:
    text = edited(old, new)
    problem = only_problem(text)
    assert problem.startswith(f"{SOURCE}:{line_of(text, new)}: {key}: {detail}")


@pytest.mark.parametrize(
    ("old", "new", "anchor", "expected"),
    [
        ("initial: Idle\n", "", "version: 1", "initial: missing required key"),
        ("initial: Idle", "initial: Idol", "initial: Idol", "initial: unknown state 'Idol'"),
        (
            "version: 1",
            "version: 2",
            "version: 2",
            "version: unsupported version '2' (supported: 1)",
        ),
        ("version: 1", "version: 1\ntranstions: []", "transtions", "transtions: unknown key"),
        ("version: 1", "version: 1\nversion: 01", "version: 01", "version: duplicate key"),
        (
            "final: [Terminated, Failed]",
            "final: [Terminated, Fail]",
            "final: [",
            "final[1]: unknown state 'Fail'",
        ),
        (
            "states: [Idle,",
            "states: [Idle, Idle,",
            "states: [",
            "states[1]: 'Idle' is declared twice",
        ),
        (
            "states: [Idle,",
            "states: [2Idle, Idle,",
            "states: [",
            "states[0]: expected a name like 'Idle', got '2Idle'",
        ),
    ],
)
def test_top_level_errors_name_the_key_and_line(
    old: str, new: str, anchor: str, expected: str
) -> None:
    text = edited(old, new)
    assert only_problem(text).startswith(f"{SOURCE}:{line_of(text, anchor)}: {expected}")


def test_duplicate_row_names_the_earlier_row_and_its_line() -> None:
    text = with_rows(
        "{role: both, state: Idle, event: MakeCall, actions: [SendBye], next: Calling}"
    )
    problem = only_problem(text)
    first = line_of(VALID, "event: MakeCall")
    expected = f"transitions[17].event: duplicate of transitions[0] (line {first})"
    assert problem == f"{SOURCE}:{len(text.splitlines())}: {expected}"


def test_guard_order_does_not_hide_a_duplicate() -> None:
    text = with_rows(
        "{role: UAC, state: Ringing, event: Answered, guards: [Reliable, HasSdp], next: Active}"
    )
    assert "transitions[17].event: duplicate of transitions[7]" in only_problem(text)


def test_row_shadowed_by_an_earlier_weaker_row_is_never_taken() -> None:
    text = with_rows("{role: UAC, state: Ringing, event: Answered, guards: [HasSdp], next: Failed}")
    problem = only_problem(text)
    assert problem.startswith(f"{SOURCE}:{len(text.splitlines())}: transitions[17].guards: ")
    assert "never taken: transitions[9]" in problem


def test_one_role_row_does_not_shadow_a_later_row_for_both_roles() -> None:
    """A UAC-only guard-less row leaves a later guarded 'both' row to UAS sessions."""
    text = with_rows(
        "{role: UAC, state: Active, event: Timeout, next: Terminating}",
        "{role: both, state: Active, event: Timeout, guards: [HasSdp], next: Terminating}",
    )
    assert parse_state_table(text, SOURCE).rows[18].roles == frozenset(Role)


def test_both_roles_row_shadows_a_later_one_role_row_with_more_guards() -> None:
    text = with_rows(
        "{role: both, state: Active, event: Timeout, next: Terminating}",
        "{role: UAS, state: Active, event: Timeout, guards: [HasSdp], next: Terminating}",
    )
    assert "transitions[18].guards: never taken: transitions[17]" in only_problem(text)


def test_guard_both_required_and_negated_in_one_row_is_an_error() -> None:
    text = edited('guards: ["!HasSdp"]', 'guards: ["!HasSdp", HasSdp]')
    problem = only_problem(text)
    line = line_of(text, '"!HasSdp", HasSdp')
    assert problem.startswith(f"{SOURCE}:{line}: transitions[4].guards[1]:")
    assert "both required and negated" in problem


def test_row_leaving_a_final_state_is_an_error() -> None:
    text = with_rows("{role: both, state: Failed, event: Timeout, next: Idle}")
    problem = only_problem(text)
    assert problem.startswith(f"{SOURCE}:{len(text.splitlines())}: transitions[17].next: ")
    assert "may not leave final state 'Failed'" in problem


def test_state_no_role_can_reach_is_an_error_at_its_declaration() -> None:
    text = edited("Terminated, Failed]\nfinal", "Terminated, Failed, OnHold]\nfinal")
    problem = only_problem(text)
    assert problem.startswith(f"{SOURCE}:{line_of(text, 'OnHold')}: states[7]: ")
    assert "'OnHold' cannot be reached from initial state 'Idle'" in problem


def test_non_final_state_without_a_way_out_is_an_error() -> None:
    text = edited("Terminated, Failed]\nfinal", "Terminated, Failed, Parked]\nfinal")
    text += "  - {role: UAC, state: Ringing, event: Timeout, next: Parked}\n"
    problem = only_problem(text)
    assert problem.startswith(f"{SOURCE}:{line_of(text, 'Parked]')}: states[7]: ")
    assert "no final state can be reached from it in UAC sessions" in problem


def test_self_loop_alone_is_no_way_out() -> None:
    text = edited("Terminated, Failed]\nfinal", "Terminated, Failed, Parked]\nfinal")
    text += (
        "  - {role: both, state: Active, event: Timeout, next: Parked}\n"
        "  - {role: both, state: Parked, event: Timeout, actions: [SendBye]}\n"
    )
    assert "in UAC and UAS sessions" in only_problem(text)


def test_row_for_a_role_that_never_reaches_its_state_is_an_error() -> None:
    text = with_rows("{role: UAS, state: Calling, event: Timeout, next: Failed}")
    problem = only_problem(text)
    assert problem.startswith(f"{SOURCE}:{len(text.splitlines())}: transitions[17].state: ")
    assert "UAS sessions never reach state 'Calling'" in problem


def test_declared_action_the_code_does_not_implement_fails_at_load() -> None:
    problem = only_problem(VALID, implemented_actions=ALL_ACTIONS - {"Cleanup"})
    assert problem.startswith(f"{SOURCE}:{line_of(VALID, 'actions: [SendInvite, SendRinging')}: ")
    assert "actions[7]: action 'Cleanup' is not implemented by the code" in problem


def test_declared_guard_the_code_does_not_implement_fails_at_load() -> None:
    problem = only_problem(VALID, implemented_guards={"HasSdp"})
    assert (
        f"{SOURCE}:{VALID.splitlines().index('guards: [HasSdp, Reliable]') + 1}: guards[1]: "
        in problem
    )
    assert "guard 'Reliable' is not implemented by the code (implemented: HasSdp)" in problem


def test_all_problems_of_one_load_are_reported_together() -> None:
    text = edited("event: HangUp", "event: Hangup")
    text = edited("actions: [SendInvite]", "actions: [SendInvit]", text)
    found = problems(text)
    assert len(found) == 2
    assert found[0].startswith(f"{SOURCE}:{line_of(text, 'SendInvit]')}: transitions[0]")
    assert found[1].startswith(f"{SOURCE}:{line_of(text, 'Hangup')}: transitions[12]")
    with pytest.raises(StateTableError) as info:
        parse_state_table(text, SOURCE)
    assert str(info.value) == "\n".join(found)


def test_empty_text_and_non_mapping_documents_are_errors() -> None:
    assert only_problem("") == f"{SOURCE}:1: (top level): the state table is empty"
    assert only_problem("\n- a\n- b\n") == f"{SOURCE}:2: (top level): expected a mapping"


def test_unreadable_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(StateTableError, match=re.escape(str(missing))):
        load_state_table(missing)


# --- diagrams --------------------------------------------------------------------


def test_edge_label_shows_event_guards_and_actions() -> None:
    table = parse_state_table(VALID, SOURCE)
    assert edge_label(table.rows[4]) == "Answered [!HasSdp] / NotifyFailed"
    assert edge_label(table.rows[2]) == "Provisional"
    assert edge_label(table.rows[0], show_role=True) == "(UAC) MakeCall / SendInvite"
    assert edge_label(table.rows[3], show_role=True).startswith("Answered [HasSdp] / ")


def test_mermaid_has_one_edge_per_non_ignore_row_and_marks_start_and_finals() -> None:
    table = parse_state_table(VALID, SOURCE)
    text = to_mermaid(table)
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> Idle" in lines
    edges = [line for line in lines if " : " in line]
    assert len(edges) == sum(not row.is_ignore for row in table.rows)
    assert "    Calling --> Failed : Answered [!HasSdp] / NotifyFailed" in lines
    assert {"    Terminated --> [*]", "    Failed --> [*]"} <= set(lines)
    shown = to_mermaid(table, show_ignored=True)
    assert "    Ringing --> Ringing : (UAC) Provisional" in shown.splitlines()


def test_role_diagram_omits_rows_from_states_the_role_never_reaches() -> None:
    table = parse_state_table(VALID, SOURCE)
    uas = to_mermaid(table, Role.UAS)
    assert "Calling" not in uas and "Failed" not in uas
    assert "(UAS)" not in uas
    assert "    Idle --> Ringing : Incoming / SendRinging" in uas.splitlines()


def test_dot_output_is_a_digraph_with_labelled_edges_and_doubled_finals() -> None:
    table = parse_state_table(VALID, SOURCE)
    text = to_dot(table, Role.UAC)
    assert text.startswith('digraph "state_table_UAC" {\n') and text.endswith("}\n")
    edges = re.findall(r'^    "(\w+)" -> "(\w+)" \[label="([^"]*)"\];$', text, re.M)
    reachable = table.reachable_states(Role.UAC)
    expected = [
        (row.state, row.next_state, edge_label(row))
        for row in table.rows_for(Role.UAC)
        if not row.is_ignore and row.state in reachable
    ]
    assert edges == expected
    assert '    "Failed" [label="Failed", peripheries=2];' in text
    assert '    "__start" -> "Idle";' in text


TIMERS = """
version: 1
initial: Idle
states:
  - Idle
  - {name: Talking, timer: {event: Ping, delay: short},
     timers: [{event: Expire, delay: long}, {event: Silence, delay: quiet}]}
  - Done
final: [Done]
events: [Go, Ping, Expire, Silence]
actions: [Note]
transitions:
  - {role: both, state: Idle, event: Go, actions: [Note], next: Talking}
  - {role: both, state: Talking, event: Ping}
  - {role: both, state: Talking, event: Expire, next: Done}
  - {role: both, state: Talking, event: Silence, next: Done}
"""


def test_a_state_owns_every_timer_of_its_timer_and_timers_columns() -> None:
    """``timer`` and the ``timers`` list add up, in that order; ``timer`` is the first."""
    info = parse_state_table(TIMERS, SOURCE).state_info("Talking")
    assert [(t.event, t.delay) for t in info.timers] == [
        ("Ping", "short"),
        ("Expire", "long"),
        ("Silence", "quiet"),
    ]
    assert info.timer == info.timers[0]


def test_diagrams_show_each_timer_of_a_state() -> None:
    """Every timer a state owns gets its own note line, in the diagrams too."""
    table = parse_state_table(TIMERS, SOURCE)
    notes = [
        "timer Ping after short",
        "timer Expire after long",
        "timer Silence after quiet",
    ]
    assert state_notes(table, "Talking") == notes
    assert state_notes(table, "Idle") == []
    lines = to_mermaid(table).splitlines()
    assert [line for line in lines if line.startswith("    Talking : ")] == [
        f"    Talking : {note}" for note in notes
    ]
    assert '"Talking" [label="Talking\\ntimer Ping after short\\ntimer Expire after long' in (
        to_dot(table)
    )
