"""An IVR / voicemail box: play a prompt WAV, record the caller until hang-up or ``#``.

    python -m examples.ivr [--port 5090] [--prompt prompt.wav] [--output-dir output]

Each caller is answered, hears the prompt (``--prompt``, or a 660 Hz tone when
no file is given), and is then recorded to ``<output-dir>/message-<N>.wav``.
The recording ends when the caller hangs up or presses ``#`` (RFC 4733 DTMF);
on ``#`` the IVR hangs up itself. ``--calls N`` exits after N callers
(default: run until interrupted). Callers are served concurrently.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from sipd import Call, IncomingCall, SimplePeer
from sipd.media.frame import AudioFrame
from sipd.media.tones import tone


def options() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="play a prompt, record a message")
    p.add_argument("--port", type=int, default=int(env("IVR_PORT", "5090")))
    p.add_argument("--prompt", type=Path, default=env("IVR_PROMPT"), help="prompt WAV file")
    p.add_argument("--output-dir", type=Path, default=Path(env("IVR_OUTPUT", "output")))
    p.add_argument("--calls", type=int, default=int(env("IVR_CALLS", "0")), help="0: forever")
    return p.parse_args()


async def serve(incoming: IncomingCall, prompt: Path | None, message: Path) -> None:
    """One caller: prompt, then record until hang-up or '#'."""
    call: Call = await incoming.accept()
    if prompt is not None:
        await call.play_wav(prompt)  # fires once the last frame is on the wire
    else:
        await call.send_audio(AudioFrame(tone(660, 1.0)))
    recording = call.record_wav(message)
    # recv_dtmf() gives None once the call has ended (the caller hung up).
    while (digit := await call.recv_dtmf()) is not None:
        if digit == "#":
            break
    call.session.stop_recording(message)  # finalise the WAV now
    await recording
    if call.is_active():
        await call.hangup()
    print(f"message from {incoming.caller} saved to {message}", flush=True)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    args.output_dir.mkdir(parents=True, exist_ok=True)
    ivr = await SimplePeer.create("ivr", args.port)
    print(f"ivr listening on {ivr.uri}", flush=True)
    served: list[defer.Deferred[None]] = []
    n = 0
    while args.calls == 0 or n < args.calls:
        incoming = await ivr.wait_for_incoming()
        n += 1
        message = args.output_dir / f"message-{n}.wav"
        served.append(defer.ensureDeferred(serve(incoming, args.prompt, message)))
    await defer.DeferredList(served, consumeErrors=True)
    await ivr.close()


if __name__ == "__main__":
    arguments = options()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
