"""Alice: calls bob, sends a 440 Hz tone, records bob's audio, hangs up.

Run ``python -m examples.peer_audio.peer2`` first, then
``python -m examples.peer_audio.peer1`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import defer, task

from examples.peer_audio import options, report, send_tone
from sipd import SimplePeer

__all__ = ["main"]


async def main(reactor: Any, args: argparse.Namespace) -> None:
    wav = args.output_dir / "peer1_audio.wav"
    args.output_dir.mkdir(parents=True, exist_ok=True)

    low, high = args.media_ports
    alice = await SimplePeer.create("alice", args.port, media_port_min=low, media_port_max=high)
    call = await alice.call(f"sip:bob@127.0.0.1:{args.peer_port}")
    await call.wait_for_answer()
    recording = call.record_wav(wav)  # finished when the call ends
    sent = await send_tone(call, 440, args.duration)
    await call.hangup()
    await recording
    await alice.close()

    report("alice", call, wav, sent, 440)


if __name__ == "__main__":
    arguments = options(__doc__ or "", port=0, media="20000-20099", calls_peer=True)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
