"""Process-wide counters and gauges, rendered in the Prometheus text format.

Kept deliberately small: a counter is a dict entry keyed by name and label
values, so incrementing one on the hot path costs one dict update.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

__all__ = ["Metrics"]

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Named counters with optional labels, plus gauges computed on demand."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self._help: dict[str, str] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def describe(self, name: str, help_text: str) -> None:
        """Attach a HELP line to a counter."""
        self._help[name] = help_text

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with these labels."""
        key = (name, tuple(sorted(labels.items())) if labels else ())
        self._counters[key] += amount

    def get(self, name: str, **labels: str) -> float:
        """The current value of a counter (0 if never incremented)."""
        key = (name, tuple(sorted(labels.items())) if labels else ())
        return self._counters.get(key, 0.0)

    def total(self, name: str) -> float:
        """The sum of a counter over all its label values."""
        return sum(v for (n, _), v in self._counters.items() if n == name)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge whose value is read when metrics are rendered."""
        self._gauges[name] = (help_text, read)

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        by_name: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for (name, labels), value in sorted(self._counters.items()):
            by_name[name].append((labels, value))
        for name, rows in by_name.items():
            if name in self._help:
                lines.append(f"# HELP {name} {self._help[name]}")
            lines.append(f"# TYPE {name} counter")
            for labels, value in rows:
                lines.append(f"{name}{_labels(labels)} {_num(value)}")
        for name, (help_text, read) in sorted(self._gauges.items()):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {_num(read())}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        '{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"')) for k, v in labels
    )
    return "{" + inner + "}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
