"""Codec throughput: G.711 (sipd's numpy tables against the stdlib audioop), and the
G.722 and Opus bindings sipd uses for wideband calls, in 20 ms frames.

Run: ``.venv/bin/python bench/codec.py``. Each measurement runs for a fixed
time budget (about 0.25 s), so the whole run takes a few seconds on any
machine. The last line is machine-readable::

    RESULT g711_frames_per_s=<N> g711_encode_frames_per_s=<N> g711_decode_frames_per_s=<N>
           g722_encode_frames_per_s=<N> g722_decode_frames_per_s=<N>
           opus_encode_frames_per_s=<N> opus_decode_frames_per_s=<N>

(one line) where ``g711_frames_per_s`` is 160-sample µ-law encode+decode round trips
per second, as before, and the others are 20 ms frames per second through one
stream's codec state, as :class:`~sipd.media.stream.MediaStream` calls it (G.711
and G.722 at their own rate, Opus at 16 kHz, speech-like noise as input).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from sipd.media import g711
from sipd.media.codecs import G722, OPUS, PCMU, AudioCodec

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13
        try:
            import audioop_lts as audioop  # type: ignore[import-not-found,no-redef]
        except ImportError:
            audioop = None  # type: ignore[assignment]

BUDGET_S = 0.25


def rate(fn: Callable[[], object], budget: float = BUDGET_S) -> float:
    """Calls per second of ``fn`` over about ``budget`` seconds."""
    fn()  # warm-up
    calls = 0
    batch = 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return calls / elapsed
        batch = min(batch * 2, 4096)


def _sipd_round_trip(enc: Any, dec: Any, pcm: Any) -> object:
    return dec(enc(pcm).tobytes())


def _audioop_round_trip(enc: Any, dec: Any, raw: bytes) -> object:
    return dec(enc(raw, 2), 2)


def _per_frame(codec: AudioCodec, rate_hz: int, rng: np.random.Generator) -> tuple[float, float]:
    """Encodes and decodes of one 20 ms frame per second through a fresh codec state."""
    pcm = rng.normal(0, 6000, rate_hz // 50).clip(-32768, 32767).astype(np.int16)
    state = codec.new_state(rate_hz)
    payload = state.encode(pcm)
    return rate(partial(state.encode, pcm)), rate(partial(state.decode, payload))


def main() -> int:
    rng = np.random.default_rng(0)
    results: dict[str, float] = {}
    for label, n in (("20 ms frame (160 samples)", 160), ("1 s block (8000 samples)", 8000)):
        pcm = (rng.normal(0, 6000, n)).clip(-32768, 32767).astype(np.int16)
        raw = pcm.tobytes()
        print(f"{label}:")
        for law, enc, dec, a_enc, a_dec in (
            ("ulaw", g711.ulaw_encode, g711.ulaw_decode, "lin2ulaw", "ulaw2lin"),
            ("alaw", g711.alaw_encode, g711.alaw_decode, "lin2alaw", "alaw2lin"),
        ):
            ours = rate(partial(_sipd_round_trip, enc, dec, pcm))
            line = f"  {law}: sipd {ours:12,.0f} enc+dec/s  ({ours * n / 1e6:8.1f} Msamples/s)"
            if audioop is not None:
                ae, ad = getattr(audioop, a_enc), getattr(audioop, a_dec)
                ref = rate(partial(_audioop_round_trip, ae, ad, raw))
                line += f"  audioop {ref:12,.0f}/s  ratio sipd/audioop {ours / ref:5.2f}"
            print(line)
            results[f"{law}_{n}"] = ours
    print("20 ms frames through a stream's codec state:")
    fields = [f"g711_frames_per_s={results['ulaw_160']:.0f}"]
    for key, codec, rate_hz in (("g711", PCMU, 8000), ("g722", G722, 16000), ("opus", OPUS, 16000)):
        enc, dec = _per_frame(codec, rate_hz, rng)
        print(f"  {codec.name:5s} at {rate_hz} Hz: encode {enc:12,.0f}/s  decode {dec:12,.0f}/s")
        fields += [f"{key}_encode_frames_per_s={enc:.0f}", f"{key}_decode_frames_per_s={dec:.0f}"]
    print("RESULT " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
