"""WAV reading/writing, plus the AudioFrame and tone helpers it works with."""

from __future__ import annotations

import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from sipd.errors import MediaValueError, SipdError, WavFormatError
from sipd.media.frame import AudioFrame, split_frames
from sipd.media.tones import ToneGenerator, dominant_frequency, tone
from sipd.media.wav import WavWriter, read_wav, resample


def _write_pcm(path: Path, raw: bytes, *, rate: int, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def _riff(fmt_body: bytes, data: bytes, data_size: int | None = None) -> bytes:
    size = len(data) if data_size is None else data_size
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    chunks += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk with pad byte
    chunks += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _float_fmt(rate: int, channels: int = 1) -> bytes:
    return struct.pack("<HHIIHH", 3, channels, rate, rate * 4 * channels, 4 * channels, 32)


# --- reading -------------------------------------------------------------------


def test_8khz_mono_16bit_is_read_unchanged(tmp_path: Path) -> None:
    """The native call format comes back sample for sample."""
    pcm = np.random.default_rng(1).integers(-32768, 32768, 1000).astype(np.int16)
    path = _write_pcm(tmp_path / "a.wav", pcm.astype("<i2").tobytes(), rate=8000)
    out = read_wav(path)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, pcm)


def test_16khz_is_resampled_to_8khz_keeping_the_tone(tmp_path: Path) -> None:
    """A 1 kHz tone at 16 kHz becomes half as many samples, still at 1 kHz."""
    pcm = tone(1000, 1.0, sample_rate=16000)
    path = _write_pcm(tmp_path / "b.wav", pcm.tobytes(), rate=16000)
    out = read_wav(path)
    assert len(out) == 8000
    assert dominant_frequency(out, 8000) == pytest.approx(1000, abs=3)
    assert 0.25 * 32767 < np.abs(out[100:-100]).max() < 0.35 * 32767


def test_44k1_stereo_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    """Stereo channels are averaged: opposite channels cancel, equal ones stay."""
    left = tone(440, 0.5, sample_rate=44100)
    stereo = np.stack([left, left], axis=1).reshape(-1)
    path = _write_pcm(tmp_path / "c.wav", stereo.tobytes(), rate=44100, channels=2)
    out = read_wav(path)
    assert len(out) == 4000
    assert dominant_frequency(out) == pytest.approx(440, abs=3)

    cancel = np.stack([left, -left], axis=1).reshape(-1)
    path = _write_pcm(tmp_path / "d.wav", cancel.tobytes(), rate=44100, channels=2)
    assert np.abs(read_wav(path)).max() <= 1


def test_downsampling_filters_what_would_alias(tmp_path: Path) -> None:
    """A 6 kHz component at 48 kHz is removed, not folded to 2 kHz."""
    mix = tone(1000, 1.0, 48000, 0.3).astype(np.int32) + tone(6000, 1.0, 48000, 0.3)
    out = read_wav(_write_pcm(tmp_path / "e.wav", mix.astype(np.int16).tobytes(), rate=48000))
    spectrum = np.abs(np.fft.rfft(out[400:-400] * np.hanning(len(out) - 800)))
    freqs = np.fft.rfftfreq(len(out) - 800, 1 / 8000)
    at_1k = spectrum[np.argmin(np.abs(freqs - 1000))]
    at_2k = spectrum[np.argmin(np.abs(freqs - 2000))]
    assert at_2k < at_1k / 100


def test_8bit_unsigned_is_centred_and_scaled(tmp_path: Path) -> None:
    """8-bit WAV is unsigned with 128 as zero."""
    path = _write_pcm(tmp_path / "f.wav", bytes([0, 128, 255]), rate=8000, width=1)
    np.testing.assert_array_equal(read_wav(path), [-32768, 0, 32512])


def test_24_and_32bit_integers_keep_their_top_16_bits(tmp_path: Path) -> None:
    """Wider integer PCM is scaled down to int16."""
    raw24 = b"".join(v.to_bytes(3, "little", signed=True) for v in (0x7FFF00, -0x800000, 256))
    np.testing.assert_array_equal(
        read_wav(_write_pcm(tmp_path / "g.wav", raw24, rate=8000, width=3)), [32767, -32768, 1]
    )
    raw32 = np.array([0x7FFF0000, -0x80000000, 65536 * 5], dtype="<i4").tobytes()
    np.testing.assert_array_equal(
        read_wav(_write_pcm(tmp_path / "h.wav", raw32, rate=8000, width=4)), [32767, -32768, 5]
    )


def test_ieee_float_is_read_without_the_wave_module(tmp_path: Path) -> None:
    """Float WAV (format 3), which the stdlib refuses, is scaled and clipped."""
    data = np.array([0.5, -1.0, 2.0, 0.0], dtype="<f4").tobytes()
    path = tmp_path / "i.wav"
    path.write_bytes(_riff(_float_fmt(8000), data))
    with pytest.raises(wave.Error), wave.open(str(path)):
        pass
    np.testing.assert_array_equal(read_wav(path), [16384, -32767, 32767, 0])


def test_extensible_float_stereo_is_read(tmp_path: Path) -> None:
    """WAVE_FORMAT_EXTENSIBLE takes the real format from its sub-format GUID."""
    fmt = struct.pack("<HHIIHH", 0xFFFE, 2, 8000, 64000, 8, 32)
    fmt += struct.pack("<HHI", 22, 32, 3) + struct.pack("<H", 3) + bytes(14)
    data = np.array([0.25, 0.75, -0.5, -0.5], dtype="<f4").tobytes()
    path = tmp_path / "j.wav"
    path.write_bytes(_riff(fmt, data))
    np.testing.assert_array_equal(read_wav(path), [16384, -16384])


def test_unfinalised_data_size_reads_to_the_end(tmp_path: Path) -> None:
    """A recording whose header was never patched still yields its samples."""
    data = np.array([1, 2, 3], dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    path = tmp_path / "k.wav"
    path.write_bytes(_riff(fmt, data, data_size=0xFFFFFFFF))
    np.testing.assert_array_equal(read_wav(path), [1, 2, 3])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"hello, not audio", "not a WAV file"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt \x04\x00\x00\x00\x01\x00\x01\x00", "truncated fmt"),
        (_riff(struct.pack("<HHIIHH", 6, 1, 8000, 8000, 1, 8), b"\xd5"), "0x0006"),
        (_riff(struct.pack("<HHIIHH", 1, 0, 8000, 0, 0, 16), b""), "0 channels"),
    ],
)
def test_unreadable_files_name_the_path_and_the_problem(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """WavFormatError says which file and what is wrong with it."""
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(WavFormatError, match=problem) as info:
        read_wav(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, SipdError)


def test_a_missing_file_is_a_wav_format_error(tmp_path: Path) -> None:
    """An OS error while opening becomes a WavFormatError naming the file."""
    with pytest.raises(WavFormatError, match=r"missing\.wav"):
        read_wav(tmp_path / "missing.wav")


def test_resample_identity_and_length() -> None:
    """Same-rate resampling is a no-op; other rates scale the length."""
    x = np.arange(100, dtype=np.float64)
    np.testing.assert_array_equal(resample(x, 8000, 8000), x)
    assert len(resample(x, 8000, 16000)) == 200
    # soxr's band-limited filter: away from the edges a ramp stays a ramp.
    np.testing.assert_allclose(resample(x, 8000, 16000)[80:85], [40, 40.5, 41, 41.5, 42], atol=0.05)


# --- writing -------------------------------------------------------------------


def test_writer_produces_a_wav_the_stdlib_reads(tmp_path: Path) -> None:
    """Frames appended then closed give a mono 16-bit 8 kHz file with all samples."""
    gen = ToneGenerator(700)
    frames = [gen.next_frame() for _ in range(10)]
    path = tmp_path / "out.wav"
    with WavWriter(path) as writer:
        for f in frames:
            writer.write(f)
        writer.write(np.array([1, 2, 3], dtype=np.int16))
    assert writer.closed
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == 1603
        raw = w.readframes(1603)
    expected = np.concatenate([f.samples for f in frames] + [np.array([1, 2, 3], np.int16)])
    np.testing.assert_array_equal(np.frombuffer(raw, "<i2"), expected)
    assert dominant_frequency(read_wav(path)) == pytest.approx(700, abs=3)


def test_writer_file_is_valid_before_close(tmp_path: Path) -> None:
    """After each write the header already describes the data written so far."""
    path = tmp_path / "partial.wav"
    writer = WavWriter(path)
    writer.write(AudioFrame(np.full(160, 9, dtype=np.int16)))
    with wave.open(str(path)) as w:
        assert w.getnframes() == 160
    writer.close()
    writer.close()
    with pytest.raises(WavFormatError, match="closed"):
        writer.write(AudioFrame.silence())


def test_writer_file_is_a_valid_empty_wav_from_the_start(tmp_path: Path) -> None:
    """Before any frame the file is already a WAV with no samples, never 0 bytes."""
    path = tmp_path / "empty.wav"
    writer = WavWriter(path)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
            1,
            2,
            8000,
            0,
        )
    writer.close()
    assert len(read_wav(path)) == 0


def test_an_unclosed_writer_collected_late_prints_nothing(tmp_path: Path) -> None:
    """A writer dropped without close (a program stopped mid-call) leaves a valid file
    and no ``__del__`` complaint, whatever order its objects are collected in."""
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from sipd.media.wav import WavWriter\n"
        "w = WavWriter(sys.argv[1])\n"
        "w.write(np.full(800, 5, dtype=np.int16))\n"
        "cycle = [w]  # collected with everything else at exit, in no set order\n"
        "cycle.append(cycle)\n"
    )
    path = tmp_path / "late.wav"
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(read_wav(path)) == 800


def test_writer_refuses_frames_at_another_rate(tmp_path: Path) -> None:
    """A 16 kHz frame cannot be appended to an 8 kHz file."""
    with WavWriter(tmp_path / "x.wav") as writer, pytest.raises(MediaValueError, match="16000"):
        writer.write(AudioFrame(np.zeros(320, np.int16), sample_rate=16000))


# --- AudioFrame ----------------------------------------------------------------


def test_frame_converts_lists_and_clips_wider_ints() -> None:
    """Plain ints and int32 become int16, saturating at the range ends."""
    assert AudioFrame([1, -2, 3]).samples.dtype == np.int16
    wide = AudioFrame(np.array([70000, -70000, 12], dtype=np.int32))
    np.testing.assert_array_equal(wide.samples, [32767, -32768, 12])
    assert AudioFrame([]).samples.dtype == np.int16


def test_frame_keeps_an_int16_array_without_copying() -> None:
    """An int16 array is used as is."""
    pcm = np.zeros(160, np.int16)
    assert AudioFrame(pcm).samples is pcm


def test_frame_refuses_floats_and_multichannel() -> None:
    """Float and 2-D samples are ambiguous or not mono: rejected with a SipdError."""
    with pytest.raises(MediaValueError, match="float"):
        AudioFrame(np.zeros(160, np.float32))
    with pytest.raises(MediaValueError, match="mono"):
        AudioFrame(np.zeros((160, 2), np.int16))
    with pytest.raises(MediaValueError):
        AudioFrame(np.zeros(160, np.int16), sample_rate=0)


def test_frame_duration_silence_and_equality() -> None:
    """160 samples at 8 kHz last 20 ms; frames compare by value."""
    frame = AudioFrame.silence()
    assert frame.duration == pytest.approx(0.020)
    assert len(frame) == 160
    assert frame == AudioFrame(np.zeros(160, np.int16))
    assert frame != AudioFrame(np.zeros(160, np.int16), timestamp=5)
    assert AudioFrame.silence(320, sample_rate=16000).duration == pytest.approx(0.020)


def test_split_frames_pads_the_last_frame() -> None:
    """Samples are cut into 160-sample frames with a silence-padded tail."""
    frames = list(split_frames(np.arange(1, 401, dtype=np.int16)))
    assert [len(f) for f in frames] == [160, 160, 160]
    assert frames[2].samples[79] == 400
    assert not frames[2].samples[80:].any()


# --- tones ---------------------------------------------------------------------


def test_tone_has_the_requested_length_and_amplitude() -> None:
    """tone() gives duration * rate int16 samples peaking at amplitude * full scale."""
    pcm = tone(1000, 0.5, amplitude=0.5)
    assert pcm.dtype == np.int16 and len(pcm) == 4000
    assert abs(int(np.abs(pcm).max()) - 16384) <= 1


def test_generator_frames_join_without_a_phase_jump() -> None:
    """Consecutive frames equal one long tone, sample for sample (within rounding)."""
    gen = ToneGenerator(1234)
    joined = np.concatenate([gen.next_frame().samples for _ in range(50)])
    reference = tone(1234, 1.0)
    assert np.abs(joined.astype(np.int32) - reference).max() <= 1


def test_dominant_frequency_picks_the_strongest_of_a_mix() -> None:
    """The loudest tone wins over weaker tones and noise."""
    rng = np.random.default_rng(3)
    mix = (
        tone(440, 1.0, amplitude=0.4).astype(np.int32)
        + tone(1800, 1.0, amplitude=0.2)
        + tone(3000, 1.0, amplitude=0.1)
        + rng.normal(0, 800, 8000).astype(np.int32)
    )
    assert dominant_frequency(mix.astype(np.int16)) == pytest.approx(440, abs=2)
    louder_high = tone(440, 0.2, amplitude=0.1).astype(np.int32) + tone(2500, 0.2, amplitude=0.3)
    assert dominant_frequency(louder_high) == pytest.approx(2500, abs=3)


def test_dominant_frequency_survives_g711_and_other_rates() -> None:
    """A tone through µ-law, and a 16 kHz tone, still measure right; silence is 0 Hz."""
    from sipd.media import g711

    heard = g711.decode("PCMU", g711.encode("PCMU", tone(697, 0.1)))
    assert dominant_frequency(heard) == pytest.approx(697, abs=5)
    assert dominant_frequency(tone(5000, 0.25, 16000), 16000) == pytest.approx(5000, abs=5)
    assert dominant_frequency(np.zeros(160, np.int16)) == 0.0
