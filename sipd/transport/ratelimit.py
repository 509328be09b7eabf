"""Rate-limited logging for remote input, so a flood cannot fill a disk."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from sipd.logs import Logger

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Emit at most ``burst`` events per ``interval`` seconds; count the rest.

    When a new interval starts after some events were suppressed, one summary
    event says how many were dropped.
    """

    def __init__(
        self, log: Logger, clock: IReactorTime, *, burst: int = 10, interval: float = 60.0
    ) -> None:
        self._log = log
        self._clock = clock
        self._burst = burst
        self._interval = interval
        self._window_start = -interval
        self._count = 0
        self.suppressed = 0

    def warn(self, fmt: str, **kw: Any) -> None:
        """Log a warning unless this interval's budget is spent."""
        now = self._clock.seconds()
        if now - self._window_start >= self._interval:
            if self.suppressed:
                self._log.warn(
                    "suppressed {suppressed} similar warnings in the last {interval}s",
                    suppressed=self.suppressed,
                    interval=self._interval,
                )
            self._window_start = now
            self._count = 0
            self.suppressed = 0
        if self._count < self._burst:
            self._count += 1
            self._log.warn(fmt, **kw)
        else:
            self.suppressed += 1
