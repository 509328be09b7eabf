"""Alice: call Bob, talk for a few seconds, hang up.

Run by ``make demo`` (see run.py); ALICE_PORT (5060), BOB_PORT (5061) and
CALL_SECONDS (3) override the defaults.
"""

import os

from twisted.internet import defer, task

from sipd import SimplePeer


async def main(reactor):
    alice = await SimplePeer.create("alice", int(os.environ.get("ALICE_PORT", "5060")))
    call = await alice.call(f"sip:bob@127.0.0.1:{os.environ.get('BOB_PORT', '5061')}")
    await call.wait_for_answer()
    await task.deferLater(reactor, float(os.environ.get("CALL_SECONDS", "3")))
    await call.hangup()
    print("alice: " + " -> ".join(call.state_path), flush=True)
    await alice.close()


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
