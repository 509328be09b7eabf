"""States that own timers, the one queue, and effects (sipd/session/machine.py).

A state with a ``timer`` column is an Automat data state: entering it starts
the timer, every row leaving it cancels it, a row that stays keeps it. These
tests run on ``task.Clock`` and check ``getDelayedCalls()`` directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from sipd.errors import SipdValueError
from sipd.session.machine import Event, MachineFactory, SessionMachine
from sipd.session.state_table import Role, parse_state_table

TABLE = """
version: 1
initial: Idle
states:
  - Idle
  - {name: Waiting, timer: {event: Timeout, delay: short}}
  - {name: AlsoWaiting, timer: {event: Timeout, delay: long}}
  - Done
  - Expired
final: [Done, Expired]
events: [Go, Poke, Next, Timeout, Finish]
actions: [Note, Repost]
transitions:
  - {role: both, state: Idle, event: Go, actions: [Note], next: Waiting}
  - {role: both, state: Waiting, event: Poke, actions: [Note]}
  - {role: both, state: Waiting, event: Next, next: AlsoWaiting}
  - {role: both, state: Waiting, event: Timeout, actions: [Note], next: Expired}
  - {role: both, state: Waiting, event: Finish, actions: [Repost], next: Done}
  - {role: both, state: AlsoWaiting, event: Timeout, next: Expired}
  - {role: both, state: AlsoWaiting, event: Finish, next: Done}
  - {role: both, state: Done, event: Poke}
"""


class Core:
    """Records actions; ``Repost`` posts a Poke from inside an action."""

    def __init__(self) -> None:
        self.machine: SessionMachine | None = None
        self.notes: list[str] = []
        self.delays = {"short": 5.0, "long": 30.0}

    def check_guard(self, name: str, event: Any) -> bool:
        raise AssertionError("no guards in this table")

    def run_action(self, name: str, event: Any) -> None:
        self.notes.append(f"{name}:{event.name}")
        if name == "Repost":
            assert self.machine is not None
            self.machine.post(Event("Poke"))

    def timer_deadline(self, delay: str, entered_at: float) -> float | None:
        return entered_at + self.delays[delay]

    def timer_event(self, event: str) -> object:
        return Event(event)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def machine(clock: Clock) -> SessionMachine:
    table = parse_state_table(TABLE, "timers.yaml")
    core = Core()
    machine = MachineFactory(table, Role.UAC, now=clock.seconds, clock=clock).create(core)
    core.machine = machine
    return machine


def pending(clock: Clock) -> list[float]:
    return sorted(call.getTime() for call in clock.getDelayedCalls())


def test_entering_a_timer_state_starts_its_timer(machine: SessionMachine, clock: Clock) -> None:
    assert pending(clock) == []
    machine.post(Event("Go"))
    assert machine.state == "Waiting"
    assert pending(clock) == [5.0]


def test_a_row_that_stays_keeps_the_timer(machine: SessionMachine, clock: Clock) -> None:
    machine.post(Event("Go"))
    clock.advance(3)
    machine.post(Event("Poke"))
    assert machine.state == "Waiting"
    assert pending(clock) == [5.0]


def test_the_timer_fires_its_event_through_the_queue(machine: SessionMachine, clock: Clock) -> None:
    machine.post(Event("Go"))
    clock.advance(5)
    assert machine.state == "Expired"
    assert machine.history[-1].event_name == "Timeout"
    assert pending(clock) == []


def test_leaving_cancels_and_the_next_state_starts_its_own(
    machine: SessionMachine, clock: Clock
) -> None:
    machine.post(Event("Go"))
    clock.advance(1)
    machine.post(Event("Next"))
    assert machine.state == "AlsoWaiting"
    assert pending(clock) == [31.0]
    clock.advance(5)  # the first state's timer would have fired here
    assert machine.state == "AlsoWaiting"
    machine.post(Event("Finish"))
    assert machine.is_final
    assert pending(clock) == []


def test_a_final_state_has_no_timer_left(machine: SessionMachine, clock: Clock) -> None:
    machine.post(Event("Go"))
    machine.post(Event("Finish"))
    assert machine.state == "Done"
    assert clock.getDelayedCalls() == []


def test_an_event_posted_by_an_action_runs_after_the_transition(machine: SessionMachine) -> None:
    machine.post(Event("Go"))
    machine.post(Event("Finish"))  # Repost queues a Poke, handled in Done (ignore row)
    assert [t.event_name for t in machine.history] == ["Go", "Finish", "Poke"]
    assert machine.history[-1].from_state == "Done"


def test_effects_run_once_the_queue_is_empty(machine: SessionMachine) -> None:
    seen: list[str] = []
    machine.listeners.append(lambda transition: seen.append(f"listener:{machine.state}"))

    def effect() -> None:
        seen.append(f"effect:{machine.state}")

    machine.post(Event("Go"))
    assert seen == ["listener:Waiting"]
    seen.clear()
    machine.after(effect)  # idle machine: runs at once
    assert seen == ["effect:Waiting"]


def test_post_reports_an_unhandled_event_without_raising(machine: SessionMachine) -> None:
    assert machine.post(Event("Poke")) is False  # Idle has no row for Poke
    assert machine.state == "Idle"
    assert machine.post(Event("Go")) is True


def test_a_table_with_timers_needs_a_clock() -> None:
    table = parse_state_table(TABLE, "timers.yaml")
    with pytest.raises(SipdValueError, match="needs a clock"):
        MachineFactory(table, Role.UAC)


def hooks(machine: SessionMachine) -> Core:
    core = machine._hooks
    assert isinstance(core, Core)
    return core


def test_a_deadline_moved_earlier_without_an_event_waits_for_reschedule(
    machine: SessionMachine, clock: Clock
) -> None:
    """Deadlines are read after a step and when the timer fires; data that moves one
    earlier without an event (ICMP evidence for the media timeout) needs reschedule()."""
    machine.post(Event("Go"))
    clock.advance(1)
    hooks(machine).delays["short"] = 2.0
    assert pending(clock) == [5.0]  # nothing re-read it yet
    machine.reschedule()
    assert pending(clock) == [2.0]
    clock.advance(1)
    assert machine.state == "Expired"
    assert [t.event_name for t in machine.history] == ["Go", "Timeout"]


def test_reschedule_to_a_deadline_already_past_fires_at_once(
    machine: SessionMachine, clock: Clock
) -> None:
    machine.post(Event("Go"))
    clock.advance(3)
    hooks(machine).delays["short"] = 1.0
    machine.reschedule()
    assert machine.state == "Waiting"  # through the clock, never inside the caller
    clock.advance(0)
    assert machine.state == "Expired"


def test_reschedule_without_timers_or_when_final_does_nothing(
    machine: SessionMachine, clock: Clock
) -> None:
    machine.reschedule()  # Idle owns no timer
    assert pending(clock) == []
    machine.post(Event("Go"))
    machine.post(Event("Finish"))
    machine.reschedule()
    assert machine.is_final and pending(clock) == []
    machine.release()
    machine.reschedule()
    assert pending(clock) == []


def test_reschedule_while_running_takes_effect_once_settled(
    machine: SessionMachine, clock: Clock
) -> None:
    """Called from a listener (an effect, after the step re-read its deadlines): the new
    deadline is read once the machine has settled, not lost."""
    core = hooks(machine)

    def listener(transition: Any) -> None:
        if transition.event_name == "Poke":
            core.delays["short"] = 2.0
            machine.reschedule()

    machine.listeners.append(listener)
    machine.post(Event("Go"))
    machine.post(Event("Poke"))
    assert pending(clock) == [2.0]
