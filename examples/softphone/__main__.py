"""A softphone loop: talk from a WAV "microphone", listen into a WAV "speaker".

    python -m examples.softphone --port 5070 --answer 1 &              # waits for a call
    python -m examples.softphone --port 5071 --call sip:softphone@127.0.0.1:5070

Every call runs the bidirectional loop of the design: one task sends the
microphone's 20 ms frames (``await call.send_audio(frame)`` paces it in real
time) while another receives frames (``await call.recv_audio()``) and writes
them to the speaker file, until the call ends. Incoming calls are answered in
the background, so the phone can be called while it is making its own call.

Options (or environment variables SOFTPHONE_PORT, SOFTPHONE_MIC...):
``--call URI`` places one outgoing call, which is hung up once the microphone
file has been played; ``--answer N`` answers N incoming calls (each ends when
the caller hangs up); the program exits when all of that is done. Without a
``--mic`` file the microphone is a tone of ``--tone`` Hz (440 by default).
The outgoing call is heard into ``--speaker`` (default ``output/speaker.wav``),
the Nth incoming one into ``<speaker>-in<N>.wav``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from sipd import Call, SimplePeer, SipdError
from sipd.media.frame import split_frames
from sipd.media.tones import tone
from sipd.media.wav import WavWriter, read_wav


def options() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="WAV-file softphone (see the module docstring)")
    p.add_argument("--port", type=int, default=int(env("SOFTPHONE_PORT", "5070")))
    p.add_argument("--name", default=env("SOFTPHONE_NAME", "softphone"))
    p.add_argument("--call", default=env("SOFTPHONE_CALL"), help="URI to call")
    p.add_argument("--answer", type=int, default=int(env("SOFTPHONE_ANSWER", "0")))
    p.add_argument("--mic", type=Path, default=env("SOFTPHONE_MIC"), help="WAV to send")
    p.add_argument("--tone", type=float, default=float(env("SOFTPHONE_TONE", "440")))
    p.add_argument("--seconds", type=float, default=float(env("SOFTPHONE_SECONDS", "2")))
    p.add_argument(
        "--speaker", type=Path, default=Path(env("SOFTPHONE_SPEAKER", "output/speaker.wav"))
    )
    return p.parse_args()


async def talk(call: Call, microphone: Any, speaker: Path, *, hang_up: bool) -> None:
    """The loop: send the microphone, record into the speaker, until the call ends."""

    async def send() -> None:
        for frame in split_frames(microphone):
            if not call.is_active():
                return
            await call.send_audio(frame)  # fires when the frame is on the wire
        if hang_up:
            await call.hangup()

    async def receive() -> None:
        with WavWriter(speaker) as out:
            while (frame := await call.recv_audio()) is not None:
                out.write(frame)

    sending = defer.ensureDeferred(send()).addErrback(lambda f: f.trap(Exception))
    await receive()  # returns when the call has ended
    await sending
    print(f"{call.direction.value} call with {call.remote_party} ended; heard -> {speaker}")


async def main(reactor: Any, args: argparse.Namespace) -> None:
    args.speaker.parent.mkdir(parents=True, exist_ok=True)
    microphone = read_wav(args.mic) if args.mic is not None else tone(args.tone, args.seconds)
    phone = await SimplePeer.create(args.name, args.port)
    print(f"softphone listening on {phone.uri}", flush=True)

    async def answer_calls() -> None:
        # In the background: answer the next --answer incoming calls.
        for n in range(1, args.answer + 1):
            try:
                incoming = await phone.wait_for_incoming()
            except SipdError:
                return  # Ctrl-C or SIGTERM closed the phone: no more calls
            print(f"incoming call from {incoming.caller}", flush=True)
            call = await incoming.accept()
            path = args.speaker.with_name(f"{args.speaker.stem}-in{n}.wav")
            await talk(call, microphone, path, hang_up=False)

    answering = defer.ensureDeferred(answer_calls())
    if args.call:
        call = await phone.call(args.call)
        await call.wait_for_answer()
        print(f"connected to {call.remote_party}", flush=True)
        await talk(call, microphone, args.speaker, hang_up=True)
    await answering
    await phone.close()


if __name__ == "__main__":
    arguments = options()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
