"""``/metrics`` of a real daemon (twistd), served by prometheus_client.

A SimplePeer calls the echo daemon with a tone and hangs up; a scrape then
parses with prometheus_client's own parser and carries the process metrics
(resident memory, open file descriptors, CPU), the histograms (call set-up,
reactor lag probe, media tick, per-call loss and jitter) with increasing
bucket bounds and counts that add up, and the metric names /metrics always
had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from sipd.media.tones import ToneGenerator
from tests.conftest import PeerFactory, settle, within
from tests.integration.test_daemon import http_get, parse_prometheus, start_daemon, write_config

FRAMES = 50

HISTOGRAMS = {
    "sipd_call_setup_seconds": 1,
    "sipd_call_loss_ratio": 1,
    "sipd_call_jitter_seconds": 1,
    "sipd_media_tick_seconds": FRAMES,
    "sipd_reactor_lag_probe_seconds": 10,
}


def histogram(families: dict[str, Any], name: str) -> tuple[list[tuple[float, float]], float]:
    """(cumulative (bound, count) rows, sum) of a histogram family without labels."""
    family = families[name]
    assert family.type == "histogram", (name, family.type)
    buckets = [
        (float(s.labels["le"]), s.value) for s in family.samples if s.name == name + "_bucket"
    ]
    (total,) = [s.value for s in family.samples if s.name == name + "_sum"]
    (count,) = [s.value for s in family.samples if s.name == name + "_count"]
    assert buckets[-1] == (float("inf"), count), (name, buckets, count)
    return buckets, total


@pytest_twisted.ensureDeferred
async def test_metrics_are_prometheus_clients_with_process_metrics_and_histograms(
    tmp_path: Path, peers: PeerFactory
) -> None:
    config = tmp_path / "sipd.yaml"
    write_config(config)
    daemon = start_daemon(tmp_path, config)
    try:
        await daemon.until_ready()
        alice = await peers("alice")
        call = await within(alice.call(daemon.sip_uri), 5)
        await within(call.wait_for_answer(), 5)
        tone = ToneGenerator(700.0)
        for _ in range(FRAMES):
            await within(call.send_audio(tone.next_frame()), 2)
        await within(call.hangup(), 5)
        assert daemon.http_port is not None
        port = daemon.http_port

        async def scrape() -> str:
            code, body = await within(http_get(port, "/metrics"), 5)
            assert code == 200, body
            return body.decode()

        text = ""

        async def ended() -> bool:
            nonlocal text
            text = await scrape()
            return 'sipd_calls_total{direction="incoming",outcome="completed"} 1.0' in text

        for _ in range(50):
            if await ended():
                break
            await settle(0.1)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = parse_prometheus(text)
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.report()

    # The names /metrics always had are still there, spelled as before.
    assert samples['sipd_calls_total{direction="incoming",outcome="completed"}'] == 1, text
    assert samples['sipd_calls_started_total{direction="incoming"}'] == 1
    assert samples['sipd_sip_requests_received_total{method="INVITE"}'] == 1
    assert samples["sipd_rtp_packets_received_total"] >= 0.8 * FRAMES
    assert samples["sipd_active_calls"] == 0
    assert "sipd_rtp_jitter_ms" in samples and "sipd_reactor_lag_seconds" in samples

    # What prometheus_client's process collector adds (Linux /proc).
    assert samples["process_resident_memory_bytes"] > 10e6
    assert 5 <= samples["process_open_fds"] < samples["process_max_fds"]
    assert samples["process_cpu_seconds_total"] > 0
    assert "python_gc_collections" in families

    for name, at_least in HISTOGRAMS.items():
        buckets, total = histogram(families, name)
        bounds = [b for b, _ in buckets]
        counts = [c for _, c in buckets]
        assert bounds == sorted(bounds) and len(bounds) >= 8, (name, bounds)
        assert counts == sorted(counts), (name, counts)
        assert counts[-1] >= at_least, (name, buckets)
        assert total >= 0, name
    # One call with a clean loopback: set up well under a second, nothing lost.
    setup, setup_sum = histogram(families, "sipd_call_setup_seconds")
    assert 0 < setup_sum < 1.0, setup
    loss, loss_sum = histogram(families, "sipd_call_loss_ratio")
    assert loss_sum == 0 and loss[0] == (0.0, 1), loss
    # A 20 ms media tick that takes more than 20 ms would be a broken clock.
    ticks, _ = histogram(families, "sipd_media_tick_seconds")
    assert dict(ticks)[0.02] == ticks[-1][1], ticks
