"""Bridging and conferencing real calls over UDP (issue 7).

A "hub" peer holds one call per party and connects their audio with
:func:`sipd.media.bridge.bridge` or :class:`sipd.media.mixer.Conference`.
Each party sends its own tone and records what it hears; the recordings are
checked with an FFT here (numpy only): the tones the party should hear are
strong, and the ones it should not hear (its own, or any after unbridge)
are absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest_twisted
from numpy.typing import NDArray
from twisted.internet import defer

from sipd import CallState
from sipd.media.bridge import bridge, unbridge
from sipd.media.mixer import Conference
from sipd.media.tones import ToneGenerator
from sipd.media.wav import read_wav
from tests.conftest import PeerFactory, eventually, settle, within

#: A 160-sample block counts as audible when its RMS is above this (tones are 0.3 FS).
AUDIBLE_RMS = 500.0


def level(samples: NDArray[np.int16], freq: float) -> float:
    """The FFT magnitude at ``freq`` (Hann window), relative to the strongest bin."""
    x = samples.astype(np.float64)
    x = (x - x.mean()) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x))
    bins = np.fft.rfftfreq(len(x), 1 / 8000)
    near = np.abs(bins - freq) <= 5
    return float(spectrum[near].max() / spectrum.max())


def rms(samples: NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


async def dial_hub(peers: PeerFactory, hub: Any, name: str, **settings: Any) -> tuple[Any, Any]:
    """A new peer ``name`` calls the hub; returns (its call, the hub's call)."""
    party = await peers(name, **settings)
    call = await party.call(f"sip:hub@127.0.0.1:{hub.port}")
    hub_call = await within((await within(hub.wait_for_incoming(), 5)).accept(), 5)
    await within(call.wait_for_answer(), 5)
    return call, hub_call


async def speak(calls_and_tones: list[tuple[Any, float]], seconds: float) -> None:
    """Each call sends its tone for ``seconds``, paced by the 20 ms clock."""
    gens = [(call, ToneGenerator(f)) for call, f in calls_and_tones]
    for _ in range(round(seconds / 0.02)):
        await defer.DeferredList([c.send_audio(g.next_frame()) for c, g in gens])


async def record(call: Any, path: Path, work: Any) -> NDArray[np.int16]:
    """Record what ``call`` hears while ``work`` runs; the samples."""
    done = call.record_wav(path)
    await work
    await settle(0.15)
    call.session.stop_recording(path)
    await within(done, 5)
    return read_wav(path)


@pytest_twisted.ensureDeferred
async def test_bridge_pcmu_to_pcma_both_hear_each_other(peers: PeerFactory, tmp_path: Path) -> None:
    """alice (PCMU) and bob (PCMA only) bridged at the hub hear each other's tone."""
    hub = await peers("hub")
    alice, hub_a = await dial_hub(peers, hub, "alice")
    bob, hub_b = await dial_hub(peers, hub, "bob", codecs=["PCMA"])
    assert hub_a.stats()["codec"] == "PCMU" and hub_b.stats()["codec"] == "PCMA"
    link = bridge(hub_a, hub_b)
    work = defer.ensureDeferred(speak([(alice, 500.0), (bob, 1300.0)], 1.0))
    heard_a, heard_b = await defer.gatherResults(
        [
            defer.ensureDeferred(record(alice, tmp_path / "a.wav", work)),
            defer.ensureDeferred(record(bob, tmp_path / "b.wav", work)),
        ]
    )
    assert level(heard_a, 1300) == 1.0 and level(heard_a, 500) < 0.05
    assert level(heard_b, 500) == 1.0 and level(heard_b, 1300) < 0.05
    assert link.frames[0] > 30 and link.frames[1] > 30
    link.stop()
    await within(alice.hangup(), 5)
    await within(hub_b.hangup(), 5)
    await within(bob.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_unbridge_stops_forwarding_and_leaves_both_calls_up(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """After unbridge bob hears nothing of alice's tone; both calls stay active."""
    hub = await peers("hub")
    alice, hub_a = await dial_hub(peers, hub, "alice")
    bob, hub_b = await dial_hub(peers, hub, "bob")
    link = bridge(hub_a, hub_b)
    heard = await record(bob, tmp_path / "before.wav", speak([(alice, 700.0)], 0.5))
    assert rms(heard) > AUDIBLE_RMS and level(heard, 700) == 1.0
    unbridge(link)
    assert link.done.called
    await settle(0.2)  # what was in flight arrives
    heard = await record(bob, tmp_path / "after.wav", speak([(alice, 700.0)], 0.6))
    blocks = heard[: len(heard) // 160 * 160].reshape(-1, 160)
    assert len(blocks) >= 25
    assert max(rms(b) for b in blocks) < AUDIBLE_RMS
    assert hub_a.state is CallState.ACTIVE and hub_b.state is CallState.ACTIVE
    assert alice.state is CallState.ACTIVE and bob.state is CallState.ACTIVE
    await within(alice.hangup(), 5)
    await within(bob.hangup(), 5)
    await within(hub_a.wait_for_end(), 5)
    await within(hub_b.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_hangup_of_one_side_ends_the_bridge_and_the_other_call(
    peers: PeerFactory,
) -> None:
    """alice hangs up: the bridge stops and the hub hangs up bob's call too."""
    hub = await peers("hub")
    alice, hub_a = await dial_hub(peers, hub, "alice")
    bob, hub_b = await dial_hub(peers, hub, "bob", codecs=["PCMA"])
    link = bridge(hub_a, hub_b)
    await within(alice.hangup(), 5)
    await within(link.done, 5)
    assert not link.active
    await within(bob.wait_for_end(), 5)
    assert bob.state is CallState.TERMINATED
    assert await eventually(lambda: hub.active_calls() == [])


@pytest_twisted.ensureDeferred
async def test_three_party_conference_each_hears_the_other_two_not_themselves(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """Three tones into a hub conference: each party's recording holds the other two only."""
    hub = await peers("hub")
    freqs = {"ann": 400.0, "ben": 1000.0, "cat": 2200.0}
    legs = {name: await dial_hub(peers, hub, name) for name in freqs}
    conference = Conference()
    for _, hub_call in legs.values():
        conference.add(hub_call)
    assert len(conference) == 3
    work = defer.ensureDeferred(speak([(legs[n][0], f) for n, f in freqs.items()], 1.2))
    recordings = await defer.gatherResults(
        [defer.ensureDeferred(record(legs[n][0], tmp_path / f"{n}.wav", work)) for n in freqs]
    )
    for (name, own), heard in zip(freqs.items(), recordings, strict=True):
        assert rms(heard) > AUDIBLE_RMS, name
        for other, f in freqs.items():
            if other != name:
                assert level(heard, f) > 0.3, (name, other)
        assert level(heard, own) < 0.02, (name, "hears itself")
    # A party that hangs up leaves the conference by itself.
    await within(legs["ann"][0].hangup(), 5)
    assert await eventually(lambda: len(conference) == 2)
    conference.close()
    assert conference.done.called
    for name in ("ben", "cat"):
        await within(legs[name][0].hangup(), 5)
