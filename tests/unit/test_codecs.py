"""The codec registry (PCMU, PCMA, G.722, Opus), the streaming resampler, and a
MediaStream running each codec: payload sizes, RTP timestamp steps, rates.

Round trips go through the real bindings (``G722``, libopus via
``opuslib_next``) and are judged by the frequency and power of what comes
back, not by exact samples (lossy codecs).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.typing import NDArray

from sipd.errors import MediaValueError
from sipd.media.codecs import (
    CODEC_NAMES,
    G722,
    OPUS,
    PCMA,
    PCMU,
    AudioCodec,
    codec_by_name,
    codec_names,
    find_codec,
)
from sipd.media.frame import AudioFrame
from sipd.media.resample import StreamResampler, resample_once
from sipd.media.rtp import RtpPacket
from sipd.media.stream import Addr, MediaStream
from sipd.media.tones import ToneGenerator, dominant_frequency, tone

REMOTE: Addr = ("192.0.2.10", 40000)


def _band_share(x: NDArray[np.int16], rate: int, freq: float, width: float = 200) -> float:
    y = x.astype(np.float64) - x.mean()
    power = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / rate)
    return float(power[np.abs(freqs - freq) < width].sum() / power[freqs > 50].sum())


def _round_trip(codec: AudioCodec, samples: NDArray[np.int16], rate: int) -> NDArray[np.int16]:
    """Encode 20 ms frames and decode them with a separate state (two ends of a call)."""
    sender, receiver = codec.new_state(rate), codec.new_state(rate)
    n = rate // 50
    out = [receiver.decode(sender.encode(samples[i : i + n])) for i in range(0, len(samples), n)]
    return np.concatenate(out)


# -- registry --------------------------------------------------------------------------------
def test_registry_names_rates_and_steps() -> None:
    assert CODEC_NAMES == ("PCMU", "PCMA", "G722", "opus")
    table = {c.name: (c.payload_type, c.clock_rate, c.channels, c.audio_rate) for c in CODECS()}
    assert table == {
        "PCMU": (0, 8000, 1, 8000),
        "PCMA": (8, 8000, 1, 8000),
        "G722": (9, 8000, 1, 16000),  # RFC 3551: 16 kHz audio, 8000 Hz RTP clock
        "opus": (111, 48000, 2, 48000),  # RFC 7587: always opus/48000/2
    }
    assert [c.timestamp_step for c in CODECS()] == [160, 160, 160, 960]
    assert OPUS.fmtp is not None and "useinbandfec=1" in OPUS.fmtp
    assert "maxplaybackrate=48000" in OPUS.fmtp


def CODECS() -> list[AudioCodec]:
    return [PCMU, PCMA, G722, OPUS]


def test_names_are_case_insensitive_and_unknown_ones_list_the_choices() -> None:
    assert codec_by_name("OPUS") is OPUS and codec_by_name("g722") is G722
    assert find_codec("G722", 8000) is G722 and find_codec("G722", 16000) is None
    assert find_codec("opus", 48000) is OPUS
    with pytest.raises(MediaValueError, match="PCMU, PCMA, G722, opus"):
        codec_by_name("G729")
    with pytest.raises(MediaValueError, match="at least one"):
        codec_names([])
    assert codec_names(["Opus", "pcma"]) == ["Opus", "pcma"]


def test_opus_runs_at_the_applications_rate_other_codecs_at_their_own() -> None:
    assert OPUS.pcm_rate(16000) == 16000 and OPUS.pcm_rate(48000) == 48000
    assert G722.pcm_rate(8000) == 16000 and PCMU.pcm_rate(16000) == 8000
    with pytest.raises(MediaValueError, match="cannot code 8000 Hz"):
        G722.new_state(8000)


# -- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_g711_state_matches_the_g711_module(codec: AudioCodec) -> None:
    from sipd.media import g711

    samples = tone(440, 0.02)
    state = codec.new_state()
    payload = state.encode(samples)
    assert payload == g711.encode(codec.name, samples) and len(payload) == 160
    assert np.array_equal(state.decode(payload), g711.decode(codec.name, payload))


def test_g722_frame_is_160_bytes_for_320_samples_and_keeps_a_tone() -> None:
    samples = tone(1000, 1.0, 16000)
    state = G722.new_state()
    assert len(state.encode(samples[:320])) == 160  # 64 kbit/s: 4 bits per 16 kHz sample
    back = _round_trip(G722, samples, 16000)
    assert len(back) == len(samples)
    assert dominant_frequency(back, 16000) == pytest.approx(1000, abs=5)


def test_g722_carries_5khz_which_pcmu_cannot() -> None:
    samples = tone(5000, 1.0, 16000)
    wide = _round_trip(G722, samples, 16000)
    assert dominant_frequency(wide, 16000) == pytest.approx(5000, abs=5)
    assert _band_share(wide, 16000, 5000) > 0.9
    # PCMU: through 8 kHz (soxr removes what would alias), µ-law, and back to 16 kHz.
    narrow_in = np.rint(resample_once(samples, 16000, 8000)).astype(np.int16)
    narrow = _round_trip(PCMU, narrow_in, 8000)
    back = np.rint(resample_once(narrow, 8000, 16000)).astype(np.int16)
    assert np.sqrt(np.mean(back.astype(float) ** 2)) < 0.01 * np.sqrt(
        np.mean(samples.astype(float) ** 2)
    )


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_opus_round_trip_keeps_a_tone_at_each_rate(rate: int) -> None:
    freq = 700 if rate == 8000 else 5000
    samples = tone(freq, 1.0, rate)
    state = OPUS.new_state(rate)
    assert 0 < len(state.encode(samples[: rate // 50])) < 400
    back = _round_trip(OPUS, samples, rate)
    assert len(back) == len(samples)  # 20 ms decodes to 20 ms
    assert dominant_frequency(back[rate // 10 :], rate) == pytest.approx(freq, abs=5)
    assert _band_share(back[rate // 10 :], rate, freq) > 0.8


def test_opus_refuses_garbage_with_an_error() -> None:
    state = OPUS.new_state(16000)
    with pytest.raises(Exception, match=r"(?i)opus|corrupt|invalid"):
        state.decode(b"\xff" * 3)


# -- streaming resampler ---------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b"), [(8000, 16000), (16000, 8000), (16000, 48000), (48000, 8000)])
def test_stream_resampler_joins_20ms_chunks_without_edges(a: int, b: int) -> None:
    """Chunk by chunk equals resampling the whole signal at once (5 ms later)."""
    x = tone(1000, 1.0, a)
    resampler = StreamResampler(a, b)
    chunks = [resampler(x[i : i + a // 50]) for i in range(0, len(x), a // 50)]
    assert {len(c) for c in chunks} == {b // 50}  # every chunk gives exactly 20 ms
    y = np.concatenate(chunks).astype(np.float64)
    whole = resample_once(x, a, b)
    delay = b * 5 // 1000
    err = y[delay:] - whole[: len(y) - delay]
    snr = 10 * np.log10(np.mean(whole**2) / np.mean(err[b // 50 :] ** 2))
    assert snr > 50  # no clicks at the 50 chunk joins


# -- MediaStream with each codec ------------------------------------------------------------
@dataclass
class Wire:
    now: float = 1000.0
    rtp: list[RtpPacket] = field(default_factory=list)

    def send_rtp(self, data: bytes, addr: Addr) -> None:
        self.rtp.append(RtpPacket.parse(data))

    def send_rtcp(self, data: bytes, addr: Addr) -> None:
        pass

    def clock(self) -> float:
        return self.now


def _stream(wire: Wire, codec: str, pt: int, rate: int) -> MediaStream:
    return MediaStream(
        codec=codec,
        payload_type=pt,
        remote=REMOTE,
        send_rtp=wire.send_rtp,
        send_rtcp=wire.send_rtcp,
        now=wire.clock,
        dtmf_payload_type=101,
        sample_rate=rate,
    )


@pytest.mark.parametrize(
    ("codec", "pt", "step", "size"),
    [("PCMU", 0, 160, 160), ("PCMA", 8, 160, 160), ("G722", 9, 160, 160), ("opus", 111, 960, None)],
)
def test_timestamp_step_per_packet_comes_from_the_codec(
    codec: str, pt: int, step: int, size: int | None
) -> None:
    wire = Wire()
    stream = _stream(wire, codec, pt, 16000)
    gen = ToneGenerator(1000, 16000)
    for _ in range(5):
        stream.queue_audio(gen.next_frame(320))
        stream.tick()
    stream.tick()  # an idle slot: silence, same step
    stamps = [p.timestamp for p in wire.rtp]
    assert [b - a for a, b in itertools.pairwise(stamps)] == [step] * 5
    assert {p.payload_type for p in wire.rtp} == {pt}
    if size is not None:
        assert {len(p.payload) for p in wire.rtp} == {size}
    assert stream.clock_rate == (48000 if codec == "opus" else 8000)
    assert stream.dtmf_sender.step == step  # RFC 4733: events at the codec's clock


def test_paused_slots_advance_the_clock_by_the_codec_step() -> None:
    wire = Wire()
    stream = _stream(wire, "opus", 111, 16000)
    stream.silence_when_idle = False
    stream.queue_audio(AudioFrame.silence(320, 16000))
    stream.tick()
    stream.tick()
    stream.tick()  # two idle slots send nothing
    stream.queue_audio(AudioFrame.silence(320, 16000))
    stream.tick()
    first, second = wire.rtp
    assert second.timestamp - first.timestamp == 3 * 960 and second.marker


@pytest.mark.parametrize(("codec", "pt"), [("G722", 9), ("opus", 111), ("PCMU", 0)])
def test_a_stream_pair_carries_a_tone_at_16khz(codec: str, pt: int) -> None:
    """What one stream sends, another decodes into 16 kHz frames with the same tone."""
    wire = Wire()
    sender = _stream(wire, codec, pt, 16000)
    receiver = _stream(Wire(), codec, pt, 16000)
    heard: list[AudioFrame] = []
    receiver.frame_listeners.append(heard.append)
    gen = ToneGenerator(1200, 16000)
    for _ in range(50):
        sender.queue_audio(gen.next_frame(320))
        sender.tick()
    for packet in wire.rtp:
        receiver.rtp_received(bytes(packet), REMOTE)
    receiver.close()
    assert len(heard) == 50 and {f.sample_rate for f in heard} == {16000}
    assert {len(f) for f in heard} == {320}
    pcm = np.concatenate([f.samples for f in heard])
    assert dominant_frequency(pcm, 16000) == pytest.approx(1200, abs=5)


def test_a_lost_opus_packet_is_rebuilt_from_the_next_ones_fec() -> None:
    """useinbandfec=1 is not just said: one lost packet comes back from its successor."""
    wire = Wire()
    sender = _stream(wire, "opus", 111, 16000)
    receiver = _stream(Wire(), "opus", 111, 16000)
    heard: list[AudioFrame] = []
    receiver.frame_listeners.append(heard.append)
    gen = ToneGenerator(1000, 16000)
    for _ in range(30):
        sender.queue_audio(gen.next_frame(320))
        sender.tick()
    lost = wire.rtp[20]
    for packet in wire.rtp:
        if packet is not lost:
            receiver.rtp_received(bytes(packet), REMOTE)
    receiver.close()
    assert receiver.current_stats().recovered == 1
    assert [f.sequence for f in heard] == [p.sequence for p in wire.rtp]
    rebuilt = next(f for f in heard if f.sequence == lost.sequence)
    assert rebuilt.timestamp == lost.timestamp and len(rebuilt) == 320
    assert np.sqrt(np.mean(rebuilt.samples.astype(float) ** 2)) > 2000  # the tone, not silence
    assert dominant_frequency(rebuilt.samples, 16000) == pytest.approx(1000, abs=60)


def test_g711_does_not_try_to_recover() -> None:
    wire = Wire()
    sender = _stream(wire, "PCMU", 0, 8000)
    receiver = _stream(Wire(), "PCMU", 0, 8000)
    heard: list[AudioFrame] = []
    receiver.frame_listeners.append(heard.append)
    for _ in range(10):
        sender.tick()
    for i, packet in enumerate(wire.rtp):
        if i != 5:
            receiver.rtp_received(bytes(packet), REMOTE)
    receiver.close()
    assert len(heard) == 9 and receiver.current_stats().recovered == 0


def test_jitter_is_reported_in_ms_at_the_codecs_clock() -> None:
    """RFC 3550 jitter counts timestamp units: 48 per ms for Opus, 8 for G.711."""
    wire = Wire()
    receiver = _stream(wire, "opus", 111, 16000)
    state = OPUS.new_state(16000)
    payload = state.encode(np.zeros(320, dtype=np.int16))
    for i in range(40):
        wire.now = 1000.0 + 0.020 * i + (0.004 if i % 2 else 0.0)  # every other one 4 ms late
        packet = RtpPacket(payload_type=111, sequence=i, timestamp=960 * i, ssrc=7, payload=payload)
        receiver.rtp_received(bytes(packet), REMOTE)
    jitter_ms = receiver.current_stats().jitter_ms
    assert 1.0 < jitter_ms < 4.0  # ~2 ms; /8 instead of /48 would say ~12 ms


def test_frames_at_another_rate_are_resampled_to_the_streams() -> None:
    wire = Wire()
    stream = _stream(wire, "PCMU", 0, 16000)
    gen = ToneGenerator(600, 8000)
    for _ in range(25):
        stream.queue_audio(gen.next_frame(160))  # 8 kHz frames into a 16 kHz stream
        stream.tick()
    from sipd.media import g711

    pcm = np.concatenate([g711.decode("PCMU", p.payload) for p in wire.rtp])
    assert dominant_frequency(pcm[400:], 8000) == pytest.approx(600, abs=5)


# -- conference and bridge at other rates ----------------------------------------------------
class _Member:
    """A stand-in call (as in test_mixer.py) whose frames are at ``rate``."""

    def __init__(self) -> None:
        from twisted.internet import defer

        from sipd.media.fanout import AudioSubscription

        self.sub = AudioSubscription()
        self.sent: list[AudioFrame] = []
        self.is_ended = False
        self._end: defer.Deferred[None] = defer.Deferred()

    def subscribe_to_audio(self):  # type: ignore[no-untyped-def]
        return self.sub

    def send_audio(self, frame: AudioFrame):  # type: ignore[no-untyped-def]
        from twisted.internet import defer

        self.sent.append(frame)
        return defer.succeed(None)

    def wait_for_end(self):  # type: ignore[no-untyped-def]
        return self._end


def test_a_wideband_conference_mixes_members_at_other_rates() -> None:
    """A 16 kHz conference: an 8 kHz member's frames are resampled in, 5 kHz survives."""
    from twisted.internet import task

    from sipd.media.mixer import Conference

    clock = task.Clock()
    conf = Conference(clock=clock, sample_rate=16000)
    wide, narrow = _Member(), _Member()
    conf.add(wide)
    conf.add(narrow)
    g_wide, g_narrow = ToneGenerator(5000, 16000), ToneGenerator(700, 8000)
    for _ in range(25):
        wide.sub.push(g_wide.next_frame(320))
        narrow.sub.push(g_narrow.next_frame(160))
        clock.advance(0.02)
    to_narrow = np.concatenate([f.samples for f in narrow.sent])
    to_wide = np.concatenate([f.samples for f in wide.sent])
    assert {f.sample_rate for f in narrow.sent + wide.sent} == {16000}
    assert {len(f) for f in narrow.sent + wide.sent} == {320}
    assert dominant_frequency(to_narrow, 16000) == pytest.approx(5000, abs=5)
    assert dominant_frequency(to_wide[320:], 16000) == pytest.approx(700, abs=5)
    conf.close()
