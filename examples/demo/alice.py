"""Alice: call Bob, send a 440 Hz tone for a few seconds while recording him, hang up.

Run by ``make demo`` (see run.py); ALICE_PORT (0: any free port, so the demo
never collides with a daemon or softphone on 5060), BOB_PORT (5061),
CALL_SECONDS (3) and DEMO_OUTPUT (output/) override the defaults.
"""

import os

from twisted.internet import defer, task

from sipd import SimplePeer
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav

OUTPUT = os.environ.get("DEMO_OUTPUT", "output")


async def main(reactor):
    alice = await SimplePeer.create("alice", int(os.environ.get("ALICE_PORT", "0")))
    call = await alice.call(f"sip:bob@127.0.0.1:{os.environ.get('BOB_PORT', '5061')}")
    await call.wait_for_answer()
    recording = call.record_wav(f"{OUTPUT}/demo_alice.wav")
    tone = ToneGenerator(440)
    for _ in range(int(float(os.environ.get("CALL_SECONDS", "3")) * 50)):  # 50 frames/s
        await call.send_audio(tone.next_frame())
    await call.hangup()
    await recording
    print("alice: " + " -> ".join(call.state_path), flush=True)
    heard = dominant_frequency(read_wav(f"{OUTPUT}/demo_alice.wav"))
    print(f"alice: wrote {OUTPUT}/demo_alice.wav, Bob's voice at {heard:.0f} Hz", flush=True)
    await alice.close()


os.makedirs(OUTPUT, exist_ok=True)
task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
