"""sipd's own log events obey one minimum level; other loggers are untouched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.logger import LogEvent, globalLogPublisher
from twisted.logger import Logger as TwistedLogger

from sipd import logs
from sipd.daemon.config import parse_config
from sipd.errors import ConfigError


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(seen.append)
        logs.set_level("debug")


def _formats(seen: list[LogEvent], namespace: str) -> list[str]:
    return [str(e["log_format"]) for e in seen if e.get("log_namespace") == namespace]


def test_events_below_the_level_are_dropped(events: list[LogEvent]) -> None:
    """At level warn, info and debug events of sipd loggers never reach observers."""
    log = logs.Logger(namespace="sipd.test")
    log.debug("a debug line")
    logs.set_level("warn")
    log.info("an info line")
    log.warn("a warning")
    log.error("an error")
    assert _formats(events, "sipd.test") == ["a debug line", "a warning", "an error"]
    assert logs.get_level() == "warn"


def test_other_loggers_are_not_filtered(events: list[LogEvent]) -> None:
    """The level applies to sipd's loggers only, not to Twisted's or the application's."""
    logs.set_level("error")
    TwistedLogger(namespace="someone.else").info("still here")
    assert _formats(events, "someone.else") == ["still here"]


def test_an_unknown_level_names_the_choices() -> None:
    with pytest.raises(ValueError, match="known: debug, info, warn, error, critical"):
        logs.set_level("verbose")


def test_the_daemon_config_takes_a_log_level_and_rejects_nonsense() -> None:
    """log.level sets the level; a bad value is reported with file, line and key."""
    assert parse_config("log:\n  level: warn\n", "x.yaml").log_level == "warn"
    with pytest.raises(ConfigError, match=r"x\.yaml:2: log\.level: must be one of"):
        parse_config("log:\n  level: loud\n", "x.yaml")
