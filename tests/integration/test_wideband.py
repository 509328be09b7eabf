"""Wideband calls between two sipd peers: G.722 and Opus carry what G.711 cannot.

Real sockets on 127.0.0.1. Both peers hand sipd 16 kHz frames
(``sample_rate=16000``); each sends a tone above 4 kHz, the top of what an
8 kHz codec can carry, and records what it hears. Over G.722 and Opus the
recording holds the tone (its dominant frequency, and most of its power in a
band around it); over PCMU the same call loses it (sipd's resampler removes
everything above 4 kHz before µ-law), while a 1 kHz control tone sent the
other way still arrives, so the call itself worked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest_twisted
from numpy.typing import NDArray
from twisted.internet import defer

from sipd import CallStateError, SimplePeer
from sipd.api.call import Call
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav
from sipd.sdp import parse_sdp
from tests.conftest import PeerFactory, eventually, within

WIDE = 16000


def _band_share(samples: NDArray[np.int16], rate: int, freq: float, width: float = 250) -> float:
    """The share of the recording's power within ``width`` Hz of ``freq``."""
    x = samples.astype(np.float64)
    x = x - x.mean()
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = power[freqs > 50].sum()
    if total <= 0:
        return 0.0
    return float(power[np.abs(freqs - freq) < width].sum() / total)


def _rms(samples: NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


async def _exchange(
    alice: SimplePeer,
    bob: SimplePeer,
    tmp_path: Path,
    *,
    alice_hz: float,
    bob_hz: float,
    codecs: list[str] | None = None,
    alice_rate: int = WIDE,
    bob_rate: int = WIDE,
) -> tuple[Call, Call, NDArray[np.int16], NDArray[np.int16], str]:
    """alice calls bob; each sends its tone for a second at its own rate; both record.

    Returns both calls, what alice and bob recorded (at their own rates) and the offer.
    """
    offer: list[str] = []

    async def answer() -> Call:
        incoming = await bob.wait_for_incoming()
        offer.append(incoming.sdp or "")
        call = await incoming.accept()
        recording = call.record_wav(tmp_path / "bob.wav")
        tone = ToneGenerator(bob_hz, bob_rate)
        try:
            while call.is_active():
                await call.send_audio(tone.next_frame(bob_rate // 50))
        except CallStateError:
            pass  # the caller hung up while a frame was queued
        await recording
        return call

    answering = defer.ensureDeferred(answer())
    call = await within(alice.call(bob.uri, codecs=codecs), 5)
    await within(call.wait_for_answer(), 5)
    recording = call.record_wav(tmp_path / "alice.wav")
    tone = ToneGenerator(alice_hz, alice_rate)
    for _ in range(60):  # 1.2 s
        await call.send_audio(tone.next_frame(alice_rate // 50))
    await call.hangup()
    await recording
    answered = await within(answering, 5)
    heard_by_alice = read_wav(tmp_path / "alice.wav", alice_rate)
    heard_by_bob = read_wav(tmp_path / "bob.wav", bob_rate)
    return call, answered, heard_by_alice, heard_by_bob, offer[0]


@pytest_twisted.ensureDeferred
async def test_g722_carries_a_5khz_tone_both_ways(peers: PeerFactory, tmp_path: Path) -> None:
    alice = await peers("alice", sample_rate=WIDE, codecs=["G722", "PCMU"])
    bob = await peers("bob", sample_rate=WIDE, codecs=["g722", "PCMU"])
    call, answered, at_alice, at_bob, offer = await _exchange(
        alice, bob, tmp_path, alice_hz=5000, bob_hz=6000
    )
    assert call.stats()["codec"] == answered.stats()["codec"] == "G722"
    audio = parse_sdp(offer).audio
    assert audio is not None and audio.formats[0] == "9"
    assert "a=rtpmap:9 G722/8000" in offer  # the RFC 3551 clock-rate quirk
    assert abs(dominant_frequency(at_bob, WIDE) - 5000) < 10
    assert abs(dominant_frequency(at_alice, WIDE) - 6000) < 10
    assert _band_share(at_bob, WIDE, 5000) > 0.8
    assert _band_share(at_alice, WIDE, 6000) > 0.8
    # 16 kHz audio on an 8000 Hz RTP clock: timestamps converted right, the recording
    # lasts about as long as the call (1.2 s of tone and the setup), not half or double.
    assert 1.1 < len(at_bob) / WIDE < 2.5


@pytest_twisted.ensureDeferred
async def test_pcmu_loses_the_5khz_tone(peers: PeerFactory, tmp_path: Path) -> None:
    """The same call over an 8 kHz codec: the 5 kHz tone is gone, the 1 kHz one is not."""
    alice = await peers("alice", sample_rate=WIDE, codecs=["PCMU"])
    bob = await peers("bob", sample_rate=WIDE, codecs=["PCMU"])
    call, _, at_alice, at_bob, _ = await _exchange(alice, bob, tmp_path, alice_hz=5000, bob_hz=1000)
    assert call.stats()["codec"] == "PCMU"
    assert abs(dominant_frequency(at_alice, WIDE) - 1000) < 10  # the call carried audio
    assert _band_share(at_alice, WIDE, 1000) > 0.8
    assert _band_share(at_bob, WIDE, 5000) < 0.05
    assert _rms(at_bob) < 0.01 * _rms(at_alice)  # what is left is µ-law idle noise


@pytest_twisted.ensureDeferred
async def test_opus_carries_a_5khz_tone_both_ways(peers: PeerFactory, tmp_path: Path) -> None:
    alice = await peers("alice", sample_rate=WIDE, codecs=["opus", "PCMU"])
    bob = await peers("bob", sample_rate=WIDE, codecs=["OPUS", "G722", "PCMU"])
    call, answered, at_alice, at_bob, offer = await _exchange(
        alice, bob, tmp_path, alice_hz=5000, bob_hz=6000
    )
    assert call.stats()["codec"] == answered.stats()["codec"] == "opus"
    assert "a=rtpmap:111 opus/48000/2" in offer
    assert "useinbandfec=1" in offer and "maxplaybackrate=48000" in offer
    assert "a=rtpmap:110 telephone-event/48000" in offer
    assert abs(dominant_frequency(at_bob, WIDE) - 5000) < 10
    assert abs(dominant_frequency(at_alice, WIDE) - 6000) < 10
    assert _band_share(at_bob, WIDE, 5000) > 0.7
    assert _band_share(at_alice, WIDE, 6000) > 0.7


@pytest_twisted.ensureDeferred
async def test_opus_at_48khz_against_g722_at_8khz_applications(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """Applications at different rates than their codecs: sipd resamples both ways."""
    alice = await peers("alice", sample_rate=48000, codecs=["G722"])
    bob = await peers("bob", codecs=["G722"])  # 8 kHz frames, 16 kHz codec
    call, _, at_alice, at_bob, _ = await _exchange(
        alice, bob, tmp_path, alice_hz=1500, bob_hz=700, alice_rate=48000, bob_rate=8000
    )
    assert call.stats()["codec"] == "G722"
    assert abs(dominant_frequency(at_bob, 8000) - 1500) < 10
    assert abs(dominant_frequency(at_alice, 48000) - 700) < 10
    assert _band_share(at_bob, 8000, 1500) > 0.8
    assert _band_share(at_alice, 48000, 700) > 0.8


@pytest_twisted.ensureDeferred
async def test_codec_preference_per_call(peers: PeerFactory, tmp_path: Path) -> None:
    """The peer prefers PCMU; one call asks for G.722 and gets it, the next does not."""
    alice = await peers("alice", sample_rate=WIDE, codecs=["PCMU", "G722", "opus"])
    bob = await peers("bob", sample_rate=WIDE, codecs=["PCMU", "G722", "opus"])
    call, _, _, at_bob, offer = await _exchange(
        alice, bob, tmp_path, alice_hz=5000, bob_hz=1000, codecs=["G722"]
    )
    assert call.stats()["codec"] == "G722"
    assert "PCMU" not in offer and "opus" not in offer
    assert abs(dominant_frequency(at_bob, WIDE) - 5000) < 10
    call, _, _, _, offer = await _exchange(alice, bob, tmp_path, alice_hz=1000, bob_hz=1000)
    assert call.stats()["codec"] == "PCMU"
    audio = parse_sdp(offer).audio
    assert audio is not None and audio.formats[:3] == ["0", "9", "111"]


@pytest_twisted.ensureDeferred
async def test_an_unknown_codec_for_one_call_fails_at_once(peers: PeerFactory) -> None:
    alice = await peers("alice")
    failure = None
    try:
        await alice.call("sip:bob@127.0.0.1:9", codecs=["G729"])
    except Exception as exc:
        failure = exc
    assert failure is not None and "G729" in str(failure) and "opus" in str(failure)


@pytest_twisted.ensureDeferred
async def test_dtmf_over_opus_uses_the_48khz_telephone_event(peers: PeerFactory) -> None:
    alice = await peers("alice", sample_rate=WIDE, codecs=["opus"])
    bob = await peers("bob", sample_rate=WIDE, codecs=["opus"])
    call = await within(alice.call(bob.uri), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    media = call.session.media_port.media
    assert media is not None and media.stream.dtmf_sender.step == 960
    await within(call.send_dtmf("1#"), 5)
    digits = [await within(answered.recv_dtmf(), 5) for _ in range(2)]
    assert digits == ["1", "#"]
    await call.hangup()
    assert await eventually(lambda: not answered.is_active())
