"""Bob: answers one call, sends an 880 Hz tone and records what alice sends.

Start this first: it prints a ``ready`` line once it listens. Then run
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
    wav = args.output_dir / "peer2_audio.wav"
    args.output_dir.mkdir(parents=True, exist_ok=True)

    low, high = args.media_ports
    bob = await SimplePeer.create("bob", args.port, media_port_min=low, media_port_max=high)
    print(f"bob: ready at sip:bob@127.0.0.1:{bob.port}", flush=True)
    incoming = await bob.wait_for_incoming()
    call = await incoming.accept()
    recording = call.record_wav(wav)  # finished when the call ends
    sent = await send_tone(call, 880, args.duration)
    await call.wait_for_end()  # alice hangs up
    await recording
    await bob.close()

    report("bob", call, wav, sent, 880)


if __name__ == "__main__":
    arguments = options(__doc__ or "", port=5061, media="20100-20199", calls_peer=False)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
