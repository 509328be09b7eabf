"""Bob: answer one call, send an 880 Hz tone and record Alice until she hangs up.

Run by ``make demo`` (see run.py); BOB_PORT (5061) and DEMO_OUTPUT (output/)
override the defaults.
"""

import os

from twisted.internet import defer, task

from sipd import CallStateError, SimplePeer
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav

OUTPUT = os.environ.get("DEMO_OUTPUT", "output")


async def main(reactor):
    bob = await SimplePeer.create("bob", int(os.environ.get("BOB_PORT", "5061")))
    print(f"bob: listening on {bob.uri}", flush=True)  # run.py waits for this line
    incoming = await bob.wait_for_incoming()
    call = await incoming.accept()
    recording = call.record_wav(f"{OUTPUT}/demo_bob.wav")
    tone = ToneGenerator(880)
    try:
        while call.is_active():
            await call.send_audio(tone.next_frame())
    except CallStateError:
        pass  # Alice hung up while a frame was queued
    await recording
    print("bob: " + " -> ".join(call.state_path), flush=True)
    heard = dominant_frequency(read_wav(f"{OUTPUT}/demo_bob.wav"))
    print(f"bob: wrote {OUTPUT}/demo_bob.wav, Alice's voice at {heard:.0f} Hz", flush=True)
    await bob.close()


os.makedirs(OUTPUT, exist_ok=True)
task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
