"""A SimplePeer calls the ``echo`` daemon (a real twistd process) and hears itself.

The peer sends a 700 Hz tone for about a second and keeps what comes back;
the test's own FFT (numpy only) must find 700 Hz in it, carrying most of
the power. The daemon's CDR and /metrics then account for the call and its
RTP packets.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest_twisted
from numpy.typing import NDArray

from sipd import AudioFrame
from sipd.media.tones import ToneGenerator
from tests.conftest import PeerFactory, within
from tests.integration.test_daemon import http_get, parse_prometheus, start_daemon, write_config

RATE = 8000
TONE_HZ = 700.0
FRAMES = 60  # 1.2 s of tone


def spectrum_peak(samples: NDArray[np.int16]) -> tuple[float, float]:
    """(peak frequency in Hz, share of the power within 25 Hz of it)."""
    x = samples.astype(np.float64)
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    total = float(power.sum())
    if total == 0:
        return 0.0, 0.0
    peak = float(freqs[int(np.argmax(power))])
    return peak, float(power[np.abs(freqs - peak) <= 25].sum() / total)


@pytest_twisted.ensureDeferred
async def test_a_peer_hears_its_own_tone_back_from_the_echo_daemon(
    tmp_path: Path, peers: PeerFactory
) -> None:
    """What the peer sends at 700 Hz comes back at 700 Hz; CDR and metrics count the call."""
    config = tmp_path / "sipd.yaml"
    write_config(config)
    daemon = start_daemon(tmp_path, config)
    try:
        await daemon.until_ready()
        alice = await peers("alice")
        call = await within(alice.call(daemon.sip_uri), 5)
        await within(call.wait_for_answer(), 5)

        tone = ToneGenerator(TONE_HZ)
        heard: list[NDArray[np.int16]] = []
        for _ in range(FRAMES):
            await within(call.send_audio(tone.next_frame()), 2)
            while (frame := call.try_recv_audio()) is not None:
                heard.append(frame.samples)
        # The echo lags by the round trip and the jitter buffer: collect the tail.
        for _ in range(15):
            frame: AudioFrame | None = await within(call.recv_audio(), 2)
            assert frame is not None
            heard.append(frame.samples)
        await within(call.hangup(), 5)

        audio = np.concatenate(heard)
        loud = audio.reshape(-1, 160)
        loud = loud[np.sqrt((loud.astype(np.float64) ** 2).mean(axis=1)) > 1000]
        assert len(loud) >= 0.8 * FRAMES, (
            f"only {len(loud)} of {FRAMES} tone frames came back\n{daemon.report()}"
        )
        peak, share = spectrum_peak(loud.reshape(-1))
        assert abs(peak - TONE_HZ) <= 3, f"heard {peak:.1f} Hz, sent {TONE_HZ} Hz"
        assert share >= 0.9, f"only {share:.0%} of the echo's power is near {peak:.0f} Hz"

        cdr = await daemon.until_log(
            rf"CDR call_id={re.escape(str(call.sip_call_id))} direction=incoming "
            r"remote=sip:alice@127\.0\.0\.1:\d+ outcome=completed status=200 duration=([\d.]+)s"
        )
        assert 1.0 <= float(cdr.group(1)) <= 5.0, cdr.group(0)

        assert daemon.http_port is not None
        code, body = await within(http_get(daemon.http_port, "/metrics"), 5)
        assert code == 200
        metrics = parse_prometheus(body.decode())
        assert metrics["sipd_rtp_packets_received_total"] >= FRAMES, metrics
        assert metrics["sipd_rtp_packets_sent_total"] >= 0.8 * FRAMES, metrics
        assert metrics['sipd_calls_total{direction="incoming",outcome="completed"}'] == 1
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.report()
