"""sipd and baresip over the wideband codecs: G.722 and Opus, each way.

baresip (headless, auto-answering, its ``g722`` and ``opus`` modules loaded,
16 kHz audio device settings) plays a 6 kHz tone and records what it
receives; the sipd peer (``sample_rate=16000``) plays 5 kHz and records.
Both tones are above 4 kHz: an 8 kHz codec anywhere on the path would remove
them, so a recording that holds the other side's tone proves the call was
wideband end to end. The account's ``audio_codecs`` makes baresip offer and
accept only the codec under test; sipd's ``codecs`` does the same on its side.
Recordings are judged by the harness's own FFT (not sipd's code) and by
sipd's detector.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from sipd import SimplePeer
from tests.conftest import PeerFactory, within
from tests.interop.harness import (
    BARESIP_MODULES,
    Baresip,
    Interop,
    dominant_frequency,
    free_udp_port_range,
    interop,
    read_wav,
    settle,
    sounding_seconds,
    start_baresip,
    write_tone_wav,
)

__all__ = ["interop"]

pytestmark = pytest.mark.interop

WIDE = 16000
SIPD_HZ, BARESIP_HZ = 5000.0, 6000.0
TONE_S = 1.5
#: sipd's codec name, baresip's module and its ``audio_codecs`` entry, the SDP rtpmap.
CODECS = {
    "G722": ("g722.so", "G722", "G722/8000"),
    "opus": ("opus.so", "opus/48000/2", "opus/48000/2"),
}


async def _sipd_peer(peers: PeerFactory, name: str, codec: str) -> SimplePeer:
    first = free_udp_port_range(20)
    peer: SimplePeer = await within(
        peers(
            name,
            media_port_min=first,
            media_port_max=first + 19,
            sample_rate=WIDE,
            codecs=[codec],
        ),
        5,
    )
    return peer


async def _baresip(interop: Interop, tmp_path: Path, user: str, codec: str) -> Baresip:
    module, baresip_name, _ = CODECS[codec]
    if not (BARESIP_MODULES / module).exists():
        pytest.fail(f"baresip module {module} is missing from {BARESIP_MODULES}")
    tone = write_tone_wav(tmp_path / f"{user}-tone.wav", BARESIP_HZ, 30, rate=WIDE)
    workdir = tmp_path / f"baresip-{user}"
    workdir.mkdir()
    b = start_baresip(
        workdir,
        tone=tone,
        user=user,
        extra_config={"ausrc_srate": str(WIDE), "auplay_srate": str(WIDE)},
        extra_modules=[module],
        account_params=f";audio_codecs={baresip_name}",
        sip_trace=True,
    )
    interop.processes.append(b.process)
    interop.baresips.append(b)
    await b.wait_ready()
    return b


def _assert_wide_tone(path: Path | None, freq: float, who: str, report: str) -> None:
    """At least 1 s of sound dominated by ``freq`` (> 4 kHz), at a wideband rate."""
    from sipd.media.tones import dominant_frequency as sipd_dominant_frequency

    assert path is not None and path.exists(), f"{who}: no recording was written\n{report}"
    samples, rate = read_wav(path)
    assert rate >= WIDE, f"{who}: {path.name} is {rate} Hz: it cannot hold {freq} Hz"
    heard = sounding_seconds(samples, rate)
    assert heard >= 1.0, f"{who}: only {heard:.2f} s of sound in {path.name}\n{report}"
    peak, share = dominant_frequency(samples, rate)
    assert abs(peak - freq) <= 5 and share >= 0.7, (
        f"{who}: {path.name} peaks at {peak:.1f} Hz ({share:.0%} of the power), not {freq} Hz"
        f"\n{report}"
    )
    detected = sipd_dominant_frequency(samples, rate)
    assert abs(detected - freq) <= 5, f"{who}: sipd's detector says {detected:.1f} Hz"


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest_twisted.ensureDeferred
async def test_sipd_calls_baresip_over_a_wideband_codec(
    codec: str, interop: Interop, peers: PeerFactory, tmp_path: Path
) -> None:
    baresip = await _baresip(interop, tmp_path, "bob", codec)
    alice = await _sipd_peer(peers, "alice", codec)
    sipd_tone = write_tone_wav(tmp_path / "alice-tone.wav", SIPD_HZ, TONE_S, rate=WIDE)

    call = await within(alice.call(baresip.contact_uri), 5)
    await within(call.wait_for_answer(), 10)
    await baresip.wait_event("CALL_ESTABLISHED")
    assert call.stats()["codec"] == codec
    answer = call.session.remote_sdp
    assert answer is not None and CODECS[codec][2] in answer.to_bytes().decode()
    recorded = call.record_wav(tmp_path / "alice-heard.wav")
    await within(call.play_wav(sipd_tone), 10)
    await settle(0.2)
    await within(call.hangup(), 10)
    await within(recorded, 5)
    await baresip.wait_event("CALL_CLOSED")

    _assert_wide_tone(tmp_path / "alice-heard.wav", BARESIP_HZ, "sipd heard", baresip.report())
    _assert_wide_tone(baresip.received_wav(), SIPD_HZ, "baresip heard", baresip.report())


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest_twisted.ensureDeferred
async def test_baresip_calls_sipd_over_a_wideband_codec(
    codec: str, interop: Interop, peers: PeerFactory, tmp_path: Path
) -> None:
    baresip = await _baresip(interop, tmp_path, "carol", codec)
    bob = await _sipd_peer(peers, "bob", codec)
    sipd_tone = write_tone_wav(tmp_path / "bob-tone.wav", SIPD_HZ, TONE_S, rate=WIDE)

    await baresip.dial(bob.uri)
    incoming = await within(bob.wait_for_incoming(), 10)
    assert incoming.sdp is not None and CODECS[codec][2] in incoming.sdp, incoming.sdp
    call = await within(incoming.accept(), 10)
    await baresip.wait_event("CALL_ESTABLISHED")
    assert call.stats()["codec"] == codec
    recorded = call.record_wav(tmp_path / "bob-heard.wav")
    await within(call.play_wav(sipd_tone), 10)
    await settle(0.2)
    await baresip.hangup()
    await within(call.wait_for_end(), 10)
    await within(recorded, 5)
    await baresip.wait_event("CALL_CLOSED")
    assert call.failure is None, call.failure

    _assert_wide_tone(tmp_path / "bob-heard.wav", BARESIP_HZ, "sipd heard", baresip.report())
    _assert_wide_tone(baresip.received_wav(), SIPD_HZ, "baresip heard", baresip.report())
