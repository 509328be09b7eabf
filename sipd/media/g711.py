"""G.711 µ-law (PCMU) and A-law (PCMA) codecs, vectorised with numpy.

Why lookup tables: a 16-bit sample has only 65,536 possible values and a code
only 256, so the whole codec is two table lookups per law. The tables are
built once at import from the ITU-T G.711 segment rules (the same rules as the
classic Sun reference code that Python's ``audioop`` uses), and the unit tests
check every one of the 65,536 inputs and 256 codes against ``audioop``.
Encoding is then a single ``table.take(samples.view(uint16))``, and the frames
of many calls are encoded together by :func:`encode_frames`: numpy's fixed cost
per call is larger than the lookup of one 160-sample frame, so the media clock
pays it once per tick instead of once per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from sipd.errors import MediaValueError

__all__ = [
    "PAYLOAD_TYPES",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "encode",
    "encode_frames",
    "encode_table",
    "ulaw_decode",
    "ulaw_encode",
]

#: Static RTP payload types of the two codecs (RFC 3551 §6).
PAYLOAD_TYPES: dict[str, int] = {"PCMU": 0, "PCMA": 8}

_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _all_int16() -> NDArray[np.int32]:
    """Every int16 value, ordered by its uint16 bit pattern (the table index)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    pcm = _all_int16() >> 2  # 14-bit magnitude domain, arithmetic shift
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    seg_c = np.minimum(seg, 7)
    code = (seg_c << 4) | ((mag >> (seg_c + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_ulaw_decode() -> NDArray[np.int16]:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> NDArray[np.uint8]:
    pcm = _all_int16() >> 3  # 13-bit domain, arithmetic shift
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    mag = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    seg_c = np.minimum(seg, 7)
    shift = np.where(seg_c < 2, 1, seg_c)
    code = (seg_c << 4) | ((mag >> shift) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_ENC = _build_alaw_encode()
_ALAW_DEC = _build_alaw_decode()
for _table in (_ULAW_ENC, _ULAW_DEC, _ALAW_ENC, _ALAW_DEC):
    _table.flags.writeable = False


def _as_int16(samples: NDArray[np.int16] | Sequence[int]) -> NDArray[np.int16]:
    if isinstance(samples, np.ndarray) and samples.dtype == np.int16:
        return samples  # the per-frame fast path
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise MediaValueError(f"G.711 encodes int16 samples, got dtype {arr.dtype}")
        arr = np.clip(arr, -32768, 32767).astype(np.int16)
    return arr


def _as_codes(codes: bytes | NDArray[np.uint8]) -> NDArray[np.uint8]:
    if isinstance(codes, (bytes, bytearray, memoryview)):
        return np.frombuffer(codes, dtype=np.uint8)
    return np.asarray(codes, dtype=np.uint8)


def ulaw_encode(samples: NDArray[np.int16] | Sequence[int]) -> NDArray[np.uint8]:
    """Encode int16 samples to µ-law codes (one byte per sample)."""
    return _ULAW_ENC.take(_as_int16(samples).view(np.uint16))


def ulaw_decode(codes: bytes | NDArray[np.uint8]) -> NDArray[np.int16]:
    """Decode µ-law codes to int16 samples."""
    return _ULAW_DEC.take(_as_codes(codes))


def alaw_encode(samples: NDArray[np.int16] | Sequence[int]) -> NDArray[np.uint8]:
    """Encode int16 samples to A-law codes (one byte per sample)."""
    return _ALAW_ENC.take(_as_int16(samples).view(np.uint16))


def alaw_decode(codes: bytes | NDArray[np.uint8]) -> NDArray[np.int16]:
    """Decode A-law codes to int16 samples."""
    return _ALAW_DEC.take(_as_codes(codes))


def _codec(name: str) -> str:
    key = name.upper()
    if key not in PAYLOAD_TYPES:
        raise MediaValueError(f"unsupported codec {name!r}: sipd speaks PCMU and PCMA")
    return key


def encode(codec_name: str, samples: NDArray[np.int16] | Sequence[int]) -> bytes:
    """Encode samples into an RTP payload for ``"PCMU"`` or ``"PCMA"`` (case-insensitive)."""
    if _codec(codec_name) == "PCMU":
        return ulaw_encode(samples).tobytes()
    return alaw_encode(samples).tobytes()


def decode(codec_name: str, payload: bytes) -> NDArray[np.int16]:
    """Decode an RTP payload of ``"PCMU"`` or ``"PCMA"`` into int16 samples."""
    if _codec(codec_name) == "PCMU":
        return ulaw_decode(payload)
    return alaw_decode(payload)


def encode_table(codec_name: str) -> NDArray[np.uint8]:
    """The read-only lookup table of ``"PCMU"`` or ``"PCMA"``: code = table[uint16 sample]."""
    return _ULAW_ENC if _codec(codec_name) == "PCMU" else _ALAW_ENC


def encode_frames(codec_name: str, frames: Sequence[NDArray[np.int16]]) -> bytes:
    """The codes of many int16 frames, concatenated, from one table lookup.

    Byte for byte what encoding each frame alone and joining the payloads gives;
    a caller that knows every frame's length (the media clock: 160 samples each)
    slices the result back into payloads, which costs far less than a numpy call
    per frame.
    """
    if not frames:
        return b""
    table = encode_table(codec_name)
    samples = frames[0] if len(frames) == 1 else np.concatenate(frames)
    return table.take(samples.view(np.uint16)).tobytes()
