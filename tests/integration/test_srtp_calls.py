"""Calls between two sipd peers with SRTP keyed by SDES (RFC 3711, RFC 4568; docs/srtp.md).

Real sockets on 127.0.0.1. What each policy pair settles (SRTP, plain RTP or
488), that audio crosses an SRTP call both ways (a tone heard at the right
frequency), that what went over the wire was protected and authenticated by
libsrtp (its counters), and that hold/resume re-offers keep the call keyed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import CallRejected, CallStateError, SimplePeer
from sipd.api.call import Call
from sipd.media.srtp import SrtpContext
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav
from sipd.sdp import parse_sdp
from sipd.sdp.crypto import CryptoAttribute, crypto_attributes
from tests.conftest import PeerFactory, eventually, within


def _context(call: Call) -> SrtpContext | None:
    media = call.session.media_port.media
    assert media is not None
    return media.stream.srtp


async def _tone_call(
    alice: SimplePeer, bob: SimplePeer, tmp_path: Path, *, srtp: str | None = None
) -> tuple[Call, Call, str]:
    """alice calls bob; each sends a tone for a second; returns both calls and the offer."""
    offer: list[str] = []

    async def answer() -> Call:
        incoming = await bob.wait_for_incoming()
        offer.append(incoming.sdp or "")
        call = await incoming.accept()
        recording = call.record_wav(tmp_path / "bob.wav")
        tone = ToneGenerator(880)
        try:
            while call.is_active():
                await call.send_audio(tone.next_frame())
        except CallStateError:
            pass  # the caller hung up while a frame was queued
        await recording
        return call

    answering = defer.ensureDeferred(answer())
    call = await within(alice.call(bob.uri, srtp=srtp), 5)
    await within(call.wait_for_answer(), 5)
    recording = call.record_wav(tmp_path / "alice.wav")
    tone = ToneGenerator(440)
    for _ in range(50):  # one second
        await call.send_audio(tone.next_frame())
    stats = (call.stats(), _context(call))
    await call.hangup()
    await recording
    answered = await within(answering, 5)
    heard_by_alice = read_wav(tmp_path / "alice.wav")
    heard_by_bob = read_wav(tmp_path / "bob.wav")
    assert abs(dominant_frequency(heard_by_alice) - 880) < 5
    assert abs(dominant_frequency(heard_by_bob) - 440) < 5
    assert stats[0]["packets_received"] and stats[0]["srtp_dropped"] == 0
    return call, answered, offer[0]


@pytest_twisted.ensureDeferred
async def test_required_on_both_sides_encrypts_the_call_both_ways(
    peers: PeerFactory, tmp_path: Path
) -> None:
    alice = await peers("alice", srtp="required")
    bob = await peers("bob", srtp="required")
    call, answered, offer_text = await _tone_call(alice, bob, tmp_path)
    audio = parse_sdp(offer_text).audio
    assert audio is not None and audio.proto == "RTP/SAVP"
    assert [line.tag for line in crypto_attributes(audio)] == [1, 2]  # _80 and _32 offered
    answer = answered.session.local_sdp
    assert answer is not None and answer.audio is not None
    assert answer.audio.proto == "RTP/SAVP" and len(crypto_attributes(answer.audio)) == 1
    for side in (call, answered):
        assert side.stats()["srtp"] == "AES_CM_128_HMAC_SHA1_80"
        context = _context(side)
        assert context is not None
        assert context.stats.rtp_protected >= 50 and context.stats.rtp_unprotected >= 40
        assert context.stats.dropped == 0


@pytest_twisted.ensureDeferred
async def test_optional_offers_keys_over_rtp_avp_and_uses_them(
    peers: PeerFactory, tmp_path: Path
) -> None:
    alice = await peers("alice", srtp="optional")
    bob = await peers("bob", srtp="optional")
    call, answered, offer_text = await _tone_call(alice, bob, tmp_path)
    audio = parse_sdp(offer_text).audio
    assert audio is not None and audio.proto == "RTP/AVP" and crypto_attributes(audio)
    assert call.stats()["srtp"] == answered.stats()["srtp"] == "AES_CM_128_HMAC_SHA1_80"


@pytest_twisted.ensureDeferred
async def test_optional_falls_back_to_plain_rtp_with_a_peer_that_has_srtp_off(
    peers: PeerFactory, tmp_path: Path
) -> None:
    alice = await peers("alice", srtp="optional")
    bob = await peers("bob")  # srtp off: ignores the offer's crypto lines
    call, answered, _ = await _tone_call(alice, bob, tmp_path)
    assert call.stats()["srtp"] is None and answered.stats()["srtp"] is None
    answer = answered.session.local_sdp
    assert answer is not None and answer.audio is not None
    assert not crypto_attributes(answer.audio)


@pytest_twisted.ensureDeferred
async def test_a_per_call_policy_overrides_the_peers(peers: PeerFactory, tmp_path: Path) -> None:
    alice = await peers("alice")  # off, but this one call asks for SRTP
    bob = await peers("bob", srtp="optional")
    call, _, offer_text = await _tone_call(alice, bob, tmp_path, srtp="required")
    audio = parse_sdp(offer_text).audio
    assert audio is not None and audio.proto == "RTP/SAVP"
    assert call.stats()["srtp"] == "AES_CM_128_HMAC_SHA1_80"


async def _refused(alice: SimplePeer, bob: SimplePeer, reason: str) -> None:
    """alice's call is answered 488 at once, the reason in its Warning (and so in
    alice's error); bob's application never sees the call."""
    call = await within(alice.call(bob.uri), 5)
    with pytest.raises(CallRejected) as rejected:
        await within(call.wait_for_answer(), 5)
    assert rejected.value.status == 488 and reason in str(rejected.value), rejected.value
    assert call.state_path[-2:] == ["Calling", "Failed"], call.state_path  # no ringing
    assert bob.try_incoming() is None and not bob.active_calls()


@pytest_twisted.ensureDeferred
async def test_required_refuses_a_plain_offer_with_488(peers: PeerFactory) -> None:
    alice = await peers("alice")
    bob = await peers("bob", srtp="required")
    await _refused(alice, bob, "srtp is 'required' but the offer has no a=crypto line")


@pytest_twisted.ensureDeferred
async def test_srtp_off_refuses_an_rtp_savp_offer_with_488(peers: PeerFactory) -> None:
    alice = await peers("alice", srtp="required")
    bob = await peers("bob")
    await _refused(alice, bob, "offer offers audio only over RTP/SAVP")


@pytest_twisted.ensureDeferred
async def test_hold_and_resume_keep_an_srtp_call_keyed(peers: PeerFactory) -> None:
    alice = await peers("alice", srtp="required")
    bob = await peers("bob", srtp="required")
    call = await within(alice.call(bob.uri), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    await within(call.hold(), 5)
    await within(call.resume(), 5)
    before = answered.stats()["packets_received"]
    assert isinstance(before, int)
    assert await eventually(lambda: answered.stats()["packets_received"] > before + 10, 5)
    for side in (call, answered):
        context = _context(side)
        assert context is not None and context.stats.dropped == 0
        assert side.stats()["srtp"] == "AES_CM_128_HMAC_SHA1_80"
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)


def test_an_unknown_policy_is_refused_naming_the_choices() -> None:
    from sipd.config import SipdConfig
    from sipd.errors import ConfigError

    with pytest.raises(ConfigError, match="srtp: 'maybe' is not one of off, optional, required"):
        SipdConfig(srtp="maybe")


@pytest_twisted.ensureDeferred
async def test_keys_never_reach_the_log_even_at_debug(peers: PeerFactory, tmp_path: Path) -> None:
    from twisted.logger import LogEvent, formatEvent, globalLogPublisher

    from sipd.logs import get_level, set_level

    lines: list[str] = []

    def observer(event: LogEvent) -> None:
        lines.append(formatEvent(event) + repr(event))

    level = get_level()
    set_level("debug")
    globalLogPublisher.addObserver(observer)
    try:
        alice = await peers("alice", srtp="required")
        bob = await peers("bob", srtp="required")
        call, answered, offer_text = await _tone_call(alice, bob, tmp_path)
    finally:
        globalLogPublisher.removeObserver(observer)
        set_level(level)
    answer = answered.session.local_sdp
    assert answer is not None and answer.audio is not None
    keys = [
        line.keys.to_base64()
        for sdp in (parse_sdp(offer_text).audio, answer.audio)
        for line in crypto_attributes(sdp)  # type: ignore[arg-type]
        if isinstance(line, CryptoAttribute)
    ]
    assert len(keys) == 3 and lines
    text = "\n".join(lines)
    assert not [key for key in keys if key in text]
    assert "inline:" not in repr(call.stats()) + repr(_context(call))
