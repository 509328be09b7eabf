"""The unit of audio that moves through sipd: a short block of mono int16 samples.

Why one fixed sample format: G.711, WAV recording and the FFT checks all want
mono 16-bit PCM, so every producer converts once at the edge and every
consumer can rely on ``frame.samples.dtype == int16``. A frame is normally
20 ms (160 samples at 8 kHz, 320 at 16 kHz), the RTP packetisation interval;
``sample_rate`` says which (8000 unless a peer's ``sample_rate`` says otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sipd.errors import MediaValueError

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioFrame",
    "split_frames",
    "to_int16",
]

#: Narrowband telephony sample rate (Hz).
SAMPLE_RATE = 8000
#: Samples in one 20 ms frame at 8 kHz.
FRAME_SAMPLES = 160


def to_int16(samples: NDArray[Any] | Sequence[int]) -> NDArray[np.int16]:
    """Return ``samples`` as a 1-D int16 array, clipping wider integers.

    An int16 array is returned as is (no copy). Float input is refused: whether
    it is scaled to ±1.0 or to ±32767 cannot be guessed, so the caller scales.
    """
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise MediaValueError(
            f"audio samples must be a 1-D (mono) array, got {arr.ndim} dimension(s) "
            f"with shape {arr.shape}"
        )
    if arr.dtype == np.int16:
        return arr
    if arr.size == 0:
        return np.zeros(0, dtype=np.int16)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise MediaValueError(
            f"audio samples must be integers (int16 PCM), got dtype {arr.dtype}; "
            "scale float audio to the int16 range first"
        )
    clipped: NDArray[np.int16] = np.clip(arr, -32768, 32767).astype(np.int16)
    return clipped


@dataclass(slots=True, frozen=True, eq=False)
class AudioFrame:
    """A block of mono int16 samples, with RTP timestamp/sequence when received.

    Equality compares the sample values (not array identity), the rate and
    the RTP fields; frames are unhashable because numpy arrays are mutable.
    """

    samples: NDArray[np.int16]
    sample_rate: int = SAMPLE_RATE
    timestamp: int | None = None
    sequence: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", to_int16(self.samples))
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise MediaValueError(f"sample_rate must be a positive int, got {self.sample_rate!r}")

    @classmethod
    def trusted(
        cls,
        samples: NDArray[np.int16],
        sample_rate: int = SAMPLE_RATE,
        timestamp: int | None = None,
        sequence: int | None = None,
    ) -> AudioFrame:
        """Build a frame from samples known to be mono int16, skipping the checks.

        For sipd's own receive path, which decodes thousands of frames a second:
        the slots' own setters take half the time of ``object.__setattr__``,
        which looks each name up first.
        """
        frame = _new(cls)
        _set_samples(frame, samples)
        _set_rate(frame, sample_rate)
        _set_timestamp(frame, timestamp)
        _set_sequence(frame, sequence)
        return frame

    @property
    def duration(self) -> float:
        """Length of the frame in seconds."""
        return len(self.samples) / self.sample_rate

    def __len__(self) -> int:
        return len(self.samples)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AudioFrame):
            return NotImplemented
        return (
            self.sample_rate == other.sample_rate
            and self.timestamp == other.timestamp
            and self.sequence == other.sequence
            and np.array_equal(self.samples, other.samples)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def silence(cls, n: int = FRAME_SAMPLES, sample_rate: int = SAMPLE_RATE) -> AudioFrame:
        """A frame of ``n`` zero samples (160 = 20 ms at 8 kHz)."""
        if n < 0:
            raise MediaValueError(f"a frame cannot hold {n} samples")
        return cls(np.zeros(n, dtype=np.int16), sample_rate)


_new = object.__new__
# The member descriptors of the slots (a frozen dataclass refuses ``frame.x = ...``).
_set_samples, _set_rate, _set_timestamp, _set_sequence = (
    vars(AudioFrame)[name].__set__ for name in ("samples", "sample_rate", "timestamp", "sequence")
)


def split_frames(
    samples: NDArray[Any] | Sequence[int],
    n: int = FRAME_SAMPLES,
    sample_rate: int = SAMPLE_RATE,
) -> Iterator[AudioFrame]:
    """Cut samples into frames of ``n``; the last one is padded with silence.

    This is how a WAV file becomes a stream of 20 ms frames for RTP.
    """
    if n <= 0:
        raise MediaValueError(f"frame size must be positive, got {n}")
    pcm = to_int16(samples)
    for start in range(0, len(pcm), n):
        chunk = pcm[start : start + n]
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros(n - len(chunk), dtype=np.int16)])
        yield AudioFrame(chunk, sample_rate)
