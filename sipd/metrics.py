"""Process-wide counters, gauges and histograms, the store behind ``/metrics``.

Kept deliberately small: a counter is a dict entry keyed by name and label
values, so incrementing one on the hot path costs one dict update, and a
histogram observation is one bisect and two additions. Nothing here knows
Prometheus' client library: the daemon reads this store when it is scraped
(:mod:`sipd.daemon.exposition`), and :meth:`Metrics.render` writes the text
format for library users without the daemon.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Histogram", "Metrics", "MetricsSnapshot"]

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Histogram:
    """Cumulative-on-read bucket counts: ``counts[i]`` observations fell in bucket ``i``
    (``<= bounds[i]``; the last slot is ``+Inf``)."""

    help: str
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ``inf`` last."""
        rows, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            rows.append((bound, running))
        return rows


class Metrics:
    """Named counters with optional labels, plus gauges computed on demand."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self._help: dict[str, str] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._histograms: dict[str, Histogram] = {}

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

    def histogram(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        """Declare a histogram with these upper bounds (kept if already declared)."""
        if name not in self._histograms:
            self._histograms[name] = Histogram(help_text, tuple(sorted(buckets)))

    def observe(self, name: str, value: float) -> None:
        """Count ``value`` in the histogram ``name`` (ignored if never declared)."""
        histogram = self._histograms.get(name)
        if histogram is not None:
            histogram.observe(value)

    def histograms(self) -> dict[str, Histogram]:
        """The declared histograms by name (live objects: copy before another thread reads)."""
        return self._histograms

    def snapshot(self) -> MetricsSnapshot:
        """Every counter, gauge (read now) and histogram, copied at once.

        Taken on the reactor thread, it can then be rendered anywhere (the
        ``/metrics`` resource formats it on a thread of the reactor's pool).
        """
        return MetricsSnapshot(
            counters=dict(self._counters),
            help=dict(self._help),
            gauges={name: (text, float(read())) for name, (text, read) in self._gauges.items()},
            histograms={
                name: (h.help, h.cumulative(), h.sum) for name, h in self._histograms.items()
            },
        )

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
        for name, histogram in sorted(self._histograms.items()):
            lines.append(f"# HELP {name} {histogram.help}")
            lines.append(f"# TYPE {name} histogram")
            for bound, count in histogram.cumulative():
                le = "+Inf" if bound == float("inf") else repr(float(bound))
                lines.append(f'{name}_bucket{{le="{le}"}} {count}')
            lines.append(f"{name}_sum {_num(histogram.sum)}")
            lines.append(f"{name}_count {histogram.count}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A copy of a :class:`Metrics` store at one moment (see :meth:`Metrics.snapshot`)."""

    counters: dict[tuple[str, Labels], float]
    help: dict[str, str]
    gauges: dict[str, tuple[str, float]]
    #: name -> (help, cumulative buckets, sum)
    histograms: dict[str, tuple[str, list[tuple[float, int]], float]]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        '{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"')) for k, v in labels
    )
    return "{" + inner + "}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
