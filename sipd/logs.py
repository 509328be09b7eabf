"""sipd's loggers: ``twisted.logger`` with one process-wide minimum level.

Every sipd module logs through :class:`Logger` here. Events below the level
set with :func:`set_level` are dropped before they are formatted, so an
operator can quieten sipd (``log.level: warn`` in the daemon config)
without touching the observers twistd installs.
"""

from __future__ import annotations

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel

__all__ = ["LEVELS", "Logger", "get_level", "set_level"]

#: Level names accepted by :func:`set_level`.
LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

_minimum = [LogLevel.debug]


def set_level(name: str) -> None:
    """Drop sipd events below ``name`` (debug, info, warn, error, critical)."""
    try:
        _minimum[0] = LEVELS[name.lower()]
    except KeyError:
        known = ", ".join(LEVELS)
        raise ValueError(f"unknown log level {name!r} (known: {known})") from None


def get_level() -> str:
    """The current minimum level's name."""
    return str(_minimum[0].name)


class Logger(_TwistedLogger):
    """A ``twisted.logger.Logger`` that honours sipd's minimum level."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if level < _minimum[0]:
            return
        super().emit(level, format, **kwargs)
