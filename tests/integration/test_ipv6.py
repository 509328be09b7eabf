"""Calls over IPv6 loopback: SIP on [::1], SDP with ``c=IN IP6``, RTP both ways."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import defer

from sipd import CallStateError
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav
from sipd.sdp import parse_sdp
from tests.conftest import PeerFactory, within


@pytest_twisted.ensureDeferred
async def test_two_peers_on_ipv6_loopback_hear_each_other(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """A call between two peers bound to ::1 negotiates IP6 SDP and carries audio both ways."""
    alice = await peers("alice", host="::1", media_port_min=36100, media_port_max=36199)
    bob = await peers("bob", host="::1", media_port_min=36200, media_port_max=36299)
    assert alice.uri.startswith("sip:alice@[::1]:")

    async def answer() -> None:
        incoming = await bob.wait_for_incoming()
        offer = parse_sdp(incoming.sdp or "")
        assert offer.connection is not None and offer.connection.addrtype == "IP6"
        assert offer.connection.address == "::1"
        call = await incoming.accept()
        recording = call.record_wav(tmp_path / "bob.wav")
        tone = ToneGenerator(880)
        try:
            while call.is_active():
                await call.send_audio(tone.next_frame())
        except CallStateError:
            pass  # the caller hung up while a frame was queued
        await recording

    answering = defer.ensureDeferred(answer())
    call = await alice.call(bob.uri)
    await within(call.wait_for_answer(), 5)
    recording = call.record_wav(tmp_path / "alice.wav")
    tone = ToneGenerator(440)
    for _ in range(50):  # one second
        await call.send_audio(tone.next_frame())
    await call.hangup()
    await recording
    await within(answering, 5)
    heard_by_alice = read_wav(tmp_path / "alice.wav")
    heard_by_bob = read_wav(tmp_path / "bob.wav")
    assert abs(dominant_frequency(heard_by_alice) - 880) < 5
    assert abs(dominant_frequency(heard_by_bob) - 440) < 5
    assert len(heard_by_bob) >= 0.9 * 8000
