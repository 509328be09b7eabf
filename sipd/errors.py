"""The one error hierarchy of sipd.

Every exception sipd raises on purpose derives from :class:`SipdError`, so a
program can catch everything sipd-specific in one place. Messages are written
for the person reading the log: they say what happened and what to do.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "SipdError",
]


class SipdError(Exception):
    """Base class of every error sipd raises deliberately."""


class ConfigError(SipdError):
    """A configuration file or value is wrong; the message names file, line and key."""
