"""The audio codecs sipd speaks, as a small registry: G.711 (PCMU, PCMA), G.722 and Opus.

Why a registry of descriptions plus per-stream state objects: the media path
needs, for whatever was negotiated, the SDP name and RTP clock rate, the PCM
rate the codec works at, how far the RTP timestamp moves per 20 ms packet, and
an encoder/decoder pair. G.711 is stateless, but G.722 (ADPCM predictors) and
Opus (a full speech/music codec) keep state between packets, so every stream
builds its own :class:`CodecState` from the shared :class:`AudioCodec`.

Two RTP clock facts live here rather than in the media code:

- G.722 carries 16 kHz audio but is registered as ``G722/8000`` (RFC 3551
  §4.5.2, an error kept for compatibility): its timestamps advance 160 per
  20 ms packet although the packet holds 320 samples.
- Opus always uses a 48 kHz RTP clock and says ``opus/48000/2`` in SDP whatever
  it encodes (RFC 7587 §4.1, §6.1): timestamps advance 960 per 20 ms. Its
  encoder accepts 8, 12, 16, 24 or 48 kHz PCM, so a stream runs it at the
  application's rate and needs no resampling.

The DSP is the maintained bindings' (``G722`` from PyPI package ``g722``,
libopus through ``opuslib_next``), imported when a stream first needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from sipd.errors import MediaValueError
from sipd.media import g711
from sipd.media.resample import StreamResampler

__all__ = [
    "CODECS",
    "CODEC_NAMES",
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "AudioCodec",
    "CodecPath",
    "CodecState",
    "codec_by_name",
    "codec_names",
    "find_codec",
]


class CodecState(Protocol):
    """One stream's encoder and decoder (each direction keeps its own state)."""

    def encode(self, samples: NDArray[np.int16]) -> bytes:
        """One packet's payload from ``samples`` (20 ms at the state's PCM rate)."""

    def decode(self, payload: bytes) -> NDArray[np.int16]:
        """The samples (at the state's PCM rate) one received payload carries."""


@dataclass(frozen=True, slots=True)
class AudioCodec:
    """What the media path and SDP need to know about one codec."""

    #: The encoding name as written in ``a=rtpmap`` ("PCMU", "G722", "opus").
    name: str
    #: Static payload type, or the dynamic one we offer.
    payload_type: int
    #: RTP clock rate, as written in ``a=rtpmap`` (8000 for G.722: RFC 3551's quirk).
    clock_rate: int
    #: Channels in ``a=rtpmap`` (2 for Opus, RFC 7587 §7, though sipd sends mono).
    channels: int
    #: The PCM rate the codec encodes when the application's rate is not native to it.
    audio_rate: int
    #: Every PCM rate the encoder and decoder take without resampling.
    native_rates: tuple[int, ...]
    #: The ``a=fmtp`` we offer (what we want to receive), None for none.
    fmtp: str | None
    _factory: Callable[[int], CodecState]

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp units per 20 ms packet (160, 160 for G.722, 960 for Opus)."""
        return self.clock_rate // 50

    def pcm_rate(self, preferred: int) -> int:
        """The PCM rate a stream runs the codec at, given the application's ``preferred``."""
        return preferred if preferred in self.native_rates else self.audio_rate

    def new_state(self, pcm_rate: int | None = None) -> CodecState:
        """A fresh encoder/decoder pair at ``pcm_rate`` (one of :attr:`native_rates`)."""
        rate = self.audio_rate if pcm_rate is None else pcm_rate
        if rate not in self.native_rates:
            raise MediaValueError(
                f"{self.name} cannot code {rate} Hz audio; it takes "
                + ", ".join(str(r) for r in self.native_rates)
            )
        return self._factory(rate)

    def __str__(self) -> str:
        return f"{self.name}/{self.clock_rate}"


class _G711State:
    """Table lookups, no state: the same tables as :mod:`sipd.media.g711`."""

    __slots__ = ("decode_table", "encode_table")

    def __init__(self, encode_table: NDArray[np.uint8], decode_table: NDArray[np.int16]) -> None:
        self.encode_table = encode_table
        self.decode_table = decode_table

    def encode(self, samples: NDArray[np.int16]) -> bytes:
        return self.encode_table.take(samples.view(np.uint16)).tobytes()

    def decode(self, payload: bytes) -> NDArray[np.int16]:
        return self.decode_table.take(np.frombuffer(payload, dtype=np.uint8))


def _g711_factory(law: str) -> Callable[[int], CodecState]:
    encode_table = g711.ulaw_encode if law == "PCMU" else g711.alaw_encode
    decode_table = g711.ulaw_decode if law == "PCMU" else g711.alaw_decode
    # The tables themselves, found once by coding every code and one of each sample.
    enc = encode_table(np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16))
    dec = decode_table(np.arange(256, dtype=np.uint8).tobytes())
    enc.flags.writeable = False
    dec.flags.writeable = False
    state = _G711State(enc, dec)
    return lambda _rate: state


def _binding(module: str, package: str) -> Any:
    """Import a codec binding, or say which package to install."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:
        raise MediaValueError(
            f"the {module} codec binding is not usable ({exc}); install it with "
            f"'pip install {package}'"
            + (" and the libopus0 Debian package" if package.startswith("opus") else "")
        ) from exc


class _G722State:
    """G.722 at 64 kbit/s: one ITU-exact ADPCM coder per direction."""

    __slots__ = ("_dec", "_enc")

    def __init__(self) -> None:
        binding = _binding("G722", "g722")
        self._enc = binding.G722(16000, 64000)
        self._dec = binding.G722(16000, 64000)

    def encode(self, samples: NDArray[np.int16]) -> bytes:
        return bytes(self._enc.encode(np.ascontiguousarray(samples, dtype=np.int16)))

    def decode(self, payload: bytes) -> NDArray[np.int16]:
        return np.frombuffer(self._dec.decode(payload), dtype=np.int16)


class _OpusState:
    """libopus in VoIP mode, mono, complexity 5, with in-band FEC, at one of its PCM rates."""

    __slots__ = ("_dec", "_enc", "_frame", "_max_frame")

    def __init__(self, rate: int) -> None:
        opus = _binding("opuslib_next", "opuslib-next")
        try:
            self._enc = opus.Encoder(rate, 1, opus.APPLICATION_VOIP)
            self._enc.complexity = 5  # half the CPU of the default 10, for many calls
            self._enc.inband_fec = 1
            self._enc.packet_loss_perc = 5  # FEC is only spent with some expected loss
            self._dec = opus.Decoder(rate, 1)
        except Exception as exc:
            raise MediaValueError(f"libopus refused a {rate} Hz mono coder: {exc}") from exc
        self._frame = rate // 50
        self._max_frame = rate * 120 // 1000  # a packet holds at most 120 ms

    def encode(self, samples: NDArray[np.int16]) -> bytes:
        data: bytes = self._enc.encode(np.ascontiguousarray(samples).tobytes(), len(samples))
        return data

    def decode(self, payload: bytes) -> NDArray[np.int16]:
        pcm = self._dec.decode(bytes(payload), self._max_frame)
        return np.frombuffer(pcm, dtype=np.int16)

    def recover(self, next_payload: bytes) -> NDArray[np.int16]:
        """The 20 ms before ``next_payload``, lost on the way, from its in-band FEC
        (or libopus's concealment when the sender put no FEC in it)."""
        pcm = self._dec.decode(bytes(next_payload), self._frame, decode_fec=True)
        return np.frombuffer(pcm, dtype=np.int16)


PCMU = AudioCodec("PCMU", 0, 8000, 1, 8000, (8000,), None, _g711_factory("PCMU"))
PCMA = AudioCodec("PCMA", 8, 8000, 1, 8000, (8000,), None, _g711_factory("PCMA"))
G722 = AudioCodec("G722", 9, 8000, 1, 16000, (16000,), None, lambda _rate: _G722State())
OPUS = AudioCodec(
    "opus",
    111,
    48000,
    2,
    48000,
    (8000, 12000, 16000, 24000, 48000),
    # What we accept: full band, mono preferred, in-band FEC. ptime is a=ptime:20.
    "maxplaybackrate=48000;sprop-maxcapturerate=48000;stereo=0;sprop-stereo=0;useinbandfec=1",
    _OpusState,
)

#: Every codec by its case-folded name.
CODECS: dict[str, AudioCodec] = {c.name.casefold(): c for c in (PCMU, PCMA, G722, OPUS)}
#: The names the ``codecs`` setting accepts (any case).
CODEC_NAMES: tuple[str, ...] = tuple(c.name for c in CODECS.values())


def codec_by_name(name: str) -> AudioCodec:
    """The codec called ``name`` (case-insensitive), or an error listing the choices."""
    codec = CODECS.get(name.casefold())
    if codec is None:
        raise MediaValueError(f"unsupported codec {name!r}: sipd speaks " + ", ".join(CODEC_NAMES))
    return codec


class CodecPath:
    """One stream's codec between the application's rate and the codec's PCM rate.

    ``encode`` takes 20 ms at the application's rate and returns a payload; ``decode``
    returns a payload's samples at the application's rate, resampled both ways with a
    :class:`~sipd.media.resample.StreamResampler` only when the rates differ (never for
    G.711 at 8 kHz: then they are the codec state's own bound methods, the hot path).
    ``recover`` (Opus only, else None) rebuilds a lost packet from the next one's FEC.
    """

    __slots__ = ("codec", "decode", "encode", "pcm_rate", "recover")

    def __init__(self, codec: AudioCodec, app_rate: int) -> None:
        self.codec = codec
        self.pcm_rate = pcm_rate = codec.pcm_rate(app_rate)
        state = codec.new_state(pcm_rate)
        recover: Callable[[bytes], NDArray[np.int16]] | None = getattr(state, "recover", None)
        self.encode: Callable[[NDArray[np.int16]], bytes] = state.encode
        self.decode: Callable[[bytes], NDArray[np.int16]] = state.decode
        self.recover = recover
        if pcm_rate != app_rate:
            to_codec = StreamResampler(app_rate, pcm_rate)
            from_codec = StreamResampler(pcm_rate, app_rate)
            self.encode = lambda samples: state.encode(to_codec(samples))
            self.decode = lambda payload: from_codec(state.decode(payload))
            if recover is not None:
                self.recover = lambda payload: from_codec(recover(payload))


def codec_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` checked (each a codec we speak, at least one), for a call's preference."""
    if not names:
        raise MediaValueError("codecs: name at least one of " + ", ".join(CODEC_NAMES))
    for name in names:
        codec_by_name(name)
    return list(names)


def find_codec(name: str, clock_rate: int) -> AudioCodec | None:
    """The codec an SDP ``rtpmap`` names (encoding and clock rate), if we have it."""
    codec = CODECS.get(name.casefold())
    if codec is None or codec.clock_rate != clock_rate:
        return None
    return codec
