"""sipd.metrics histograms and the prometheus_client collector over the store.

The store's histograms count into fixed buckets (cumulative on reading);
the collector renders counters with their label sets exactly as before
(``name{a="x",b="y"}``, labels sorted), gauges and histograms, and hands the
store over from the reactor thread when prometheus_client formats on a pool
thread (as the daemon's WSGI ``/metrics`` does).
"""

from __future__ import annotations

import pytest_twisted
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import threads

from sipd.daemon.exposition import build_registry
from sipd.metrics import Metrics


def store() -> Metrics:
    m = Metrics()
    m.describe("sipd_calls_total", "Calls ended")
    m.inc("sipd_calls_total", outcome="completed", direction="incoming")
    m.inc("sipd_calls_total", 2, outcome="completed", direction="incoming")
    m.inc("sipd_sip_requests_received_total", method="INVITE")
    m.inc("sipd_sip_requests_received_total", method="INVITE", transport="tls")
    m.gauge("sipd_active_calls", "Calls", lambda: 4)
    m.histogram("sipd_call_setup_seconds", "Set-up", (1.0, 0.1, 0.5))
    for value in (0.05, 0.1, 0.3, 0.7, 9.0):
        m.observe("sipd_call_setup_seconds", value)
    return m


def test_a_histogram_counts_each_value_in_the_first_bucket_that_holds_it() -> None:
    m = store()
    h = m.histograms()["sipd_call_setup_seconds"]
    assert h.bounds == (0.1, 0.5, 1.0)
    assert h.cumulative() == [(0.1, 2), (0.5, 3), (1.0, 4), (float("inf"), 5)]
    assert h.count == 5 and abs(h.sum - 10.15) < 1e-9
    m.observe("never_declared", 1.0)  # ignored, not an error
    assert "never_declared" not in m.histograms()


def test_the_store_renders_its_histograms_in_its_own_text_too() -> None:
    text = store().render()
    assert 'sipd_call_setup_seconds_bucket{le="0.5"} 3' in text
    assert 'sipd_call_setup_seconds_bucket{le="+Inf"} 5' in text
    assert "sipd_call_setup_seconds_count 5" in text


def test_the_collector_keeps_every_name_and_label_set() -> None:
    text = generate_latest(build_registry(store())).decode()
    assert 'sipd_calls_total{direction="incoming",outcome="completed"} 3.0' in text
    assert 'sipd_sip_requests_received_total{method="INVITE"} 1.0' in text
    assert 'sipd_sip_requests_received_total{method="INVITE",transport="tls"} 1.0' in text
    assert "# HELP sipd_calls_total Calls ended" in text
    assert "sipd_active_calls 4.0" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["sipd_calls"].type == "counter"
    setup = families["sipd_call_setup_seconds"]
    assert setup.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in setup.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 2, "0.5": 3, "1.0": 4, "+Inf": 5}
    assert "process_resident_memory_bytes" in text and "process_open_fds" in text


@pytest_twisted.ensureDeferred
async def test_a_scrape_on_a_pool_thread_gets_the_store_from_the_reactor_thread() -> None:
    from twisted.internet import reactor

    m = store()
    seen: list[bool] = []

    def gauge() -> float:
        from twisted.python import threadable

        seen.append(threadable.isInIOThread())
        return 1.0

    m.gauge("sipd_probe", "Which thread reads the gauges", gauge)
    registry = build_registry(m, reactor)
    text = await threads.deferToThread(lambda: generate_latest(registry).decode())
    assert "sipd_probe 1.0" in text
    assert seen == [True]
