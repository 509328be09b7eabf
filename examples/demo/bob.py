"""Bob: answer one call and stay on until the caller hangs up.

Run by ``make demo`` (see run.py); BOB_PORT overrides the port (5061).
"""

import os

from twisted.internet import defer, task

from sipd import SimplePeer


async def main(reactor):
    bob = await SimplePeer.create("bob", int(os.environ.get("BOB_PORT", "5061")))
    print(f"bob: listening on {bob.uri}", flush=True)  # run.py waits for this line
    incoming = await bob.wait_for_incoming()
    call = await incoming.accept()
    await call.wait_for_end()
    print("bob: " + " -> ".join(call.state_path), flush=True)
    await bob.close()


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
