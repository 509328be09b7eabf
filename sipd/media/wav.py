"""WAV files in and out, as the mono int16 audio a call carries (8 kHz unless asked).

Why a RIFF reader of our own: the stdlib ``wave`` module reads only integer
PCM, while prompts and recordings users hand us are often 44.1/48 kHz,
stereo, float or WAVE_FORMAT_EXTENSIBLE. Parsing the two chunks we need
(``fmt `` and ``data``) is short and lets every failure name the file and the
problem. Writing is plain 16-bit PCM with a 44-byte header we keep
patched, so the file on disk is valid after every write (the stdlib writer
leaves an empty file until the first frame and complains from ``__del__``
when it is collected after its file at interpreter exit).

Resampling is soxr's high-quality filter (:mod:`sipd.media.resample`): a
prompt recorded at 44.1 kHz is converted once, whole, to the call's rate.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from sipd.errors import MediaValueError, WavFormatError
from sipd.media.frame import SAMPLE_RATE, AudioFrame, to_int16
from sipd.media.resample import resample_once

__all__ = [
    "WavWriter",
    "read_wav",
    "resample",
]

_PCM = 0x0001
_IEEE_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE


def read_wav(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> NDArray[np.int16]:
    """Read a WAV file as mono int16 samples at ``sample_rate`` (8 kHz by default).

    Accepts 8-bit unsigned, 16/24/32-bit integer and 32/64-bit float PCM, any
    channel count (mixed down by averaging) and any rate (resampled).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise WavFormatError(f"cannot read WAV file {os.fspath(path)!r}: {exc}") from exc
    name = os.fspath(path)
    fmt, raw = _chunks(name, data)
    channels, rate, bits, kind = fmt
    frame_bytes = channels * (bits // 8)
    raw = raw[: len(raw) - len(raw) % frame_bytes]
    samples = _to_float(name, raw, bits, kind).reshape(-1, channels)
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    if rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16)


def _chunks(name: str, data: bytes) -> tuple[tuple[int, int, int, int], bytes]:
    """Find and decode the ``fmt `` chunk and the ``data`` chunk payload."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavFormatError(f"{name!r} is not a WAV file (no RIFF/WAVE header)")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body_start = pos + 8
        if cid == b"fmt ":
            fmt = _parse_fmt(name, data[body_start : body_start + size])
        elif cid == b"data":
            if fmt is None:
                raise WavFormatError(f"WAV file {name!r} has its data chunk before the fmt chunk")
            # A recorder that died before finalising leaves a size that is 0xFFFFFFFF
            # or past the end of the file: take what is there.
            return fmt, data[body_start : min(body_start + size, len(data))]
        pos = body_start + size + (size & 1)
    if fmt is None:
        raise WavFormatError(f"WAV file {name!r} has no fmt chunk")
    raise WavFormatError(f"WAV file {name!r} has no data chunk")


def _parse_fmt(name: str, body: bytes) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise WavFormatError(f"WAV file {name!r} has a truncated fmt chunk ({len(body)} bytes)")
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 26:
            raise WavFormatError(f"WAV file {name!r} has a truncated WAVE_FORMAT_EXTENSIBLE fmt")
        (tag,) = struct.unpack_from("<H", body, 24)  # first two bytes of the sub-format GUID
    if channels == 0 or rate == 0:
        raise WavFormatError(f"WAV file {name!r} declares {channels} channels at {rate} Hz")
    ok = (tag == _PCM and bits in (8, 16, 24, 32)) or (tag == _IEEE_FLOAT and bits in (32, 64))
    if not ok:
        raise WavFormatError(
            f"WAV file {name!r} uses format tag 0x{tag:04x} with {bits}-bit samples; "
            "sipd reads 8/16/24/32-bit PCM and 32/64-bit float"
        )
    return channels, rate, bits, tag


def _to_float(name: str, raw: bytes, bits: int, tag: int) -> NDArray[np.float64]:
    """Samples on the int16 scale, as float64 (so mixing and filtering do not clip)."""
    if tag == _IEEE_FLOAT:
        dtype = "<f4" if bits == 32 else "<f8"
        values = np.frombuffer(raw, dtype=dtype).astype(np.float64)
        return np.nan_to_num(np.clip(values, -1.0, 1.0)) * 32767.0
    if bits == 8:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if bits == 16:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value & 0x800000, value - 0x1000000, value)
        return value.astype(np.float64) / 256.0
    return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0


def resample(samples: NDArray[Any], from_rate: int, to_rate: int) -> NDArray[np.float64]:
    """Resample a 1-D signal with soxr (kept for callers of the old name)."""
    return resample_once(samples, from_rate, to_rate)


#: The data chunk's size field is 32 bits.
_MAX_DATA = 0xFFFFFFFF - 36


def _wav_header(rate: int, data_bytes: int) -> bytes:
    """The 44-byte RIFF/WAVE header of mono 16-bit PCM at ``rate``."""
    return b"RIFF" + struct.pack(
        "<I4s4sIHHIIHH4sI",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        data_bytes,
    )


class WavWriter:
    """Appends int16 frames to a mono 16-bit PCM WAV file.

    The header is written when the file is created and its RIFF and data
    sizes are patched after every write, and the file is flushed, so it is a
    valid WAV on disk at every moment, not only after :meth:`close`: a call
    or a program that ends abruptly still leaves a playable recording.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> None:
        self.path = os.fspath(path)
        self.sample_rate = sample_rate
        self.frames_written = 0
        self._data_bytes = 0
        try:
            self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 (see close())
            self._file.write(_wav_header(sample_rate, 0))
            self._file.flush()
        except OSError as exc:
            raise WavFormatError(f"cannot create WAV file {self.path!r}: {exc}") from exc

    def write(self, audio: AudioFrame | NDArray[Any]) -> None:
        """Append a frame (its rate must match the file) or an int16 array."""
        out = self._file
        if out is None:
            raise WavFormatError(f"WAV file {self.path!r} is already closed")
        if isinstance(audio, AudioFrame):
            if audio.sample_rate != self.sample_rate:
                raise MediaValueError(
                    f"frame at {audio.sample_rate} Hz written to {self.path!r} "
                    f"at {self.sample_rate} Hz"
                )
            pcm = audio.samples
        else:
            pcm = to_int16(audio)
        data = pcm.astype("<i2").tobytes()
        if not data:
            return
        if self._data_bytes + len(data) > _MAX_DATA:
            raise WavFormatError(f"WAV file {self.path!r} would exceed 4 GiB")
        out.write(data)
        self._data_bytes += len(data)
        self.frames_written += len(pcm)
        out.seek(4)
        out.write(struct.pack("<I", 36 + self._data_bytes))
        out.seek(40)
        out.write(struct.pack("<I", self._data_bytes))
        out.seek(0, os.SEEK_END)
        out.flush()

    def close(self) -> None:
        """Close the file (already complete on disk); safe to call twice."""
        out, self._file = self._file, None
        if out is not None:
            out.close()

    @property
    def closed(self) -> bool:
        return self._file is None

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
