"""One-shot results a session's callers wait for, and dropping an error's frames.

:class:`Outcome` is how ``wait_for_answer``/``wait_for_end`` work: a value or
an error arrives once, any number of waiters get it, later waiters get it at
once. :func:`forget_traceback` is what a finished call does to the errors it
keeps, so their frames (which hold the session) are not a reference cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from twisted.internet import defer

__all__ = ["Outcome", "forget_traceback"]

T = TypeVar("T")


class Outcome(Generic[T]):
    """A result that arrives once and that any number of callers may wait for."""

    __slots__ = ("_error", "_settled", "_value", "_waiters")

    def __init__(self) -> None:
        self._settled = False
        self._value: T | None = None
        self._error: Exception | None = None
        self._waiters: list[defer.Deferred[T]] = []

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def error(self) -> Exception | None:
        return self._error

    def wait(self) -> defer.Deferred[T]:
        """A Deferred firing with the result (at once when it is known)."""
        if self._settled:
            if self._error is not None:
                return defer.fail(self._error)
            return defer.succeed(self._value)  # type: ignore[arg-type]
        d: defer.Deferred[T] = defer.Deferred()
        self._waiters.append(d)
        return d

    def succeed(self, value: T, deliver: Callable[[Callable[[], object]], None]) -> None:
        """Record ``value``; ``deliver`` schedules the waiters' callbacks."""
        if not self._settled:
            self._settled, self._value = True, value
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                deliver(partial(d.callback, value))

    def fail(self, error: Exception, deliver: Callable[[Callable[[], object]], None]) -> None:
        """Record ``error`` (when nothing was recorded yet) and fail the waiters."""
        if not self._settled:
            self._settled, self._error = True, error
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                deliver(partial(d.errback, error))


def forget_traceback(error: BaseException | None) -> None:
    """Drop the traceback of ``error`` and of the exceptions it chains to."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
