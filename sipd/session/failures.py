"""Turn a failing row's ``error`` column into the exception the application sees.

The state table says, row by row, which :class:`~sipd.errors.CallError`
subclass a failure is and what its message reads
(``error: {type: CallRejected, message: "call to {remote} was rejected:
{status} {reason}"}``); this module fills the template in from the event's
fields and the session's context, so no code decides error texts by the
event's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sipd.errors import (
    CallCancelled,
    CallError,
    CallFailed,
    CallRejected,
    CallTimeout,
    CallTransportError,
)
from sipd.session.table_model import ErrorSpec

__all__ = ["ERROR_TYPES", "build_error", "event_fields"]

#: The error classes a table's ``error.type`` may name.
ERROR_TYPES: dict[str, type[CallError]] = {
    cls.__name__: cls
    for cls in (CallFailed, CallRejected, CallCancelled, CallTimeout, CallTransportError)
}


class _Fields(dict[str, object]):
    """Template values; a name the event does not have reads as empty text."""

    def __missing__(self, key: str) -> object:
        return ""


def event_fields(event: object) -> dict[str, object]:
    """The fields of an event dataclass as a mapping (empty for anything else)."""
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return {}


def build_error(spec: ErrorSpec, event: object, context: Mapping[str, object]) -> CallError:
    """The error a row reports for ``event``; ``context`` adds ``remote``, ``detail``..."""
    fields = event_fields(event)
    values = _Fields({k: "" if v is None else v for k, v in fields.items()})
    values.update(context)
    message = " ".join(spec.message.format_map(values).split())
    status = spec.status
    if status is None:
        found = fields.get("status", fields.get("code"))
        status = found if isinstance(found, int) and found else None
    reason = fields.get("reason")
    return ERROR_TYPES[spec.type](
        message, status=status, reason=reason if isinstance(reason, str) else ""
    )
