"""Tests for the Automat machines built from a state table and the executor driving them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from sipd.errors import ActionFailed, SipdError, UnhandledEvent
from sipd.session.machine import Event, MachineFactory, SessionMachine, Transition
from sipd.session.state_table import Role, StateTable, load_state_table, parse_state_table

FIXTURE = Path(__file__).parent / "fixtures" / "small_state_table.yaml"


class CallCore:
    """A minimal session core: guards read the event data, actions are logged.

    ``HasSdp`` holds when the event carries an ``sdp`` item; ``Reliable`` is a
    setting of the core. ``reactions`` lets a test make an action do something,
    such as firing another event on the machine.
    """

    def __init__(self, reliable: bool = True) -> None:
        self.reliable = reliable
        self.log: list[tuple[str, str, str]] = []
        self.reactions: dict[str, Callable[[Event], None]] = {}

    def check_guard(self, name: str, event: Event) -> bool:
        self.log.append(("guard", name, event.name))
        if name == "HasSdp":
            return "sdp" in event.data
        if name == "Reliable":
            return self.reliable
        raise AssertionError(f"unexpected guard {name}")

    def run_action(self, name: str, event: Event) -> None:
        self.log.append(("action", name, event.name))
        reaction = self.reactions.get(name)
        if reaction is not None:
            reaction(event)

    @property
    def actions(self) -> list[str]:
        return [name for kind, name, _ in self.log if kind == "action"]

    @property
    def guards(self) -> list[str]:
        return [name for kind, name, _ in self.log if kind == "guard"]


@pytest.fixture(scope="module")
def table() -> StateTable:
    return load_state_table(FIXTURE)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def uac(table: StateTable, clock: Clock) -> MachineFactory:
    return MachineFactory(table, Role.UAC, now=clock.seconds)


def path_of(machine: SessionMachine) -> list[tuple[str, str, str]]:
    return [(t.from_state, t.event.name, t.to_state) for t in machine.history]


def test_new_machine_starts_in_the_initial_state_with_no_history(uac: MachineFactory) -> None:
    machine = uac.create(CallCore())
    assert machine.state == "Idle"
    assert list(machine.history) == []
    assert machine.role is Role.UAC
    assert not machine.is_final


def test_history_records_the_path_of_a_whole_call(uac: MachineFactory, clock: Clock) -> None:
    core = CallCore()
    machine = uac.create(core)
    first = machine.fire("MakeCall")
    clock.advance(0.5)
    machine.fire("Provisional")
    clock.advance(0.25)
    machine.fire("Answered", sdp="v=0")
    clock.advance(10)
    machine.fire("HangUp")
    clock.advance(0.1)
    last = machine.fire("ByeAnswered")

    assert first == machine.history[0]
    assert last is not None and last.to_state == "Terminated"
    assert path_of(machine) == [
        ("Idle", "MakeCall", "Calling"),
        ("Calling", "Provisional", "Ringing"),
        ("Ringing", "Answered", "Active"),
        ("Active", "HangUp", "Terminating"),
        ("Terminating", "ByeAnswered", "Terminated"),
    ]
    assert [t.at for t in machine.history] == pytest.approx([0.0, 0.5, 0.75, 10.75, 10.85])
    assert machine.history[2].guards_taken == ("HasSdp", "Reliable")
    assert machine.history[2].actions == ("StartMedia", "NotifyAnswered")
    assert machine.history[2].event.data == {"sdp": "v=0"}
    assert core.actions == ["SendInvite", "StartMedia", "NotifyAnswered", "SendBye", "Cleanup"]
    assert machine.state == "Terminated" and machine.is_final


def test_transition_names_the_table_row_it_took(uac: MachineFactory, table: StateTable) -> None:
    machine = uac.create(CallCore())
    transition = machine.fire("MakeCall")
    assert transition is not None
    row = table.rows[transition.row]
    assert (row.state, row.event, row.next_state) == ("Idle", "MakeCall", "Calling")


@pytest.mark.parametrize(
    ("sdp", "reliable", "state", "guards", "actions"),
    [
        (True, True, "Active", ("HasSdp", "Reliable"), ("StartMedia", "NotifyAnswered")),
        (True, False, "Active", ("!Reliable",), ("NotifyAnswered",)),
        (False, False, "Active", ("!Reliable",), ("NotifyAnswered",)),
        (False, True, "Failed", (), ("NotifyFailed",)),
    ],
)
def test_rows_are_tried_in_file_order_and_the_first_passing_one_is_taken(
    uac: MachineFactory,
    sdp: bool,
    reliable: bool,
    state: str,
    guards: tuple[str, ...],
    actions: tuple[str, ...],
) -> None:
    core = CallCore(reliable=reliable)
    machine = uac.create(core)
    machine.fire("MakeCall")
    machine.fire("Provisional")
    transition = machine.fire("Answered", **({"sdp": "v=0"} if sdp else {}))
    assert transition is not None
    assert (transition.to_state, transition.guards_taken, transition.actions) == (
        state,
        guards,
        actions,
    )
    assert machine.state == state


@pytest.mark.parametrize(
    ("data", "state", "guards"),
    [({"sdp": "v=0"}, "Active", ("HasSdp",)), ({}, "Failed", ("!HasSdp",))],
)
def test_negated_guard_takes_its_row_when_the_guard_fails(
    uac: MachineFactory, data: dict[str, object], state: str, guards: tuple[str, ...]
) -> None:
    machine = uac.create(CallCore())
    machine.fire("MakeCall")
    transition = machine.fire("Answered", **data)
    assert transition is not None and transition.guards_taken == guards
    assert machine.state == state


def test_a_guard_is_evaluated_once_per_event_even_when_several_rows_name_it(
    uac: MachineFactory,
) -> None:
    core = CallCore(reliable=False)
    machine = uac.create(core)
    machine.fire("MakeCall")
    machine.fire("Provisional")
    core.log.clear()
    machine.fire("Answered", sdp="v=0")
    # Row 7 needs HasSdp and Reliable (fails on Reliable); row 8 needs !Reliable.
    assert core.guards == ["HasSdp", "Reliable"]


def test_guards_receive_the_event_with_its_data(uac: MachineFactory) -> None:
    seen: list[Event] = []

    class Spy(CallCore):
        def check_guard(self, name: str, event: Event) -> bool:
            seen.append(event)
            return super().check_guard(name, event)

    machine = uac.create(Spy())
    machine.fire("MakeCall")
    machine.fire("Answered", sdp="v=0", code=200)
    assert seen == [Event("Answered", {"sdp": "v=0", "code": 200})]


def test_ignore_row_accepts_the_event_and_records_it(uac: MachineFactory) -> None:
    core = CallCore()
    machine = uac.create(core)
    machine.fire("MakeCall")
    machine.fire("Provisional")
    ignored = machine.fire("Provisional")
    assert ignored is not None and ignored.ignored
    assert (ignored.from_state, ignored.to_state, ignored.actions) == ("Ringing", "Ringing", ())
    assert core.actions == ["SendInvite"]
    assert not machine.history[0].ignored


def test_uac_rows_do_not_exist_in_a_uas_machine(table: StateTable, clock: Clock) -> None:
    uas = MachineFactory(table, Role.UAS, now=clock.seconds).create(CallCore())
    with pytest.raises(
        UnhandledEvent, match=r"UAS session in state 'Idle' has no row .*'MakeCall'"
    ):
        uas.fire("MakeCall")
    uas.fire("Incoming")
    with pytest.raises(UnhandledEvent, match="'Provisional'"):
        uas.fire("Provisional")
    uas.fire("Accept")
    assert path_of(uas) == [("Idle", "Incoming", "Ringing"), ("Ringing", "Accept", "Active")]


def test_uas_rows_do_not_exist_in_a_uac_machine(uac: MachineFactory) -> None:
    machine = uac.create(CallCore())
    with pytest.raises(UnhandledEvent, match="UAC session in state 'Idle'"):
        machine.fire("Incoming")


def test_unhandled_event_names_state_and_event_and_changes_nothing(
    uac: MachineFactory,
) -> None:
    core = CallCore()
    machine = uac.create(core)
    machine.fire("MakeCall")
    with pytest.raises(UnhandledEvent) as info:
        machine.fire("HangUp")
    assert str(info.value) == "UAC session in state 'Calling' has no row for event 'HangUp'"
    assert isinstance(info.value, SipdError)
    assert machine.state == "Calling" and len(machine.history) == 1
    assert core.actions == ["SendInvite"]


def test_undeclared_event_is_unhandled_with_the_known_events_listed(
    uac: MachineFactory,
) -> None:
    machine = uac.create(CallCore())
    with pytest.raises(UnhandledEvent, match=r"'Bogus', which the state table .* does not declare"):
        machine.fire("Bogus")
    assert machine.state == "Idle"


def test_event_whose_rows_all_have_failing_guards_is_unhandled() -> None:
    table = parse_state_table(
        """
version: 1
initial: Idle
states: [Idle, Done]
final: [Done]
events: [Go]
guards: [Ready, Willing]
actions: [Work]
transitions:
  - {role: both, state: Idle, event: Go, guards: [Ready], actions: [Work], next: Done}
  - {role: both, state: Idle, event: Go, guards: [Willing], next: Done}
""",
        "inline.yaml",
    )

    class Unready:
        def check_guard(self, name: str, event: Event) -> bool:
            return False

        def run_action(self, name: str, event: Event) -> None:
            raise AssertionError("no action may run")

    machine = MachineFactory(table, Role.UAS).create(Unready())
    with pytest.raises(UnhandledEvent) as info:
        machine.fire("Go")
    assert "whose guards pass (tried transitions[0] [Ready]; transitions[1] [Willing])" in str(
        info.value
    )
    assert machine.state == "Idle"


def test_event_fired_by_an_action_runs_after_the_current_transition(
    uac: MachineFactory,
) -> None:
    core = CallCore()
    machine = uac.create(core)
    inner: list[tuple[str, Transition | None]] = []
    core.reactions["StartMedia"] = lambda event: inner.append(
        (machine.state, machine.fire("Error"))
    )
    machine.fire("MakeCall")
    outer = machine.fire("Answered", sdp="v=0")

    assert inner == [("Active", None)]
    assert outer is not None and (outer.from_state, outer.to_state) == ("Calling", "Active")
    # NotifyAnswered (same transition) runs before SendBye (the queued event's row).
    assert core.actions == ["SendInvite", "StartMedia", "NotifyAnswered", "SendBye"]
    assert path_of(machine)[1:] == [
        ("Calling", "Answered", "Active"),
        ("Active", "Error", "Terminating"),
    ]
    assert machine.state == "Terminating"


def test_queued_events_are_processed_in_the_order_they_were_fired(
    uac: MachineFactory,
) -> None:
    core = CallCore()
    machine = uac.create(core)

    def fail_twice(event: Event) -> None:
        machine.fire("Error")  # Active -> Terminating
        machine.fire("Timeout")  # only handled in Terminating

    core.reactions["NotifyAnswered"] = fail_twice
    machine.fire("MakeCall")
    machine.fire("Answered", sdp="v=0")
    assert path_of(machine)[-2:] == [
        ("Active", "Error", "Terminating"),
        ("Terminating", "Timeout", "Terminated"),
    ]
    assert machine.is_final


def test_failing_action_still_takes_the_transition_and_runs_the_rest(
    uac: MachineFactory,
) -> None:
    core = CallCore()
    machine = uac.create(core)
    boom = ValueError("no media port")

    def explode(event: Event) -> None:
        raise boom

    core.reactions["StartMedia"] = explode
    core.reactions["NotifyAnswered"] = lambda event: machine.fire("HangUp")
    machine.fire("MakeCall")
    with pytest.raises(ActionFailed) as info:
        machine.fire("Answered", sdp="v=0")

    assert info.value.__cause__ is boom
    message = str(info.value)
    assert "action 'StartMedia' raised ValueError('no media port')" in message
    assert "Calling --Answered--> Active" in message and "transitions[3]" in message
    assert core.actions == ["SendInvite", "StartMedia", "NotifyAnswered", "SendBye"]
    assert path_of(machine)[1:] == [
        ("Calling", "Answered", "Active"),
        ("Active", "HangUp", "Terminating"),
    ]
    assert machine.history[1].failed_actions == ("StartMedia",)
    assert machine.history[2].failed_actions == ()
    assert machine.state == "Terminating"


def test_the_first_of_several_failures_is_raised(uac: MachineFactory) -> None:
    core = CallCore()
    machine = uac.create(core)

    def explode(event: Event) -> None:
        raise RuntimeError(event.name)

    core.reactions["StartMedia"] = explode
    core.reactions["NotifyAnswered"] = explode
    machine.fire("MakeCall")
    with pytest.raises(ActionFailed, match="'StartMedia'"):
        machine.fire("Answered", sdp="v=0")
    assert machine.history[-1].failed_actions == ("StartMedia", "NotifyAnswered")


def test_unhandled_queued_event_is_raised_after_the_transition_completes(
    uac: MachineFactory,
) -> None:
    core = CallCore()
    machine = uac.create(core)
    core.reactions["SendInvite"] = lambda event: machine.fire("HangUp")
    with pytest.raises(UnhandledEvent, match="state 'Calling' has no row for event 'HangUp'"):
        machine.fire("MakeCall")
    assert machine.state == "Calling"
    # The machine is usable afterwards: nothing is left queued.
    machine.fire("Rejected")
    assert machine.state == "Failed"


def test_machines_from_one_factory_are_independent(uac: MachineFactory) -> None:
    cores = [CallCore() for _ in range(40)]
    machines = [uac.create(core) for core in cores]
    for i, machine in enumerate(machines):
        machine.fire("MakeCall")
        if i % 2:
            machine.fire("Answered", sdp="v=0")
        else:
            machine.fire("Rejected")
    assert [m.state for m in machines] == ["Failed", "Active"] * 20
    assert all(len(m.history) == 2 for m in machines)
    assert cores[0].actions == ["SendInvite", "NotifyFailed", "Cleanup"]
    assert cores[1].actions == ["SendInvite", "StartMedia", "NotifyAnswered"]
    assert machines[0].history is not machines[2].history


def test_history_limit_keeps_only_the_latest_transitions(table: StateTable) -> None:
    machine = MachineFactory(table, Role.UAC, history_limit=2).create(CallCore())
    for event in ("MakeCall", "Provisional", "Provisional", "Provisional"):
        machine.fire(event)
    assert [t.event.name for t in machine.history] == ["Provisional", "Provisional"]


def test_factories_for_both_roles_build_from_one_table(table: StateTable) -> None:
    """Each (table, role) gets its own Automat machine; building one does not spoil the other."""
    uac = MachineFactory(table, Role.UAC)
    uas = MachineFactory(table, Role.UAS)
    a, b = uac.create(CallCore()), uas.create(CallCore())
    a.fire("MakeCall")
    b.fire("Incoming")
    assert (a.state, b.state) == ("Calling", "Ringing")
