"""The media-stream protocol core (sipd.streaming.protocol), without sockets or clocks."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from sipd.errors import SipdValueError
from sipd.media import g711
from sipd.streaming.protocol import (
    LINEAR16,
    MEDIA_STREAM,
    BotClear,
    BotMark,
    BotMedia,
    BotOther,
    MessageBuilder,
    Playback,
    StreamProtocolError,
    StreamSpec,
    normalise_protocol,
    parse_bot_binary,
    parse_bot_text,
)

SPEC = StreamSpec(MEDIA_STREAM)


def builder(spec: StreamSpec = SPEC) -> MessageBuilder:
    return MessageBuilder(spec, stream_sid="MZ1", call_sid="abc@host")


def test_connected_then_start_carry_the_fields_bots_look_for() -> None:
    b = builder()
    connected = json.loads(b.connected())
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = json.loads(b.start(from_number="alice", to_number="bot", parameters={"lang": "en"}))
    assert start["event"] == "start"
    assert start["sequenceNumber"] == "1"
    assert start["streamSid"] == "MZ1"
    body = start["start"]
    assert body["streamSid"] == "MZ1" and body["callSid"] == "abc@host"
    assert body["accountSid"] and body["tracks"] == ["inbound"]
    assert body["customParameters"] == {"lang": "en", "from_number": "alice", "to_number": "bot"}
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


def test_media_messages_number_chunks_and_time_as_strings() -> None:
    b = builder()
    b.start(from_number="a", to_number="b")
    tone = (np.sin(np.arange(160) / 3) * 8000).astype(np.int16)
    first = json.loads(b.media(tone))
    second = json.loads(b.media(tone))
    assert first["event"] == "media" and first["sequenceNumber"] == "2"
    assert first["media"]["track"] == "inbound"
    assert (first["media"]["chunk"], first["media"]["timestamp"]) == ("1", "0")
    assert (second["media"]["chunk"], second["media"]["timestamp"]) == ("2", "20")
    assert second["sequenceNumber"] == "3"
    payload = base64.b64decode(first["media"]["payload"])
    assert len(payload) == 160
    assert np.array_equal(g711.ulaw_decode(payload), g711.ulaw_decode(g711.ulaw_encode(tone)))


def test_dtmf_mark_stop() -> None:
    b = builder()
    assert json.loads(b.dtmf("5"))["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert json.loads(b.mark("greeting"))["mark"] == {"name": "greeting"}
    stop = json.loads(b.stop())
    assert stop["event"] == "stop" and stop["stop"]["callSid"] == "abc@host"
    assert stop["sequenceNumber"] == "3" and stop["streamSid"] == "MZ1"


def test_linear16_media_is_binary_pcm() -> None:
    b = builder(StreamSpec(LINEAR16))
    assert json.loads(b.start(from_number="a", to_number="b"))["start"]["mediaFormat"] == {
        "encoding": "audio/l16",
        "sampleRate": 16000,
        "channels": 1,
    }
    pcm = np.arange(-160, 160, dtype=np.int16)
    data = b.media(pcm)
    assert isinstance(data, bytes) and data == pcm.astype("<i2").tobytes()
    assert np.array_equal(parse_bot_binary(data + b"\x01").samples, pcm)


def test_parse_bot_messages() -> None:
    codes = g711.ulaw_encode(np.full(80, 1000, dtype=np.int16)).tobytes()
    media = parse_bot_text(
        json.dumps(
            {
                "event": "media",
                "streamSid": "MZ1",
                "media": {"payload": base64.b64encode(codes).decode()},
            }
        ),
        SPEC,
    )
    assert isinstance(media, BotMedia) and len(media.samples) == 80
    assert parse_bot_text(
        '{"event":"mark","streamSid":"MZ1","mark":{"name":"x"}}', SPEC
    ) == BotMark("x")
    assert parse_bot_text('{"event":"clear","streamSid":"MZ1"}', SPEC) == BotClear()
    assert parse_bot_text('{"event":"custom"}', SPEC) == BotOther("custom")
    for bad in (
        "not json",
        "[]",
        '{"event":"media"}',
        '{"event":"media","media":{"payload":"@@"}}',
        '{"event":"mark","mark":{}}',
    ):
        with pytest.raises(StreamProtocolError):
            parse_bot_text(bad, SPEC)


def test_protocol_names() -> None:
    assert normalise_protocol("l16-16k") == LINEAR16
    assert normalise_protocol("Media-Stream") == MEDIA_STREAM
    with pytest.raises(SipdValueError, match="use one of"):
        normalise_protocol("sip")


def drain(p: Playback) -> list[np.ndarray]:
    out = []
    while (frame := p.take()) is not None:
        out.append(frame)
    return out


@pytest.mark.parametrize("chunk_ms", [20, 40, 137.5, 2000, 7.5])
def test_chunks_of_any_length_are_reframed_without_gaps_or_drops(chunk_ms: float) -> None:
    p = Playback(160)
    total = 8000 * 3
    ramp = (np.arange(total) % 30000).astype(np.int16)
    step = int(chunk_ms * 8)
    frames: list[np.ndarray] = []
    for start in range(0, total, step):
        p.push(ramp[start : start + step])
        frames += drain(p)
    tail = p.take(allow_partial=True)
    if tail is not None:
        frames.append(tail)
    joined = np.concatenate(frames)
    assert all(len(f) == 160 for f in frames)
    assert np.array_equal(joined[:total], ramp)
    assert not joined[total:].any()


def test_marks_come_back_only_after_their_audio_is_played() -> None:
    p = Playback(160)
    assert p.mark("empty") == ["empty"]  # nothing queued: due at once
    p.push(np.ones(400, dtype=np.int16))
    assert p.mark("a") == []
    p.push(np.ones(160, dtype=np.int16))
    assert p.mark("b") == []
    assert p.take() is not None and p.played(160) == []
    assert p.take() is not None and p.played(160) == []
    last = p.take(allow_partial=True)  # 80 samples of "a" + 80 of "b"
    assert last is not None
    assert p.played(160) == ["a"]
    assert p.take(allow_partial=True) is not None
    assert p.played(160) == ["b"]


def test_clear_drops_queued_audio_and_returns_pending_marks() -> None:
    p = Playback(160)
    p.push(np.ones(8000, dtype=np.int16))
    p.mark("m1")
    assert p.take() is not None
    assert p.clear() == ["m1"]
    assert p.take(allow_partial=True) is None and p.queued == 0
    p.played(160)
    p.push(np.full(160, 7, dtype=np.int16))
    assert p.mark("m2") == []
    frame = p.take()
    assert frame is not None and frame[0] == 7
    assert p.played(160) == ["m2"]


def test_playback_is_bounded() -> None:
    p = Playback(160, max_samples=1000)
    p.push(np.ones(800, dtype=np.int16))
    p.push(np.ones(800, dtype=np.int16))
    assert p.queued == 1000 and p.overflow == 600


def test_overflow_drops_the_oldest_audio_and_its_marks_come_due() -> None:
    p = Playback(160, max_samples=1000)
    p.push(np.full(800, 1, dtype=np.int16))
    assert p.mark("old") == []
    p.push(np.full(800, 2, dtype=np.int16))
    assert p.queued == 1000 and p.overflow == 600
    first, second = p.take(), p.take()
    assert first is not None and second is not None
    assert (first == 1).all() and (second[:40] == 1).all() and (second[40:] == 2).all()
    assert p.played(160) == []
    assert p.played(160) == ["old"]  # its audio was either dropped or played


def live(p: Playback, frames: list[np.ndarray], backlog: int) -> list[np.ndarray]:
    """A bot streaming in real time, ``backlog`` frames late: one push and one tick per
    20 ms, the tick taking what the bridge would hand the session."""
    for f in frames[:backlog]:
        p.push(f)
    out = []
    for f in frames[backlog:]:
        p.push(f)
        taken = p.take(allow_partial=True)
        if taken is not None:
            out.append(taken)
            p.played(160)
    return out


def test_a_live_stream_running_late_catches_up_by_skipping_quiet_frames_only() -> None:
    quiet = np.full(160, 50, dtype=np.int16)
    loud = [np.full(160, 5000 + i, dtype=np.int16) for i in range(200)]
    # Speech (every frame loud) first: nothing may be skipped, however late.
    p = Playback(160)
    frames = loud[:100] + [quiet] * 100
    out = live(p, frames, backlog=3)
    assert [int(f[0]) for f in out[:100]] == [int(f[0]) for f in loud[:100]]
    # Then a pause: the 3-frame backlog is skipped there, and the stream runs on time.
    assert p.caught_up == 3 * 160
    assert p.queued == 0 and len(out) == len(frames) - 3
    assert all(f[0] == 50 for f in out[100:])


def test_a_prompt_sent_ahead_is_played_whole_even_when_quiet() -> None:
    """2 s of silence at once (a bot finishing) drains without a skip: never a standing
    backlog of a live stream, only a queue the bot filled on purpose."""
    p = Playback(160)
    p.push(np.zeros(16000, dtype=np.int16))
    p.mark("end")
    played = 0
    marks: list[str] = []
    while p.take() is not None:
        played += 1
        marks += p.played(160)
    assert played == 100 and p.caught_up == 0 and marks == ["end"]


def test_skipped_frames_count_as_played_for_marks_and_catching_up_can_be_off() -> None:
    quiet = [np.zeros(160, dtype=np.int16)] * 60
    on = Playback(160, catch_up_after=10)
    on.push(quiet[0])
    on.push(quiet[1])
    on.mark("m")  # after the first two frames
    out = live(on, quiet[2:], backlog=2)
    assert on.caught_up >= 160 and len(out) < 58
    assert on.pending_marks == 0
    off = Playback(160, catch_up_after=0)
    assert len(live(off, quiet, backlog=2)) == 58 and off.caught_up == 0
