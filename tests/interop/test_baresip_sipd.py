"""sipd against a real softphone: baresip calls sipd and sipd calls baresip.

baresip (headless, auto-answering, started by the harness on free loopback
ports) plays a 1 kHz WAV into every call and its ``sndfile`` filter records
what it receives; the sipd peer plays 440 Hz and records with
``record_wav``. Each side's recording must hold the other's tone: checked
with the harness's numpy spectrum (independent of sipd's media code) and
with sipd's own detector.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from sipd import SimplePeer
from tests.conftest import PeerFactory, within
from tests.interop.harness import (
    Baresip,
    Interop,
    assert_tone,
    free_udp_port_range,
    interop,
    settle,
    write_tone_wav,
)

__all__ = ["interop"]

pytestmark = pytest.mark.interop

SIPD_HZ, BARESIP_HZ = 440.0, 1000.0
TONE_S = 1.5


async def _sipd_peer(peers: PeerFactory, name: str) -> SimplePeer:
    first = free_udp_port_range(20)
    peer: SimplePeer = await within(peers(name, media_port_min=first, media_port_max=first + 19), 5)
    return peer


async def _baresip(interop: Interop, tmp_path: Path, user: str) -> Baresip:
    tone = write_tone_wav(tmp_path / f"{user}-tone.wav", BARESIP_HZ, 30)
    return await interop.baresip(user, tone=tone)


@pytest_twisted.ensureDeferred
async def test_sipd_calls_baresip_and_each_records_the_others_tone(
    interop: Interop, peers: PeerFactory, tmp_path: Path
) -> None:
    """baresip auto-answers sipd's INVITE; sipd hears 1 kHz, baresip hears 440 Hz."""
    baresip = await _baresip(interop, tmp_path, "bob")
    alice = await _sipd_peer(peers, "alice")
    sipd_tone = write_tone_wav(tmp_path / "alice-tone.wav", SIPD_HZ, TONE_S)

    call = await within(alice.call(baresip.contact_uri), 5)
    await within(call.wait_for_answer(), 10)
    established = await baresip.wait_event("CALL_ESTABLISHED")
    assert established["direction"] == "incoming"
    assert established["peeruri"] == alice.uri
    assert call.stats()["codec"] == "PCMU"
    recorded = call.record_wav(tmp_path / "alice-heard.wav")
    await within(call.play_wav(sipd_tone), 10)
    await settle(0.2)
    await within(call.hangup(), 10)
    await within(recorded, 5)
    await baresip.wait_event("CALL_CLOSED")

    assert_tone(tmp_path / "alice-heard.wav", BARESIP_HZ, "sipd heard", baresip.report())
    assert_tone(baresip.received_wav(), SIPD_HZ, "baresip heard", baresip.report())


@pytest_twisted.ensureDeferred
async def test_baresip_calls_sipd_and_each_records_the_others_tone(
    interop: Interop, peers: PeerFactory, tmp_path: Path
) -> None:
    """sipd answers baresip's INVITE; baresip's BYE ends the call; both recordings hold tones."""
    baresip = await _baresip(interop, tmp_path, "carol")
    bob = await _sipd_peer(peers, "bob")
    sipd_tone = write_tone_wav(tmp_path / "bob-tone.wav", SIPD_HZ, TONE_S)

    await baresip.dial(bob.uri)
    incoming = await within(bob.wait_for_incoming(), 10)
    assert incoming.caller.startswith("sip:carol@127.0.0.1"), incoming.caller
    assert incoming.dialled == "bob"
    assert incoming.sdp is not None and "RTP/AVP 0 8 101" in incoming.sdp, incoming.sdp
    call = await within(incoming.accept(), 10)
    established = await baresip.wait_event("CALL_ESTABLISHED")
    assert established["direction"] == "outgoing"
    recorded = call.record_wav(tmp_path / "bob-heard.wav")
    await within(call.play_wav(sipd_tone), 10)
    await settle(0.2)
    # baresip hangs up: sipd must answer its BYE and end the call.
    await baresip.hangup()
    await within(call.wait_for_end(), 10)
    await within(recorded, 5)
    await baresip.wait_event("CALL_CLOSED")
    assert call.failure is None, call.failure

    assert_tone(tmp_path / "bob-heard.wav", BARESIP_HZ, "sipd heard", baresip.report())
    assert_tone(baresip.received_wav(), SIPD_HZ, "baresip heard", baresip.report())
