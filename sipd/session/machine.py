"""Automat machines built from a state table, and the executor that drives them.

A :class:`MachineFactory` turns the rows of one role of a validated
:class:`~sipd.session.state_table.StateTable` into an Automat
``TypeMachineBuilder`` machine once; :meth:`MachineFactory.create` then makes
one cheap :class:`SessionMachine` per call.

Automat cannot express guards, so each distinct (event, guard set) of the
table becomes its own Automat input. :meth:`SessionMachine.fire` looks up the
rows for the current state and event, evaluates their guards in file order
through the session's hooks, and feeds Automat the input of the first row
whose guards pass. Automat moves the state (and would raise ``NoTransition``
for a row that does not exist); the executor then runs the row's actions and
records a :class:`Transition` in ``history``.

Semantics callers rely on:

* **Run to completion.** An action may call ``fire`` on its own machine. The
  event is queued (``fire`` returns ``None``) and processed after the current
  transition's actions finish, in the order queued, before the outer ``fire``
  returns. While actions run, ``state`` is already the new state.
* **Failing actions.** If an action raises, the transition is still taken,
  the row's remaining actions still run (so clean-up actions are not skipped),
  the transition is recorded with the action in ``failed_actions``, queued
  events are still processed, and then :class:`~sipd.errors.ActionFailed` is
  raised with the original exception as ``__cause__``. Later failures of the
  same ``fire`` are logged; the first one is raised.
* **Unhandled events.** An event with no row for the current state, or whose
  rows' guards all fail, raises :class:`~sipd.errors.UnhandledEvent` and
  changes nothing. A queued event that is unhandled is reported the same way
  after the queue drains. To accept an event and do nothing, give the table an
  ignore row (same state, no actions); it is recorded like any transition.
* Guard results are cached for the duration of one event, so a guard named by
  several rows is evaluated once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachineBuilder

from sipd.errors import ActionFailed, UnhandledEvent
from sipd.logs import Logger
from sipd.session.state_table import GuardTest, Role, Row, StateTable

__all__ = [
    "Event",
    "MachineFactory",
    "SessionHooks",
    "SessionMachine",
    "Transition",
]

_log = Logger()


@dataclass(frozen=True, slots=True)
class Event:
    """An event fed to a session machine: its table name and whatever data came with it."""

    name: str
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """One step a session took, as recorded in :attr:`SessionMachine.history`."""

    from_state: str
    event: Event
    guards_taken: tuple[str, ...]
    actions: tuple[str, ...]
    to_state: str
    at: float
    row: int
    failed_actions: tuple[str, ...] = ()

    @property
    def ignored(self) -> bool:
        """True when the event was accepted by an ignore row (same state, no actions)."""
        return self.from_state == self.to_state and not self.actions


class SessionHooks(Protocol):
    """What the session core provides to a machine: guard evaluation and action execution."""

    def check_guard(self, name: str, event: Event) -> bool:
        """Tell whether the guard ``name`` holds for ``event`` right now."""

    def run_action(self, name: str, event: Event) -> None:
        """Run the action ``name`` for ``event``."""


@dataclass(frozen=True, slots=True)
class _Choice:
    """A candidate row for one (state, event), with the Automat input that takes it."""

    row: Row
    input_name: str
    guards: tuple[GuardTest, ...]


def _input_method(name: str) -> Callable[..., object]:
    """Make a protocol method named ``name``; Automat dispatches on ``__name__``."""

    def method(self: object) -> object: ...

    method.__name__ = method.__qualname__ = name
    return method


class MachineFactory:
    """Builds the Automat machine for one (table, role) once and stamps out sessions.

    Make one factory per role when the table is loaded and keep it: building
    walks the whole table, creating a session does not.
    """

    def __init__(
        self,
        table: StateTable,
        role: Role,
        *,
        now: Callable[[], float] = time.time,
        history_limit: int | None = 256,
    ) -> None:
        """``now`` stamps transitions (pass ``reactor.seconds``); ``history_limit``
        bounds each session's recorded history (``None`` keeps everything)."""
        self.table = table
        self.role = role
        self.now = now
        self.history_limit = history_limit
        self._events = frozenset(table.events)
        self._final = table.final
        self._choices: dict[tuple[str, str], tuple[_Choice, ...]] = {}
        self._machine_type = self._build()

    def _build(self) -> Any:
        rows = self.table.rows_for(self.role)
        variants: dict[tuple[str, frozenset[GuardTest]], str] = {}
        choices: dict[tuple[str, str], list[_Choice]] = {}
        for row in rows:
            key = (row.event, frozenset(row.guards))
            # Names are unique: the suffix after the last "_" is always the number.
            input_name = variants.setdefault(key, f"{row.event}_{len(variants)}")
            choices.setdefault((row.state, row.event), []).append(
                _Choice(row, input_name, row.guards)
            )
        self._choices = {key: tuple(value) for key, value in choices.items()}

        namespace = {name: _input_method(name) for name in variants.values()}
        proto: Any = type(f"{self.role.value}SessionInputs", (Protocol,), namespace)
        builder = TypeMachineBuilder(proto, object)
        # Automat makes the first declared state the initial one.
        ordered = [self.table.initial] + [s for s in self.table.states if s != self.table.initial]
        states = {name: builder.state(name) for name in ordered}
        for row in rows:
            method = getattr(proto, variants[row.event, frozenset(row.guards)])
            states[row.state].upon(method).to(states[row.next_state]).returns(row)
        return builder.build()

    def create(self, hooks: SessionHooks) -> SessionMachine:
        """A new machine in the table's initial state, driving ``hooks``."""
        return SessionMachine(self, hooks, self._machine_type(None))


class SessionMachine:
    """The state machine of one call session; feed it events with :meth:`fire`."""

    __slots__ = ("_automaton", "_factory", "_hooks", "_queue", "_running", "_state", "history")

    def __init__(self, factory: MachineFactory, hooks: SessionHooks, automaton: Any) -> None:
        self._factory = factory
        self._hooks = hooks
        self._automaton = automaton
        self._state = factory.table.initial
        self._queue: deque[Event] = deque()
        self._running = False
        self.history: deque[Transition] = deque(maxlen=factory.history_limit)

    @property
    def state(self) -> str:
        """The name of the current state."""
        return self._state

    @property
    def role(self) -> Role:
        """Whether this session is the calling (UAC) or called (UAS) side."""
        return self._factory.role

    @property
    def is_final(self) -> bool:
        """True once the session has reached one of the table's final states."""
        return self._state in self._factory._final

    def fire(self, event_name: str, /, **data: object) -> Transition | None:
        """Process the event ``event_name`` and every event its actions queue.

        Returns the transition this event caused, or ``None`` when called from
        inside an action of this machine (the event is queued, see the module
        docstring). Raises :class:`UnhandledEvent` or :class:`ActionFailed`.
        """
        event = Event(event_name, data)
        if self._running:
            self._queue.append(event)
            return None
        self._running = True
        failures: list[Exception] = []
        try:
            first = self._step(event, failures)
            while self._queue:
                try:
                    self._step(self._queue.popleft(), failures)
                except Exception as exc:  # an unhandled queued event or a failing guard
                    failures.append(exc)
        finally:
            self._running = False
            self._queue.clear()
        if failures:
            for extra in failures[1:]:
                _log.error("{role} session: {error}", role=self.role.value, error=extra)
            raise failures[0]
        return first

    def _step(self, event: Event, failures: list[Exception]) -> Transition:
        choice = self._choose(event)
        at = self._factory.now()
        # Automat performs the transition and hands back the row it registered.
        row: Row = getattr(self._automaton, choice.input_name)()
        self._state = row.next_state
        failed: list[str] = []
        for action in row.actions:
            try:
                self._hooks.run_action(action, event)
            except Exception as exc:
                failed.append(action)
                failures.append(self._action_failed(action, event, row, exc))
        transition = Transition(
            from_state=row.state,
            event=event,
            guards_taken=tuple(str(test) for test in row.guards),
            actions=row.actions,
            to_state=row.next_state,
            at=at,
            row=row.index,
            failed_actions=tuple(failed),
        )
        self.history.append(transition)
        return transition

    def _choose(self, event: Event) -> _Choice:
        choices = self._factory._choices.get((self._state, event.name), ())
        cache: dict[str, bool] = {}
        for choice in choices:
            if all(self._passes(test, event, cache) for test in choice.guards):
                return choice
        where = f"{self.role.value} session in state '{self._state}'"
        if event.name not in self._factory._events:
            known = ", ".join(self._factory.table.events)
            raise UnhandledEvent(
                f"{where} got event '{event.name}', which the state table "
                f"{self._factory.table.source} does not declare (known: {known})"
            )
        if not choices:
            raise UnhandledEvent(f"{where} has no row for event '{event.name}'")
        tried = "; ".join(
            f"transitions[{c.row.index}] [{', '.join(map(str, c.guards))}]" for c in choices
        )
        raise UnhandledEvent(
            f"{where} has no row for event '{event.name}' whose guards pass (tried {tried})"
        )

    def _passes(self, test: GuardTest, event: Event, cache: dict[str, bool]) -> bool:
        value = cache.get(test.name)
        if value is None:
            value = cache[test.name] = bool(self._hooks.check_guard(test.name, event))
        return value != test.negated

    def _action_failed(self, action: str, event: Event, row: Row, exc: Exception) -> ActionFailed:
        failure = ActionFailed(
            f"action '{action}' raised {exc!r} in a {self.role.value} session on "
            f"{row.state} --{event.name}--> {row.next_state} "
            f"({self._factory.table.source}:{row.line}, transitions[{row.index}]); "
            "the transition was taken"
        )
        failure.__cause__ = exc
        return failure
