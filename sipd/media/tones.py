"""Test tones and a frequency detector.

Why here: end-to-end tests prove that audio really crossed a call by sending
a sine of a known frequency and checking what the other side heard (or
recorded to WAV). G.711 and jitter change the waveform but not its dominant
frequency, so that is the robust thing to compare.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sipd.errors import MediaValueError
from sipd.media.frame import FRAME_SAMPLES, SAMPLE_RATE, AudioFrame

__all__ = [
    "ToneGenerator",
    "dominant_frequency",
    "tone",
]


def _check(freq_hz: float, sample_rate: int, amplitude: float) -> None:
    if sample_rate <= 0:
        raise MediaValueError(f"sample rate must be positive, got {sample_rate}")
    if not 0 <= freq_hz <= sample_rate / 2:
        raise MediaValueError(
            f"a {freq_hz} Hz tone cannot be represented at {sample_rate} Hz "
            f"(Nyquist {sample_rate / 2} Hz)"
        )
    if not 0.0 <= amplitude <= 1.0:
        raise MediaValueError(f"amplitude is a fraction of full scale (0..1), got {amplitude}")


def tone(
    freq_hz: float,
    duration_s: float,
    sample_rate: int = SAMPLE_RATE,
    amplitude: float = 0.3,
) -> NDArray[np.int16]:
    """A sine of ``freq_hz`` lasting ``duration_s``, as int16 at ``amplitude`` of full scale."""
    _check(freq_hz, sample_rate, amplitude)
    n = round(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    return np.rint(amplitude * 32767 * np.sin(2 * math.pi * freq_hz * t)).astype(np.int16)


class ToneGenerator:
    """A sine source that yields frames with no phase jump between them.

    The phase is carried from one frame to the next, so a stream of 20 ms
    frames is one continuous sine (no clicks at frame edges, and a clean
    spectrum for :func:`dominant_frequency`).
    """

    def __init__(
        self, freq_hz: float, sample_rate: int = SAMPLE_RATE, amplitude: float = 0.3
    ) -> None:
        _check(freq_hz, sample_rate, amplitude)
        self.freq_hz = freq_hz
        self.sample_rate = sample_rate
        self.amplitude = amplitude
        self._phase = 0.0

    def next_frame(self, n: int = FRAME_SAMPLES) -> AudioFrame:
        """The next ``n`` samples of the tone."""
        step = 2 * math.pi * self.freq_hz / self.sample_rate
        phases = self._phase + step * np.arange(n)
        self._phase = (self._phase + step * n) % (2 * math.pi)
        pcm = np.rint(self.amplitude * 32767 * np.sin(phases)).astype(np.int16)
        return AudioFrame(pcm, self.sample_rate)


def dominant_frequency(samples: NDArray[Any], sample_rate: int = SAMPLE_RATE) -> float:
    """Frequency (Hz) of the strongest component, or 0.0 for silence.

    The signal's mean is removed, a Hann window limits leakage, the FFT is
    zero-padded to at least 8192 points and the peak is refined by parabolic
    interpolation of the log magnitudes, which is accurate to a few Hz on
    tones of 0.1 s or more.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise MediaValueError(f"dominant_frequency needs mono samples, got shape {x.shape}")
    if len(x) < 2:
        return 0.0
    x = (x - x.mean()) * np.hanning(len(x))
    n_fft = max(8192, 1 << (len(x) - 1).bit_length())
    spectrum = np.abs(np.fft.rfft(x, n_fft))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    if spectrum[peak] <= 1e-9:
        return 0.0
    offset = 0.0
    if 0 < peak < len(spectrum) - 1:
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denom = a - 2 * b + c
        if denom != 0:
            offset = 0.5 * (a - c) / denom
    return float((peak + offset) * sample_rate / n_fft)
