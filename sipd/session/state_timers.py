"""The timers a state owns, as the data of an Automat data state.

A state with ``timer``/``timers`` in the state table gets one
:class:`StateTimers` when it is entered (Automat's state factory, see
:mod:`sipd.session.machine`): it holds when the state was entered and the
pending ``IDelayedCall`` of each timer. Deadlines come from the session's
data (``TimerHooks.timer_deadline``) and are re-read after every step, when a
timer fires and on ``reschedule()``, so they may move either way; every row
leaving the state cancels them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from sipd.session.table_model import TimerSpec

__all__ = ["Fire", "StateTimers"]

#: What a due timer calls: ``fire(timers, spec)``.
Fire = Callable[["StateTimers", TimerSpec], None]


class StateTimers:
    """The data of a state that owns timers: when it was entered and its pending calls."""

    __slots__ = ("_calls", "_live", "entered_at", "specs")

    def __init__(self, specs: tuple[TimerSpec, ...], entered_at: float) -> None:
        self.specs = specs
        self.entered_at = entered_at
        self._calls: dict[TimerSpec, IDelayedCall] = {}
        self._live = True

    def sync(self, clock: IReactorTime | None, hooks: Any, fire: Fire) -> None:
        """Schedule each timer at its current deadline (or drop it if it has none).

        ``hooks`` gives deadlines and events (:class:`~sipd.session.machine.TimerHooks`);
        ``fire(timers, spec)`` is what a due timer calls.
        """
        if not self._live:
            return
        assert clock is not None  # checked when the factory was built
        now = clock.seconds()
        for spec in self.specs:
            deadline = hooks.timer_deadline(spec.delay, self.entered_at)
            call = self._calls.get(spec)
            if deadline is None:
                if call is not None:
                    if call.active():
                        call.cancel()
                    del self._calls[spec]
                continue
            delay = max(0.0, deadline - now)
            if call is not None and call.active():
                due = max(deadline, now)
                if due > call.getTime() + 1e-6:
                    call.reset(delay)  # later: Twisted defers the move (cheap)
                    continue
                if due > call.getTime() - 1e-6:
                    continue
                # Sooner: reset() would search the reactor's whole timer list.
                call.cancel()
            self._calls[spec] = clock.callLater(delay, fire, self, spec)

    def fired(
        self, clock: IReactorTime | None, hooks: Any, fire: Fire, spec: TimerSpec
    ) -> object | None:
        """The event to post for ``spec``, or None when its deadline moved on."""
        self._calls.pop(spec, None)
        if not self._live:
            return None
        assert clock is not None
        deadline = hooks.timer_deadline(spec.delay, self.entered_at)
        if deadline is None:
            return None
        if deadline > clock.seconds() + 1e-6:
            self.sync(clock, hooks, fire)  # the deadline moved later: wait on
            return None
        event: object = hooks.timer_event(spec.event)
        return event

    def cancel(self) -> None:
        """Leaving the state: no timer of it may fire any more."""
        self._live = False
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()
