"""Blind transfer (REFER, RFC 3515) between three real SIP peers on 127.0.0.1.

    python -m examples.transfer [--base-port 5080] [--output-dir output]

(alice, bob and carol listen on the base port and the next two; 0 picks free ports.)

alice calls bob; bob answers and transfers alice to carol
(``await call.transfer(carol)``). alice's peer receives the REFER, accepts it
(``SimplePeer`` does by default), places the call to carol and tells bob how it
went with NOTIFYs; bob then hangs up. alice's ``wait_for_transfer()`` gives
her the new call. alice sends 500 Hz, carol 1200 Hz; each records what she
hears into ``alice.wav`` / ``carol.wav`` and the program prints the dominant
frequency of both.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from sipd import Call, SimplePeer
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav


def options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="alice -> bob -> carol blind transfer")
    p.add_argument("--base-port", type=int, default=int(os.environ.get("TRANSFER_PORT", "5080")))
    p.add_argument("--output-dir", type=Path, default=Path("output"))
    p.add_argument("--seconds", type=float, default=1.5, help="how long alice and carol talk")
    return p.parse_args()


async def send_tone(call: Call, hz: float, seconds: float) -> None:
    tone = ToneGenerator(hz)
    for _ in range(round(seconds * 50)):  # 50 frames of 20 ms per second
        await call.send_audio(tone.next_frame())


async def main(reactor: Any, args: argparse.Namespace) -> None:
    args.output_dir.mkdir(parents=True, exist_ok=True)
    base = args.base_port  # 0: each peer picks a free port
    alice, bob, carol = [
        await SimplePeer.create(name, base + i if base else 0)
        for i, name in enumerate(("alice", "bob", "carol"))
    ]

    # 1. alice calls bob, bob answers.
    call = await alice.call(bob.uri)
    bob_call = await (await bob.wait_for_incoming()).accept()
    await call.wait_for_answer()
    print("alice is talking to bob")

    # 2. bob transfers alice to carol; carol answers whoever calls.
    transferred = call.wait_for_transfer()  # alice's new call, once answered
    carol_incoming = carol.wait_for_incoming()
    transfer_done = bob_call.transfer(carol.uri)
    incoming = await carol_incoming
    print(f"carol: call from {incoming.caller}")
    carol_call = await incoming.accept()
    await transfer_done  # carol answered: the REFER succeeded, bob hangs up
    new_call = await transferred
    await call.wait_for_end()
    print(f"bob's transfer succeeded; alice's call with bob is {call.state.name}")

    # 3. alice and carol talk; each records the other.
    alice_wav, carol_wav = args.output_dir / "alice.wav", args.output_dir / "carol.wav"
    recordings = [new_call.record_wav(alice_wav), carol_call.record_wav(carol_wav)]
    await defer.gatherResults(
        [
            defer.ensureDeferred(send_tone(new_call, 500, args.seconds)),
            defer.ensureDeferred(send_tone(carol_call, 1200, args.seconds)),
        ]
    )
    await new_call.hangup()
    await defer.gatherResults(recordings)
    for who, path in (("alice", alice_wav), ("carol", carol_wav)):
        print(f"{who} heard {dominant_frequency(read_wav(path)):.0f} Hz ({path})")
    for peer in (alice, bob, carol):
        await peer.close()


if __name__ == "__main__":
    arguments = options()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
