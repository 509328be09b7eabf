"""Two peers that call each other over real SIP and RTP and record what they hear.

Start bob first, then alice, from the repository root::

    python -m examples.peer_audio.peer2 &    # bob: answers, sends an 880 Hz tone
    python -m examples.peer_audio.peer1      # alice: calls bob, sends a 440 Hz tone

Each records the audio it receives to ``output/peerN_audio.wav`` and prints
the file's dominant frequency: alice hears bob's 880 Hz and bob hears
alice's 440 Hz. ``--help`` lists the options (ports, duration, output dir).

The few helpers both scripts share (options, the tone loop, the summary)
live here so that each script shows only the call itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sipd import Call, CallStateError
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav

__all__ = ["options", "port_range", "report", "send_tone"]

#: 50 frames of 20 ms make a second.
FRAMES_PER_SECOND = 50


def options(description: str, *, port: int, media: str, calls_peer: bool) -> argparse.Namespace:
    """Parse the command line; every option can also come from a ``PEER_AUDIO_*`` variable."""

    def env(name: str, default: object) -> str:
        return os.environ.get(f"PEER_AUDIO_{name}", str(default))

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--port", type=int, default=int(env("PORT", port)), help="own SIP port (0: any free one)"
    )
    if calls_peer:
        parser.add_argument(
            "--peer-port", type=int, default=int(env("PEER_PORT", 5061)), help="bob's SIP port"
        )
    parser.add_argument(
        "--media-ports",
        type=port_range,
        default=port_range(env("MEDIA_PORTS", media)),
        help="RTP port range MIN-MAX (each peer needs its own)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=float(env("DURATION", 5.0)),
        help="seconds of tone to send",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path(env("OUTPUT_DIR", "output")), help="WAV folder"
    )
    return parser.parse_args()


def port_range(spec: str) -> tuple[int, int]:
    """``"20000-20099"`` as ``(20000, 20099)``."""
    low, sep, high = spec.partition("-")
    if not sep or not low.isdigit() or not high.isdigit():
        raise argparse.ArgumentTypeError(f"expected MIN-MAX, e.g. 20000-20099, got {spec!r}")
    return int(low), int(high)


async def send_tone(call: Call, freq_hz: float, seconds: float) -> int:
    """Send a tone for ``seconds`` (or until the call ends); returns the frames sent.

    Awaiting each ``send_audio`` paces the loop at one 20 ms frame per tick.
    """
    tone = ToneGenerator(freq_hz)
    sent = 0
    try:
        while sent < round(seconds * FRAMES_PER_SECOND) and call.is_active():
            await call.send_audio(tone.next_frame())
            sent += 1
    except CallStateError:
        pass  # the other side hung up while a frame was queued
    return sent


def report(name: str, call: Call, wav: Path, frames_sent: int, freq_hz: float) -> None:
    """Print what was sent and what the recording holds (tests read these lines)."""
    samples = read_wav(wav)
    packets = call.stats().get("packets_sent")
    print(
        f"{name}: sent {frames_sent} frames of {freq_hz:g} Hz ({packets} RTP packets in all)",
        flush=True,
    )
    print(
        f"{name}: recorded {wav} ({len(samples) / 8000:.2f} s), "
        f"dominant frequency {dominant_frequency(samples):.1f} Hz",
        flush=True,
    )
