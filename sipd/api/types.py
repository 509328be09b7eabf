"""Small value types of the simple API (defined in :mod:`sipd.types`)."""

from __future__ import annotations

from sipd.types import CallDirection, CallId, CallState

__all__ = ["CallDirection", "CallId", "CallState"]
