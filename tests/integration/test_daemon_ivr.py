"""The ``ivr`` daemon end to end: prompt, DTMF menu, a message after the tone.

The prompts are WAVs generated in tmp_path at frequencies nothing else
uses (prompt 600 Hz, digit-1 prompt 1200 Hz; the ivr's beep is 1000 Hz).
A SimplePeer calls the daemon, listens with the test's own FFT until it
hears each part, presses 1, speaks a 440 Hz tone after the beep and ends
the message with ``#``. The daemon must leave a WAV in ``record_dir``
dominated by 440 Hz and a JSON sidecar naming the caller, the start time,
the duration and the digits.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest_twisted
from numpy.typing import NDArray

from sipd import Call
from sipd.media.tones import ToneGenerator, tone
from sipd.media.wav import WavWriter, read_wav
from tests.conftest import PeerFactory, within
from tests.integration.test_daemon import start_daemon, write_config
from tests.integration.test_daemon_echo_audio import spectrum_peak

PROMPT_HZ = 600.0
DIGIT1_HZ = 1200.0
BEEP_HZ = 1000.0
VOICE_HZ = 440.0
VOICE_FRAMES = 75  # 1.5 s
#: Five 20 ms frames: 10 Hz FFT resolution, enough to tell the tones apart.
WINDOW = 5
LOUD_RMS = 1000.0


def _write_tone(path: Path, freq: float, seconds: float) -> None:
    with WavWriter(path) as wav:
        wav.write(tone(freq, seconds))


class Listener:
    """Keeps everything the call receives and tells which tone is playing now."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.frames: list[NDArray[np.int16]] = []

    async def next_window(self) -> tuple[float, float]:
        """(dominant Hz, RMS) of the next WINDOW received frames."""
        window = []
        for _ in range(WINDOW):
            frame = await within(self.call.recv_audio(), 3)
            assert frame is not None, "the call ended while the test was listening"
            self.frames.append(frame.samples)
            window.append(frame.samples)
        samples = np.concatenate(window).astype(np.float64)
        rms = float(np.sqrt((samples**2).mean()))
        peak, _ = spectrum_peak(np.concatenate(window))
        return peak, rms

    async def until(self, freq: float, timeout_windows: int = 60) -> None:
        """Listen until ``freq`` is the loud dominant tone."""
        seen = []
        for _ in range(timeout_windows):
            peak, rms = await self.next_window()
            seen.append(round(peak))
            if rms > LOUD_RMS and abs(peak - freq) <= 15:
                return
        raise AssertionError(f"never heard {freq} Hz; heard {seen}")

    async def until_quiet(self, timeout_windows: int = 60) -> None:
        for _ in range(timeout_windows):
            _, rms = await self.next_window()
            if rms < LOUD_RMS / 10:
                return
        raise AssertionError("the far end never went quiet")


@pytest_twisted.ensureDeferred
async def test_a_caller_hears_the_menu_and_leaves_a_message(
    tmp_path: Path, peers: PeerFactory
) -> None:
    """Prompt at 600 Hz, '1' plays 1200 Hz, then the 440 Hz message is saved with a sidecar."""
    _write_tone(tmp_path / "prompt.wav", PROMPT_HZ, 1.0)
    _write_tone(tmp_path / "one.wav", DIGIT1_HZ, 0.6)
    config = tmp_path / "sipd.yaml"
    write_config(
        config,
        handler="ivr",
        settings={
            "prompt": "prompt.wav",  # relative to the config's folder
            "digits": {"1": "one.wav"},
            "digit_timeout": 5,
            "record_dir": "messages",
            "max_message": 6,
        },
    )
    record_dir = tmp_path / "messages"
    daemon = start_daemon(tmp_path, config)
    try:
        await daemon.until_ready()
        caller = await peers("carol")
        call = await within(caller.call(daemon.sip_uri), 5)
        await within(call.wait_for_answer(), 5)
        listener = Listener(call)

        await listener.until(PROMPT_HZ)
        await within(call.send_dtmf("1"), 5)
        await listener.until(DIGIT1_HZ)
        await listener.until(BEEP_HZ)
        await listener.until_quiet()

        voice = ToneGenerator(VOICE_HZ)
        for _ in range(VOICE_FRAMES):
            await within(call.send_audio(voice.next_frame()), 2)
        # The ivr acts on the digit's first RFC 4733 packet, saves the message and
        # hangs up before the digit's end packets: the digit was delivered, so
        # send_dtmf still succeeds.
        pound = call.send_dtmf("#")
        await within(call.wait_for_end(), 10)
        await within(pound, 5)

        # What the caller heard, as one recording: the prompt is its first loud tone.
        heard = np.concatenate(listener.frames)
        blocks = heard[: len(heard) // 160 * 160].reshape(-1, 160).astype(np.float64)
        first_loud = int(np.argmax(np.sqrt((blocks**2).mean(axis=1)) > LOUD_RMS))
        peak, share = spectrum_peak(heard[first_loud * 160 : (first_loud + 25) * 160])
        assert abs(peak - PROMPT_HZ) <= 3 and share >= 0.9, (peak, share)

        await daemon.until_log(r"ivr message from sip:carol@127\.0\.0\.1:\d+ saved to ")
        wavs = sorted(record_dir.glob("*.wav"))
        sidecars = sorted(record_dir.glob("*.json"))
        assert len(wavs) == 1 and len(sidecars) == 1, (list(record_dir.iterdir()), daemon.report())
        assert wavs[0].stem == sidecars[0].stem

        message = read_wav(wavs[0])
        peak, share = spectrum_peak(message)
        assert abs(peak - VOICE_HZ) <= 3, f"the message is dominated by {peak:.1f} Hz"
        assert share >= 0.8, f"only {share:.0%} of the message's power is near 440 Hz"
        seconds = len(message) / 8000
        assert VOICE_FRAMES * 0.02 * 0.9 <= seconds <= VOICE_FRAMES * 0.02 + 1.5, seconds

        meta = json.loads(sidecars[0].read_text())
        assert meta["caller"] == caller.uri, meta
        assert meta["call_id"] == call.sip_call_id, meta
        assert meta["digits"] == "1#", meta
        assert meta["file"] == wavs[0].name, meta
        started = datetime.datetime.fromisoformat(meta["started"].replace("Z", "+00:00"))
        age = datetime.datetime.now(datetime.UTC) - started
        assert datetime.timedelta(0) <= age <= datetime.timedelta(seconds=60), meta
        assert abs(meta["duration"] - seconds) <= 0.5, (meta, seconds)
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.report()
