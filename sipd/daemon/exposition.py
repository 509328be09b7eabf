"""``/metrics`` served by prometheus_client, fed from sipd's own metrics store.

The hot path never touches prometheus_client: packets and messages keep
incrementing :class:`sipd.metrics.Metrics` (one dict update each). At scrape
time :class:`StoreCollector` copies that store and hands prometheus_client
the families, beside the client's own process collector (CPU seconds,
resident memory, open file descriptors, start time), platform and garbage
collector metrics. Every registry is per daemon, never the global one.

The resource is prometheus_client's WSGI app on the reactor's thread pool,
which is what ``prometheus_client.twisted.MetricsResource`` builds (built
here with the daemon's reactor rather than the global one it imports). The
text is formatted on a pool thread; the store is copied on the reactor
thread (handed over with ``callFromThread``), since calls change it there; a
reactor too busy or stopping fails the scrape after a few seconds (a 500)
rather than hold a pool thread for ever.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import make_wsgi_app
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.python import threadable
from twisted.web.resource import IResource
from twisted.web.wsgi import WSGIResource

from sipd.metrics import Metrics, MetricsSnapshot

__all__ = ["StoreCollector", "build_registry", "metrics_resource"]

#: Seconds a scrape waits for the reactor thread to copy the store.
SNAPSHOT_TIMEOUT = 5.0


class StoreCollector(Collector):
    """The families of a :class:`Metrics` store, read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics, reactor: Any = None) -> None:
        self.metrics = metrics
        self.reactor = reactor

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for (name, pairs), value in sorted(snap.counters.items()):
            by_name[name].append((dict(pairs), value))
        for name, rows in by_name.items():
            help_text = snap.help.get(name, name)
            if name.endswith("_total"):
                family = Metric(name[: -len("_total")], help_text, "counter")
            else:  # prometheus_client would add _total: keep the name as it was
                family = Metric(name, help_text, "unknown")
            for labels, value in rows:
                family.add_sample(name, labels, value)
            yield family
        for name, (help_text, value) in sorted(snap.gauges.items()):
            yield GaugeMetricFamily(name, help_text, value=value)
        for name, (help_text, buckets, total) in sorted(snap.histograms.items()):
            yield HistogramMetricFamily(
                name,
                help_text,
                buckets=[(_le(bound), float(count)) for bound, count in buckets],
                sum_value=total,
            )

    def _snapshot(self) -> MetricsSnapshot:
        reactor = self.reactor
        if reactor is None or threadable.ioThread is None or threadable.isInIOThread():
            return self.metrics.snapshot()
        # Not blockingCallFromThread: a reactor stopping (joining this pool's
        # threads) would never run the call, and both would wait for ever.
        done = threading.Event()
        result: list[MetricsSnapshot] = []

        def take() -> None:
            try:
                result.append(self.metrics.snapshot())
            finally:
                done.set()

        reactor.callFromThread(take)
        if not done.wait(SNAPSHOT_TIMEOUT) or not result:
            raise RuntimeError("the reactor did not hand over the metrics in time")
        return result[0]


def build_registry(metrics: Metrics, reactor: Any = None) -> CollectorRegistry:
    """A registry with ``metrics`` and the process, platform and GC collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(metrics, reactor))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_resource(registry: CollectorRegistry, reactor: Any) -> IResource:
    """The ``/metrics`` resource (``MetricsResource`` with the daemon's reactor)."""
    return WSGIResource(reactor, reactor.getThreadPool(), make_wsgi_app(registry))


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
