"""Automat machines built from a state table, and the one executor that drives them.

A :class:`MachineFactory` turns the rows of one role of a validated
:class:`~sipd.session.table_model.StateTable` into an Automat
``TypeMachineBuilder`` machine once; :meth:`MachineFactory.create` then makes
one cheap :class:`SessionMachine` per call.

How rows become Automat inputs
------------------------------

Automat cannot evaluate guards, so **every row of the table is one Automat
input** (named ``<Event>_r<row index>``), registered as
``state.upon(input).to(next_state)``. The executor looks up the rows for the
current state and event, evaluates their guards in file order through the
session's hooks, and calls the input of the first row whose guards pass.
Automat moves the state (and would raise for a row that does not exist); the
executor then runs the row's actions and records a :class:`Transition`.

States that own timers
----------------------

A state with a ``timer`` column is an Automat *data state*, the way Twisted's
own ``application/_client_service.py`` uses Automat: entering it runs the
state's factory, which starts the ``IDelayedCall`` and returns it as the
state's data; every row that leaves the state cancels that call on the way
out; a row that stays keeps it. So no action starts or stops a timer by hand
and a session in a final state has no timer left. When the call fires, its
event goes through the same queue as any other.

Semantics callers rely on
-------------------------

* **One queue, run to completion.** Every event (application, network,
  timer) enters through :meth:`SessionMachine.post` (or :meth:`fire`). An
  event posted while the machine is running, by an action for instance, is
  queued and processed after the current transition's actions finish, in
  order. While actions run, ``state`` is already the new state.
* **Effects after the events.** :meth:`SessionMachine.after` queues a
  callable (firing a waiter's Deferred, telling a listener) to run once no
  event is pending, so user code it resumes sees the settled state and may
  post more events.
* **Failing actions.** If an action raises, the transition is still taken,
  the row's remaining actions still run (so clean-up actions are not
  skipped) and the transition is recorded with the action in
  ``failed_actions``. :meth:`fire` then raises
  :class:`~sipd.errors.ActionFailed`; :meth:`post` logs it.
* **Unhandled events.** An event with no row for the current state, or whose
  rows' guards all fail, changes nothing: :meth:`fire` raises
  :class:`~sipd.errors.UnhandledEvent`, :meth:`post` logs it and returns
  False. To accept an event and do nothing, give the table an ignore row.
* Guard results are cached for the duration of one event.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sipd.errors import ActionFailed, SipdValueError, UnhandledEvent
from sipd.logs import Logger
from sipd.session.state_timers import StateTimers
from sipd.session.table_model import GuardTest, Role, Row, StateInfo, StateTable, TimerSpec

__all__ = [
    "Event",
    "MachineFactory",
    "SessionHooks",
    "SessionMachine",
    "TimerHooks",
    "Transition",
    "event_name",
]

_log = Logger()


@dataclass(frozen=True, slots=True)
class Event:
    """A generic event for tables without event classes: a name and its data.

    Call sessions use the dataclasses of :mod:`sipd.session.events` instead;
    any object works as an event, its class name (or ``name``) being the
    table's event name.
    """

    name: str
    data: Mapping[str, object] = field(default_factory=dict)


def event_name(event: object) -> str:
    """The table event name of ``event``."""
    if isinstance(event, Event):
        return event.name
    return type(event).__name__


@dataclass(frozen=True, slots=True)
class Transition:
    """One step a session took, as recorded in :attr:`SessionMachine.history`."""

    from_state: str
    event: Any
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

    @property
    def event_name(self) -> str:
        """The table name of the event that caused this step."""
        return event_name(self.event)


class SessionHooks(Protocol):
    """What the session core provides to a machine: guard evaluation and action execution."""

    def check_guard(self, name: str, event: Any) -> bool:
        """Tell whether the guard ``name`` holds for ``event`` right now."""

    def run_action(self, name: str, event: Any) -> None:
        """Run the action ``name`` for ``event``."""


class TimerHooks(Protocol):
    """What a session provides for the timers its states own."""

    def timer_deadline(self, delay: str, entered_at: float) -> float | None:
        """When the timer named by a state's ``timer.delay`` fires (None: not now).

        ``entered_at`` is when the state was entered. Asked again after every step
        in the state, when the timer fires and on ``reschedule()``: it may move.
        """

    def timer_event(self, event: str) -> object:
        """The event to post when the timer fires."""


class _Released:
    """The hooks of a machine whose call is over: nothing may run any more."""

    __slots__ = ()

    def check_guard(self, name: str, event: Any) -> bool:
        raise RuntimeError(f"guard {name!r} asked after the session was released")

    def run_action(self, name: str, event: Any) -> None:
        raise RuntimeError(f"action {name!r} run after the session was released")


_RELEASED = _Released()


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
    walks the whole table, creating a session does not. ``clock`` runs the
    timers of states with a ``timer`` column (required when the table has any).
    """

    def __init__(
        self,
        table: StateTable,
        role: Role,
        *,
        now: Callable[[], float] = time.time,
        history_limit: int | None = 256,
        clock: IReactorTime | None = None,
    ) -> None:
        """``now`` stamps transitions (pass ``reactor.seconds``); ``history_limit``
        bounds each session's recorded history (``None`` keeps everything)."""
        self.table = table
        self.role = role
        self.now = now
        self.history_limit = history_limit
        self.clock = clock
        self._events = frozenset(table.events)
        self._final = table.final
        self._choices: dict[tuple[str, str], tuple[_Choice, ...]] = {}
        self._info = {name: table.state_info(name) for name in table.states}
        self._machine_type = self._build()

    def _build(self) -> Any:
        rows = self.table.rows_for(self.role)
        inputs = {row.index: f"{row.event}_r{row.index}" for row in rows}
        choices: dict[tuple[str, str], list[_Choice]] = {}
        for row in rows:
            choices.setdefault((row.state, row.event), []).append(
                _Choice(row, inputs[row.index], row.guards)
            )
        self._choices = {key: tuple(value) for key, value in choices.items()}

        namespace = {name: _input_method(name) for name in inputs.values()}
        proto: Any = type(f"{self.role.value}SessionInputs", (Protocol,), namespace)
        builder = TypeMachineBuilder(proto, SessionMachine)
        # Automat makes the first declared state the initial one.
        ordered = [self.table.initial] + [s for s in self.table.states if s != self.table.initial]
        timers = {name: self.table.state_info(name).timers for name in ordered}
        if any(timers.values()) and self.clock is None:
            raise SipdValueError(
                f"state table {self.table.source} has states with timers; "
                "MachineFactory needs a clock to run them"
            )
        states: dict[str, Any] = {}
        for name in ordered:
            specs = timers[name]
            states[name] = (
                builder.state(name, _timer_factory(specs)) if specs else builder.state(name)
            )
        for row in rows:
            method = getattr(proto, inputs[row.index])
            registrar = states[row.state].upon(method).to(states[row.next_state])
            if timers[row.state] and row.next_state != row.state:
                registrar(_leaving(row))  # cancels the state's timer on the way out
            else:
                registrar.returns(row)
        machine = builder.build()
        _index_transitions(machine.__automat_automaton__)
        return machine

    def create(self, hooks: SessionHooks) -> SessionMachine:
        """A new machine in the table's initial state, driving ``hooks``."""
        return SessionMachine(self, hooks)


def _index_transitions(automaton: Any) -> None:
    """Let Automat find a transition by a dict lookup instead of scanning them all.

    ``Automaton.outputForInput`` walks every transition comparing
    ``(state, input)`` pairs: with one input per table row that is ~80
    comparisons per event, a tenth of a call's CPU under load. The
    transitions never change once built, so an index answers the same. If
    Automat's internals differ from what this expects, it changes nothing.
    """
    transitions = getattr(automaton, "_transitions", None)
    original = getattr(automaton, "outputForInput", None)
    if not isinstance(transitions, set) or original is None:
        return
    try:
        index = {
            (state, symbol): (out, tuple(outputs)) for state, symbol, out, outputs in transitions
        }
    except TypeError:  # unhashable states: keep Automat's own lookup
        return

    def output_for_input(in_state: Any, input_symbol: Any) -> tuple[Any, list[Any]]:
        found = index.get((in_state, input_symbol))
        if found is None:
            return cast("tuple[Any, list[Any]]", original(in_state, input_symbol))
        return found[0], list(found[1])

    automaton.outputForInput = output_for_input


def _timer_factory(specs: tuple[TimerSpec, ...]) -> Callable[[Any, SessionMachine], StateTimers]:
    def enter(proto: object, core: SessionMachine) -> StateTimers:
        return core._entering(specs)

    enter.__name__ = "timers_" + "_".join(spec.event for spec in specs)
    return enter


def _leaving(row: Row) -> Callable[[Any, SessionMachine, StateTimers], Row]:
    def leave(proto: object, core: SessionMachine, timers: StateTimers) -> Row:
        timers.cancel()
        return row

    leave.__name__ = f"leave_{row.state}_r{row.index}"
    return leave


class SessionMachine:
    """The state machine of one call session and its single event queue."""

    __slots__ = (
        "_automaton",
        "_effects",
        "_entered",
        "_factory",
        "_hooks",
        "_queue",
        "_running",
        "_state",
        "_timers",
        "current_row",
        "history",
        "listeners",
    )

    def __init__(self, factory: MachineFactory, hooks: SessionHooks) -> None:
        self._factory = factory
        self._hooks = hooks
        self._state = factory.table.initial
        self._queue: deque[object] = deque()
        self._effects: deque[Callable[[], object]] = deque()
        self._running = False
        # The timers of the current state, and those of a state just entered.
        self._timers: StateTimers | None = None
        self._entered: StateTimers | None = None
        #: The row whose actions are running (None between events).
        self.current_row: Row | None = None
        self.history: deque[Transition] = deque(maxlen=factory.history_limit)
        #: Called with each transition once it is complete (as an effect).
        self.listeners: list[Callable[[Transition], None]] = []
        self._automaton: Any = factory._machine_type(self)

    @property
    def state(self) -> str:
        """The name of the current state."""
        return self._state

    @property
    def role(self) -> Role:
        """Whether this session is the calling (UAC) or called (UAS) side."""
        return self._factory.role

    @property
    def table(self) -> StateTable:
        """The table this machine runs."""
        return self._factory.table

    @property
    def is_final(self) -> bool:
        """True once the session has reached one of the table's final states."""
        return self._state in self._factory._final

    @property
    def state_info(self) -> StateInfo:
        """The table's columns for the current state."""
        return self._factory._info[self._state]

    @property
    def call_state(self) -> str:
        """The public call state's name: the state's ``call_state`` column, else its name."""
        info = self._factory._info[self._state]
        if info.call_state is not None:
            return info.call_state
        return "".join(f"_{c}" if c.isupper() else c for c in self._state).strip("_").upper()

    @property
    def busy(self) -> bool:
        """True while the machine is processing events or effects."""
        return self._running

    # -- the queue ------------------------------------------------------------------
    def fire(self, event: object, /, **data: object) -> Transition | None:
        """Process ``event`` and everything it queues; raise what went wrong.

        ``event`` is an event object, or a name (with ``data``) for a generic
        :class:`Event`. Returns the transition this event caused, or ``None``
        when called while the machine is running (the event is queued).
        Raises :class:`UnhandledEvent` or :class:`ActionFailed`.
        """
        if isinstance(event, str):
            event = Event(event, data)
        if self._running:
            self._queue.append(event)
            return None
        failures: list[Exception] = []
        first = self._run(event, failures)
        if failures:
            for extra in failures[1:]:
                _log.error("{role} session: {error}", role=self.role.value, error=extra)
            raise failures[0]
        return first

    def post(self, event: object) -> bool:
        """Queue ``event`` and run the queue unless it is already running; never raises.

        Returns False when the event was not handled (no row took it), so the
        signalling layer can still answer a request nobody took; True when it
        was, or was queued behind the running event.
        """
        if self._running:
            self._queue.append(event)
            return True
        failures: list[Exception] = []
        self._run(event, failures)
        return self._report(failures, event)

    def after(self, effect: Callable[[], object]) -> None:
        """Run ``effect`` once no event is pending (at once when the machine is idle)."""
        self._effects.append(effect)
        if not self._running:
            failures: list[Exception] = []
            self._run(None, failures)
            self._report(failures, None)

    def _report(self, failures: list[Exception], event: object) -> bool:
        """Log what went wrong in a run; False when ``event`` itself found no row."""
        handled = True
        for failure in failures:
            if isinstance(failure, UnhandledEvent):
                handled = handled and failure.event is not event
                _log.info("{role} session: {error}", role=self.role.value, error=failure)
            else:
                _log.failure(
                    "{role} session: {error}",
                    _failure_of(failure),
                    role=self.role.value,
                    error=failure,
                )
        # Each failure's traceback holds the frame of _run, which holds this
        # list: empty it, or every refused event is cyclic garbage.
        failures.clear()
        return handled

    def reschedule(self) -> None:
        """Re-read the current state's timer deadlines, for data that moves one earlier
        without an event (ICMP evidence for the media timeout). Safe any time: while
        the machine runs, once it has settled; a no-op when final."""
        timers = self._timers
        if timers is not None and not self.is_final:
            if self._running:
                # A no-op if the state has been left by then.
                self._effects.append(
                    partial(timers.sync, self._factory.clock, self._hooks, self._timer_fired)
                )
            else:
                timers.sync(self._factory.clock, self._hooks, self._timer_fired)

    def release(self) -> None:
        """Let go of the session once the call is over (no-op before a final state).

        A final state has no rows, so a finished machine takes no more events:
        its Automat instance and its hooks (the session, which holds this
        machine) are dropped. The call's objects are then freed by reference
        counting as soon as the application lets go of the session, instead of
        lingering as a reference cycle until a full garbage collection, whose
        pause on a loaded process is what makes overload control refuse calls.
        State, history and the table stay readable.
        """
        if not self.is_final:
            return
        self._automaton = None
        self._hooks = _RELEASED
        self.listeners.clear()
        self._timers = self._entered = None

    def _run(self, event: object | None, failures: list[Exception]) -> Transition | None:
        self._running = True
        first: Transition | None = None
        try:
            if event is not None:
                try:
                    first = self._step(event, failures)
                except UnhandledEvent as exc:
                    failures.append(exc)
            while self._queue or self._effects:
                if self._queue:
                    queued = self._queue.popleft()
                    try:
                        self._step(queued, failures)
                    except Exception as exc:  # an unhandled queued event or a failing guard
                        failures.append(exc)
                else:
                    effect = self._effects.popleft()
                    try:
                        effect()
                    except Exception:
                        _log.failure("{role} session: an effect failed", role=self.role.value)
        finally:
            self._running = False
            self.current_row = None
        return first

    def _step(self, event: object, failures: list[Exception]) -> Transition:
        choice = self._choose(event)
        at = self._factory.now()
        # Automat performs the transition (and the state timers' set-up and
        # tear-down) and hands back the row it registered.
        row: Row = getattr(self._automaton, choice.input_name)()
        self._state = row.next_state
        self.current_row = row
        failed: list[str] = []
        for action in row.actions:
            try:
                self._hooks.run_action(action, event)
            except Exception as exc:
                failed.append(action)
                failures.append(self._action_failed(action, event, row, exc))
        self.current_row = None
        # The timers follow the row's actions, which may have moved their deadlines.
        if self._entered is not None:
            self._timers, self._entered = self._entered, None
        elif row.next_state != row.state:
            self._timers = None
        if self._timers is not None:
            self._timers.sync(self._factory.clock, self._hooks, self._timer_fired)
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
        for listener in self.listeners:
            self._effects.append(partial(listener, transition))
        return transition

    def _choose(self, event: object) -> _Choice:
        name = event_name(event)
        choices = self._factory._choices.get((self._state, name), ())
        cache: dict[str, bool] = {}
        for choice in choices:
            if all(self._passes(test, event, cache) for test in choice.guards):
                return choice
        where = f"{self.role.value} session in state '{self._state}'"
        if name not in self._factory._events:
            known = ", ".join(self._factory.table.events)
            raise UnhandledEvent(
                f"{where} got event '{name}', which the state table "
                f"{self._factory.table.source} does not declare (known: {known})",
                event=event,
            )
        if not choices:
            raise UnhandledEvent(f"{where} has no row for event '{name}'", event=event)
        tried = "; ".join(
            f"transitions[{c.row.index}] [{', '.join(map(str, c.guards))}]" for c in choices
        )
        raise UnhandledEvent(
            f"{where} has no row for event '{name}' whose guards pass (tried {tried})",
            event=event,
        )

    def _passes(self, test: GuardTest, event: object, cache: dict[str, bool]) -> bool:
        value = cache.get(test.name)
        if value is None:
            value = cache[test.name] = bool(self._hooks.check_guard(test.name, event))
        return value != test.negated

    def _action_failed(self, action: str, event: object, row: Row, exc: Exception) -> ActionFailed:
        failure = ActionFailed(
            f"action '{action}' raised {exc!r} in a {self.role.value} session on "
            f"{row.state} --{event_name(event)}--> {row.next_state} "
            f"({self._factory.table.source}:{row.line}, transitions[{row.index}]); "
            "the transition was taken"
        )
        failure.__cause__ = exc
        return failure

    # -- timers owned by states -------------------------------------------------------
    def _entering(self, specs: tuple[TimerSpec, ...]) -> StateTimers:
        """Automat entered a state that owns timers: they start once its row's actions ran."""
        clock = self._factory.clock
        assert clock is not None  # checked when the factory was built
        self._entered = StateTimers(specs, clock.seconds())
        return self._entered

    def _timer_fired(self, timers: StateTimers, spec: TimerSpec) -> None:
        event = timers.fired(self._factory.clock, self._hooks, self._timer_fired, spec)
        if event is not None:
            self.post(event)


def _failure_of(exc: Exception) -> Failure:
    return Failure(exc, type(exc), exc.__traceback__)  # type: ignore[no-untyped-call]
