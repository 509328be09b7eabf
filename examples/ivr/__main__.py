"""An IVR / voicemail box: play a prompt WAV, record the caller until hang-up or ``#``.

    python -m examples.ivr [--port 5090] [--prompt prompt.wav] [--output-dir output]

Each caller is answered, hears the prompt (``--prompt``, or a 660 Hz tone when
no file is given), and is then recorded to ``<output-dir>/message-<N>.wav``.
The recording ends when the caller hangs up or presses ``#`` (RFC 4733 DTMF);
on ``#`` the IVR hangs up itself. ``--calls N`` exits after N callers
(default: run until interrupted). Callers are served concurrently.

A ``--prompt`` file that is missing or not a WAV stops the IVR before it
listens, with one line on stderr and exit status 1. A call that fails (the
caller vanishes, a file cannot be written) is reported on stderr and hung
up, and the IVR exits 1 once its callers are done.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from sipd import Call, CallStateError, IncomingCall, SimplePeer, SipdError
from sipd.media.frame import AudioFrame
from sipd.media.tones import tone
from sipd.media.wav import read_wav


def options() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="play a prompt, record a message")
    p.add_argument("--port", type=int, default=int(env("IVR_PORT", "5090")))
    p.add_argument("--prompt", type=Path, default=env("IVR_PROMPT"), help="prompt WAV file")
    p.add_argument("--output-dir", type=Path, default=Path(env("IVR_OUTPUT", "output")))
    p.add_argument("--calls", type=int, default=int(env("IVR_CALLS", "0")), help="0: forever")
    return p.parse_args()


async def serve(incoming: IncomingCall, prompt: AudioFrame, message: Path) -> bool:
    """One caller: prompt, then record until hang-up or '#'."""
    call: Call = await incoming.accept()
    try:
        recorded = await record_message(call, prompt, message)
    except Exception:
        if call.is_active():
            await call.hangup()  # never leave a caller on a line nobody serves
        raise
    if recorded:
        print(f"message from {incoming.caller} saved to {message}", flush=True)
    else:
        print(f"{incoming.caller} hung up during the prompt", flush=True)
    return True


async def record_message(call: Call, prompt: AudioFrame, message: Path) -> bool:
    try:
        await call.send_audio(prompt)  # fires once the last frame is on the wire
    except CallStateError:
        if call.is_active():
            raise
        return False  # the caller hung up before the beep: no message
    recording = call.record_wav(message)
    # recv_dtmf() gives None once the call has ended (the caller hung up).
    while (digit := await call.recv_dtmf()) is not None:
        if digit == "#":
            break
    call.session.stop_recording(message)  # finalise the WAV now
    await recording
    if call.is_active():
        await call.hangup()
    return True


def load_prompt(path: Path | None) -> AudioFrame:
    """The prompt's audio (any WAV, converted to 8 kHz mono), or a 660 Hz tone."""
    if path is None:
        return AudioFrame(tone(660, 1.0))
    try:
        return AudioFrame(read_wav(path))
    except (SipdError, OSError) as exc:
        raise SystemExit(f"ivr: --prompt {path}: {exc}") from None


async def main(reactor: Any, args: argparse.Namespace) -> None:
    prompt = load_prompt(args.prompt)  # before answering anyone
    args.output_dir.mkdir(parents=True, exist_ok=True)
    ivr = await SimplePeer.create("ivr", args.port)
    print(f"ivr listening on {ivr.uri}", flush=True)
    served: list[defer.Deferred[bool]] = []
    n = 0
    while args.calls == 0 or n < args.calls:
        try:
            incoming = await ivr.wait_for_incoming()
        except SipdError:
            break  # Ctrl-C or SIGTERM closed the peer: finish the calls in progress
        n += 1
        message = args.output_dir / f"message-{n}.wav"
        caller = incoming.caller
        served.append(
            defer.ensureDeferred(serve(incoming, prompt, message)).addErrback(failed, caller)
        )
    results = await defer.gatherResults(served)
    await ivr.close()
    if not all(results):
        raise SystemExit(1)  # each failure was reported as it happened


def failed(failure: Any, caller: str) -> bool:
    """Report a call that failed (stderr); the IVR goes on serving the others."""
    print(f"ivr: call from {caller} failed: {failure.getErrorMessage()}", file=sys.stderr)
    return False


if __name__ == "__main__":
    arguments = options()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
