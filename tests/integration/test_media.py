"""RTP media between two SimplePeers over real UDP on 127.0.0.1 (issue 4, "Media").

Audio is checked by what it sounds like: each side sends a tone of its own
frequency and the other side's recording must be dominated by it
(``dominant_frequency``) and hold nearly every 20 ms frame that was sent.
Where exact samples matter, received frames are compared with the G.711
round trip of what was sent. The ``peers`` fixture (tests/conftest.py)
checks afterwards that ports, stores and timers are all released.
"""

from __future__ import annotations

import random
import re
import socket
import wave
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from numpy.typing import NDArray
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from sipd import Call, SimplePeer
from sipd.errors import RtpParseError, WavFormatError
from sipd.media import g711
from sipd.media.frame import AudioFrame
from sipd.media.rtp import RtpPacket
from sipd.media.tones import ToneGenerator, dominant_frequency, tone
from sipd.session.media_adapter import MediaSession
from tests.conftest import PeerFactory, eventually, get_reactor, settle, within

#: Frames of tone each test sends (1 s of audio).
N_FRAMES = 50


async def connect(alice: SimplePeer, bob: SimplePeer) -> tuple[Call, Call]:
    """Alice calls Bob, Bob answers; returns (alice's call, bob's call)."""
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    answered: Call = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    return call, answered


async def hang_up(call: Call, other: Call) -> None:
    await within(call.hangup(), 5)
    await within(other.wait_for_end(), 5)


async def send_tone(call: Call, freq: float, frames: int = N_FRAMES) -> None:
    """Send ``frames`` 20 ms frames of a continuous tone, paced by the Deferreds."""
    gen = ToneGenerator(freq)
    for _ in range(frames):
        await within(call.send_audio(gen.next_frame()), 2)


async def drain(get: Any, limit: int = 2000) -> list[AudioFrame]:
    """Read frames with ``get()`` until it gives None (the call ended)."""
    frames: list[AudioFrame] = []
    for _ in range(limit):
        frame = await within(get(), 5)
        if frame is None:
            return frames
        frames.append(frame)
    raise AssertionError(f"no end of audio after {limit} frames")


def read_wav_file(path: Path) -> NDArray[np.int16]:
    """A recording read back with the standard library (8 kHz mono 16-bit)."""
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def loud_frames(samples: NDArray[np.int16], threshold: float = 2000.0) -> int:
    """20 ms blocks whose RMS shows tone (a 0.3-scale sine is ~6950, silence is 0)."""
    n = len(samples) // 160
    blocks = samples[: n * 160].reshape(n, 160).astype(np.float64)
    rms = np.sqrt((blocks**2).mean(axis=1))
    return int((rms > threshold).sum())


def stat(call: Call, key: str) -> float:
    """One numeric entry of ``call.stats()``."""
    value = call.stats()[key]
    assert isinstance(value, int | float), f"stats()[{key!r}] is {value!r}"
    return float(value)


def media_of(call: Call) -> MediaSession:
    media = call.session.media
    assert media is not None
    return media


def round_trip(codec: str, samples: NDArray[np.int16]) -> NDArray[np.int16]:
    return g711.decode(codec, g711.encode(codec, samples))


class UdpSink(DatagramProtocol):
    """A bare UDP socket on 127.0.0.1 that keeps the RTP packets it receives."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.port_obj: Any = get_reactor().listenUDP(0, self, interface="127.0.0.1")
        self.port: int = self.port_obj.getHost().port

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        with suppress(RtpParseError):  # RTCP or junk: not what these tests look at
            self.packets.append(RtpPacket.parse(data))

    def send(self, packet: RtpPacket, port: int) -> None:
        self.port_obj.write(bytes(packet), ("127.0.0.1", port))

    def close(self) -> defer.Deferred[None] | None:
        result: defer.Deferred[None] | None = self.port_obj.stopListening()
        return result


def free_port_range(size: int) -> int:
    """An even port with ``size`` free UDP ports from it on 127.0.0.1."""
    for _ in range(50):
        base = random.randrange(42000, 60000, 2)
        with ExitStack() as stack:
            try:
                for port in range(base, base + size):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise AssertionError(f"no {size} consecutive free UDP ports found")


# -- audio both ways ----------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_both_directions_carry_tones_that_the_recordings_hold(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """Alice sends 440 Hz, Bob 880 Hz at once: each recording is the other's tone and
    holds at least 95% of the frames sent; stats count the packets with no loss."""
    alice, bob = await peers("alice"), await peers("bob")
    call, answered = await connect(alice, bob)
    alice_rec = call.record_wav(tmp_path / "alice.wav")
    bob_rec = answered.record_wav(tmp_path / "bob.wav")
    await within(
        defer.gatherResults(
            [
                defer.ensureDeferred(send_tone(call, 440)),
                defer.ensureDeferred(send_tone(answered, 880)),
            ]
        ),
        10,
    )
    await settle(0.1)  # the last packets cross the loopback
    for c in (call, answered):
        stats = c.stats()
        assert stat(c, "packets_sent") >= N_FRAMES
        assert stat(c, "packets_received") >= N_FRAMES
        assert stats["packets_lost"] == 0 and stats["dropped_foreign"] == 0
        assert stats["codec"] == "PCMU"
    await hang_up(call, answered)
    await within(defer.gatherResults([alice_rec, bob_rec]), 5)
    heard_by_bob = read_wav_file(tmp_path / "bob.wav")
    heard_by_alice = read_wav_file(tmp_path / "alice.wav")
    assert dominant_frequency(heard_by_bob) == pytest.approx(440, abs=5)
    assert dominant_frequency(heard_by_alice) == pytest.approx(880, abs=5)
    for heard in (heard_by_bob, heard_by_alice):
        assert 0.95 * N_FRAMES <= loud_frames(heard) <= N_FRAMES + 1


@pytest_twisted.ensureDeferred
async def test_recv_audio_gives_frames_in_order_then_none_after_hang_up(
    peers: PeerFactory,
) -> None:
    """Received frames are 20 ms at 8 kHz with consecutive RTP numbers; once the call
    has ended recv_audio() gives None (and keeps giving None)."""
    alice, bob = await peers("alice"), await peers("bob")
    call, answered = await connect(alice, bob)
    await send_tone(call, 500, 10)
    frames = [await within(answered.recv_audio(), 2) for _ in range(5)]
    for f in frames:
        assert isinstance(f, AudioFrame)
        assert len(f.samples) == 160 and f.sample_rate == 8000
        assert f.samples.dtype == np.int16
    seqs = [int(f.sequence or 0) for f in frames if f is not None]
    stamps = [int(f.timestamp or 0) for f in frames if f is not None]
    assert seqs == [(seqs[0] + i) % 65536 for i in range(5)]
    assert stamps == [(stamps[0] + 160 * i) % 2**32 for i in range(5)]
    assert await eventually(lambda: answered.try_recv_audio() is not None, 2)
    await hang_up(call, answered)
    rest = await drain(answered.recv_audio)
    assert all(isinstance(f, AudioFrame) for f in rest)
    assert await within(answered.recv_audio(), 1) is None
    assert answered.try_recv_audio() is None
    assert len(await drain(call.recv_audio)) > 0  # Alice heard Bob's silence, then the end
    assert await within(call.recv_audio(), 1) is None


@pytest_twisted.ensureDeferred
async def test_two_audio_subscribers_each_get_every_frame(peers: PeerFactory) -> None:
    """Two subscribe_to_audio() streams of one call both receive every frame Alice sent,
    sample for sample (after G.711), in order and without gaps."""
    alice, bob = await peers("alice"), await peers("bob")
    call, answered = await connect(alice, bob)
    sub1 = answered.session.subscribe_to_audio()
    sub2 = answered.session.subscribe_to_audio()
    sent = [AudioFrame(tone(300 + 40 * k, 0.02)) for k in range(25)]
    for frame in sent:
        await within(call.send_audio(frame), 2)
    await settle(0.1)
    codec = str(answered.stats()["codec"])
    await hang_up(call, answered)
    got1, got2 = await drain(sub1.get), await drain(sub2.get)
    assert [f.sequence for f in got1] == [f.sequence for f in got2]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(got1, got2, strict=True))
    seqs = [int(f.sequence or 0) for f in got1]
    assert seqs == [(seqs[0] + i) % 65536 for i in range(len(seqs))]
    expected = [round_trip(codec, f.samples) for f in sent]
    starts = [i for i, f in enumerate(got1) if np.array_equal(f.samples, expected[0])]
    assert starts, "the first frame Alice sent never reached the subscribers"
    window = got1[starts[0] : starts[0] + len(expected)]
    assert len(window) == len(expected)
    assert all(np.array_equal(f.samples, e) for f, e in zip(window, expected, strict=True))


# -- DTMF -------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_dtmf_digits_arrive_in_order_via_callback_and_queue(peers: PeerFactory) -> None:
    """Digits "123#*0" sent by Alice reach Bob's on_dtmf callback and recv_dtmf in order,
    each exactly once."""
    alice, bob = await peers("alice"), await peers("bob")
    call, answered = await connect(alice, bob)
    heard: list[str] = []
    answered.on_dtmf(heard.append)
    await within(call.send_dtmf("123#*0"), 5)
    assert await eventually(lambda: len(heard) >= 6, 2)
    await settle(0.1)  # End retransmissions must not repeat a digit
    assert heard == list("123#*0")
    digits = [await within(answered.recv_dtmf(), 1) for _ in range(6)]
    assert digits == list("123#*0")
    assert answered.try_recv_dtmf() is None
    assert answered.stats()["dtmf_received"] == 6
    await hang_up(call, answered)
    assert await within(answered.recv_dtmf(), 1) is None


# -- WAV --------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_play_wav_of_a_16khz_stereo_file_is_heard_at_its_frequency(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """A 0.6 s, 1 kHz, 16 kHz stereo file is converted: Bob hears 1 kHz for 0.6 s."""
    path = tmp_path / "stereo16k.wav"
    mono = tone(1000, 0.6, sample_rate=16000)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.column_stack([mono, mono]).astype("<i2").tobytes())
    alice, bob = await peers("alice"), await peers("bob")
    call, answered = await connect(alice, bob)
    recording = answered.record_wav(tmp_path / "heard.wav")
    await within(call.play_wav(path), 5)
    await settle(0.1)
    await hang_up(call, answered)
    await within(recording, 5)
    heard = read_wav_file(tmp_path / "heard.wav")
    assert dominant_frequency(heard) == pytest.approx(1000, abs=5)
    assert 28 <= loud_frames(heard) <= 31  # 30 frames of 20 ms


@pytest_twisted.ensureDeferred
async def test_play_wav_of_a_file_that_is_not_wav_fails_naming_it(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """A text file (and a missing file) fail play_wav with WavFormatError naming the path;
    the call itself carries on."""
    path = tmp_path / "notes.txt"
    path.write_text("this is not RIFF audio\n" * 10)
    alice, bob = await peers("alice"), await peers("bob")
    call, answered = await connect(alice, bob)
    with pytest.raises(WavFormatError, match=re.escape(str(path))):
        await within(call.play_wav(path), 2)
    missing = tmp_path / "missing.wav"
    with pytest.raises(WavFormatError, match=re.escape(str(missing))):
        await within(call.play_wav(missing), 2)
    assert call.is_active()
    await hang_up(call, answered)


# -- ports ------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_more_sequential_calls_than_the_port_range_holds_all_succeed(
    peers: PeerFactory,
) -> None:
    """A range of 8 ports holds 4 RTP/RTCP pairs; 8 calls one after another all get media
    on an even port of the range, because each call gives its pair back."""
    base = free_port_range(8)
    alice = await peers("alice")
    bob = await peers("bob", media_port_min=base, media_port_max=base + 7)
    assert bob.coordinator.media.ports.capacity == 4
    used: list[int] = []
    for _ in range(8):
        call, answered = await connect(alice, bob)
        port = answered.stats()["local_port"]
        assert isinstance(port, int) and base <= port < base + 7 and port % 2 == 0
        used.append(port)
        assert await within(answered.recv_audio(), 2) is not None  # RTP really flows
        await hang_up(call, answered)
        assert await eventually(lambda: bob.coordinator.media.ports.in_use == 0, 2)
    assert sorted(set(used)) == [base, base + 2, base + 4, base + 6]


# -- statistics ---------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_stats_show_traffic_no_loss_and_rtt_once_rtcp_is_exchanged(
    peers: PeerFactory,
) -> None:
    """With RTCP every 0.2 s both sides soon know the round-trip time; loss is zero."""
    alice = await peers("alice", rtcp_interval=0.2)
    bob = await peers("bob", rtcp_interval=0.2)
    call, answered = await connect(alice, bob)
    assert call.stats()["rtt_ms"] is None  # no RTCP yet

    def both_know_rtt() -> bool:
        return call.stats()["rtt_ms"] is not None and answered.stats()["rtt_ms"] is not None

    assert await eventually(both_know_rtt, 5), (call.stats(), answered.stats())
    await settle(0.3)
    for c in (call, answered):
        stats = c.stats()
        assert stat(c, "packets_sent") > 10 and stat(c, "packets_received") > 10
        assert stats["packets_lost"] == 0 and stats["fraction_lost"] == 0.0
        assert stats["remote_fraction_lost"] == 0.0
        assert 0.0 <= stat(c, "rtt_ms") < 200.0
        assert 0.0 <= stat(c, "jitter_ms") < 20.0
    assert call.stats()["remote"] == ("127.0.0.1", answered.stats()["local_port"])
    assert answered.stats()["remote"] == ("127.0.0.1", call.stats()["local_port"])
    await hang_up(call, answered)


# -- symmetric RTP ------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_bob_latches_to_a_new_source_of_alices_ssrc_and_drops_a_stranger(
    peers: PeerFactory,
) -> None:
    """Alice's SSRC arriving from a new socket (a NAT rebinding) moves Bob's RTP there;
    a third socket with another SSRC is dropped and counted and gets nothing back."""
    # Alice pauses when idle, so only the test's socket sends her SSRC after the start.
    alice = await peers("alice", silence_when_idle=False)
    bob = await peers("bob")
    call, answered = await connect(alice, bob)
    await send_tone(call, 440, 5)
    assert await eventually(lambda: stat(answered, "packets_received") >= 5, 2)
    assert answered.stats()["latched"] == 0
    alice_sender = media_of(call).stream.sender
    bob_ssrc = media_of(answered).stream.sender.ssrc
    bob_port = answered.stats()["local_port"]
    assert isinstance(bob_port, int)
    payload = g711.encode("PCMU", np.zeros(160, dtype=np.int16))
    nat, stranger = UdpSink(), UdpSink()
    try:
        for i in range(5):
            nat.send(
                RtpPacket(
                    payload_type=0,
                    sequence=(alice_sender.sequence + i) % 65536,
                    timestamp=(alice_sender.timestamp + 160 * i) % 2**32,
                    ssrc=alice_sender.ssrc,
                    payload=payload,
                ),
                bob_port,
            )
        assert await eventually(lambda: answered.stats()["latched"] == 1, 2)
        assert answered.stats()["remote"] == ("127.0.0.1", nat.port)
        assert await eventually(lambda: any(p.ssrc == bob_ssrc for p in nat.packets), 2)
        before = answered.stats()
        dropped = stat(answered, "dropped_foreign")
        for i in range(4):
            stranger.send(
                RtpPacket(
                    payload_type=0,
                    sequence=1000 + i,
                    timestamp=160 * i,
                    ssrc=alice_sender.ssrc ^ 0xFFFF,
                    payload=payload,
                ),
                bob_port,
            )
        assert await eventually(lambda: stat(answered, "dropped_foreign") == dropped + 4, 2)
        await settle(0.1)
        after = answered.stats()
        assert after["latched"] == 1 and after["remote"] == ("127.0.0.1", nat.port)
        assert after["packets_received"] == before["packets_received"]
        assert stranger.packets == []
        await hang_up(call, answered)
    finally:
        for sink in (nat, stranger):
            d = sink.close()
            if d is not None:
                await d
