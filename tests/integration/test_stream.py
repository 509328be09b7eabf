"""``call.stream()``: a call's audio to a real WebSocket bot (autobahn, in the test) and back.

The bot (tests/integration/stream_bot.py) listens on a free loopback port.
Alice calls Bob; Bob answers and streams his call to the bot, so what the bot
plays is what Alice hears and what Alice sends is what the bot gets. Times
are the reactor's clock, shared by the bot, the bridge and Alice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest_twisted
from numpy.typing import NDArray

from sipd import Call, SimplePeer
from sipd.media.tones import ToneGenerator, dominant_frequency, tone
from sipd.media.wav import WavWriter
from sipd.streaming import StreamEnd, StreamError
from tests.conftest import PeerFactory, get_reactor, settle, within
from tests.integration.stream_bot import BotConnection, SilentServer, TestBot

#: A 20 ms block counts as tone above this RMS (tones are 0.3 of full scale).
LOUD = 1000.0


def rms(samples: NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


async def streamed_call(peers: PeerFactory, bot: Any, **options: Any) -> tuple[Call, Call, Any]:
    """Alice calls Bob; Bob answers and streams to the bot. (alice's call, bob's, stream d)."""
    alice: SimplePeer = await peers("alice")
    bob: SimplePeer = await peers("bob")
    call = await within(alice.call(bob.uri), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    streamed = answered.stream(bot.url, **options)
    return call, answered, streamed


class Listener:
    """Alice's received frames with their arrival times (reactor clock)."""

    def __init__(self, call: Call) -> None:
        self.frames: list[tuple[float, NDArray[np.int16]]] = []
        self._call = call
        self._done = self._loop()

    def _loop(self) -> Any:
        async def run() -> None:
            while (frame := await self._call.recv_audio()) is not None:
                self.frames.append((get_reactor().seconds(), frame.samples))

        from twisted.internet import defer

        return defer.ensureDeferred(run())

    def loud(self) -> list[tuple[float, NDArray[np.int16]]]:
        return [(t, f) for t, f in self.frames if rms(f) > LOUD]


@pytest_twisted.ensureDeferred
async def test_the_bot_echoes_the_caller_who_hears_their_tone(peers: PeerFactory) -> None:
    bot = TestBot(echo=True)
    try:
        call, answered, streamed = await streamed_call(
            peers, bot, parameters={"campaign": "spring"}
        )
        conn: BotConnection = await within(bot.next_connection(), 5)
        listener = Listener(call)
        gen = ToneGenerator(1000)
        for _ in range(75):
            await within(call.send_audio(gen.next_frame()), 2)
        await settle(0.3)
        await within(call.hangup(), 5)
        end: StreamEnd = await within(streamed, 5)
        closed = await within(conn.closed, 5)
        await within(listener._done, 5)
    finally:
        await bot.stop()

    events = [m.get("event") for _, m in conn.received]
    assert events[0] == "connected" and events[1] == "start", events[:3]
    assert events[-1] == "stop", events[-3:]
    assert not conn.binary(), "media-stream sends text frames only"
    start = conn.events("start")[0]["start"]
    assert start["callSid"] == answered.sip_call_id and start["streamSid"].startswith("MZ")
    assert start["customParameters"] == {
        "campaign": "spring",
        "from_number": "alice",
        "to_number": "bob",
    }
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    media = conn.events("media")
    assert len(media) >= 70
    sequence = [int(m["sequenceNumber"]) for _, m in conn.received if "sequenceNumber" in m]
    assert sequence == list(range(1, len(sequence) + 1))
    assert all(isinstance(m["sequenceNumber"], str) for m in media)
    assert [m["media"]["chunk"] for m in media[:3]] == ["1", "2", "3"]
    assert [m["media"]["timestamp"] for m in media[:3]] == ["0", "20", "40"]
    # The caller hears their own tone back through the bot.
    heard = np.concatenate([f for _, f in listener.loud()])
    assert len(heard) >= 50 * 160, len(heard)
    assert abs(dominant_frequency(heard) - 1000) < 10
    # The caller hung up: stop, then sipd closed the socket (the bot did not).
    assert end.ended_by == "caller" and not conn.closed_by_bot
    assert closed[0], "sipd closes the socket cleanly after stop"


@pytest_twisted.ensureDeferred
async def test_bot_audio_in_odd_chunks_marks_after_their_audio_and_clear_stops_at_once(
    peers: PeerFactory,
) -> None:
    bot = TestBot()
    reactor = get_reactor()
    try:
        call, _, streamed = await streamed_call(peers, bot)
        conn = await within(bot.next_connection(), 5)
        listener = Listener(call)
        await settle(0.2)
        # 1.1 s of 600 Hz in 137.5 ms chunks, then a mark; 40 ms chunks; 2 s silence at once.
        first = tone(600, 1.1)
        sent_at = reactor.seconds()
        for i in range(0, len(first), 1100):
            conn.send_media(first[i : i + 1100])
        conn.send_mark("tone")
        second = tone(600, 0.4)
        for i in range(0, len(second), 320):
            conn.send_media(second[i : i + 320])
        conn.send_mark("second")
        conn.send_media(np.zeros(16000, dtype=np.int16))
        conn.send_mark("silence")
        _, tone_mark = await within(conn.wait_event("mark", name="tone"), 5)
        tone_back = reactor.seconds()
        await within(conn.wait_event("mark", name="second"), 5)
        second_back = reactor.seconds()
        await within(conn.wait_event("mark", name="silence"), 5)
        # A long prompt, cleared 0.6 s in.
        conn.send_media(tone(900, 5.0))
        conn.send_mark("prompt")
        await settle(0.6)
        cleared_at = reactor.seconds()
        conn.send_clear()
        await within(conn.wait_event("mark", name="prompt"), 2)
        prompt_back = reactor.seconds()
        await settle(0.5)
        await within(call.hangup(), 5)
        await within(streamed, 5)
        await within(listener._done, 5)
    finally:
        await bot.stop()

    assert tone_mark["mark"]["name"] == "tone"
    # Each mark came back after its audio had played (1.1 s, then 0.4 s more), not before.
    assert 1.1 - 0.05 <= tone_back - sent_at <= 1.1 + 0.25, tone_back - sent_at
    assert 1.5 - 0.05 <= second_back - sent_at <= 1.5 + 0.25, second_back - sent_at
    assert prompt_back - cleared_at < 0.1, "clear returns the pending marks at once"
    # Re-framing: every 600 Hz sample arrived, as 20 ms frames without a gap.
    loud = listener.loud()
    tone_frames = [(t, f) for t, f in loud if abs(dominant_frequency(f) - 600) < 60]
    assert len(tone_frames) == 75, len(tone_frames)
    times = [t for t, _ in tone_frames]
    assert max(np.diff(times)) < 0.06, "no gap inside the bot's 1.5 s of tone"
    # Barge-in: the 900 Hz prompt stops within 60 ms of the clear message.
    prompt = [t for t, f in loud if abs(dominant_frequency(f) - 900) < 90]
    assert prompt, "the prompt was heard before the clear"
    assert prompt[-1] - cleared_at <= 0.060, prompt[-1] - cleared_at
    assert 0.45 <= len(prompt) * 0.02 <= 0.7, len(prompt)


@pytest_twisted.ensureDeferred
async def test_the_callers_dtmf_reaches_the_bot_and_the_bot_hangs_up(peers: PeerFactory) -> None:
    bot = TestBot()
    try:
        call, answered, streamed = await streamed_call(peers, bot)
        conn = await within(bot.next_connection(), 5)
        await within(call.send_dtmf("12#"), 5)
        await within(conn.wait_event("dtmf", digit="#"), 3)
        conn.close()  # the bot hangs up
        end: StreamEnd = await within(streamed, 5)
        await within(call.wait_for_end(), 5)
    finally:
        await bot.stop()
    digits = [m["dtmf"]["digit"] for m in conn.events("dtmf")]
    assert digits == ["1", "2", "#"]
    assert all(m["dtmf"]["track"] == "inbound_track" for m in conn.events("dtmf"))
    assert end.ended_by == "bot" and "closed the WebSocket" in end.reason
    assert not call.is_active() and not answered.is_active()


@pytest_twisted.ensureDeferred
async def test_linear16_carries_16_khz_pcm_in_binary_frames(peers: PeerFactory) -> None:
    bot = TestBot(echo=True)
    try:
        call, _, streamed = await streamed_call(peers, bot, protocol="linear16")
        conn = await within(bot.next_connection(), 5)
        listener = Listener(call)
        gen = ToneGenerator(1000)
        for _ in range(60):
            await within(call.send_audio(gen.next_frame()), 2)
        await settle(0.3)
        await within(call.hangup(), 5)
        await within(streamed, 5)
        await within(listener._done, 5)
    finally:
        await bot.stop()
    start = conn.events("start")[0]["start"]
    assert start["mediaFormat"] == {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
    frames = conn.binary()
    assert len(frames) >= 50 and not conn.events("media")
    pcm = np.frombuffer(b"".join(frames), dtype="<i2")
    assert abs(dominant_frequency(pcm, 16000) - 1000) < 10
    heard = np.concatenate([f for _, f in listener.loud()])
    assert len(heard) >= 40 * 160 and abs(dominant_frequency(heard) - 1000) < 10


@pytest_twisted.ensureDeferred
async def test_a_bot_that_never_answers_the_handshake_ends_the_call_in_time(
    peers: PeerFactory,
) -> None:
    server = SilentServer()
    url = server.url
    reactor = get_reactor()
    try:
        call, answered, streamed = await streamed_call(peers, server, connect_timeout=1.0)
        began = reactor.seconds()
        try:
            await within(streamed, 5)
        except StreamError as exc:
            error = str(exc)
        else:
            raise AssertionError("the stream to a mute server did not fail")
        took = reactor.seconds() - began
        await within(call.wait_for_end(), 5)
    finally:
        await server.stop()
    assert "no WebSocket handshake within 1 s" in error and url in error, error
    assert 0.9 <= took <= 1.6, took
    assert not answered.is_active()


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_says_so(peers: PeerFactory) -> None:
    server = SilentServer()
    url = server.url
    await server.stop()  # nothing listens there any more
    alice = await peers("alice")
    bob = await peers("bob")
    call = await within(alice.call(bob.uri), 5)
    answered = await within((await within(bob.wait_for_incoming(), 5)).accept(), 5)
    try:
        await within(answered.stream(url, connect_timeout=2), 5)
    except StreamError as exc:
        assert "is the bot running" in str(exc) and url in str(exc), str(exc)
    else:
        raise AssertionError("streaming to a closed port did not fail")
    await within(call.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_a_fallback_wav_plays_when_the_bot_goes_away(
    peers: PeerFactory, tmp_path: Path
) -> None:
    fallback = tmp_path / "sorry.wav"
    writer = WavWriter(fallback)
    writer.write(tone(500, 0.8))
    writer.close()
    bot = TestBot()
    try:
        call, _, streamed = await streamed_call(peers, bot, fallback_wav=fallback)
        conn = await within(bot.next_connection(), 5)
        listener = Listener(call)
        await settle(0.2)
        conn.close()
        end: StreamEnd = await within(streamed, 5)
        await within(call.wait_for_end(), 5)
        await within(listener._done, 5)
    finally:
        await bot.stop()
    assert end.ended_by == "bot"
    heard = np.concatenate([f for _, f in listener.loud()])
    assert len(heard) >= 0.7 * 8000 and abs(dominant_frequency(heard) - 500) < 10
