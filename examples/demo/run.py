"""Run the two-process demo: start Bob, wait until he listens, run Alice.

Exits non-zero if either side fails or takes too long. Ports come from
ALICE_PORT (0: any free port) and BOB_PORT (5061); CALL_SECONDS (3) sets the call length.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 30.0


def wait_for_ready(bob: subprocess.Popen[str], deadline: float) -> bool:
    """Echo Bob's output until his ready line; False if he exits or is too slow."""
    assert bob.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(bob.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            line = bob.stdout.readline()
            if not line:
                return False
            print(line, end="", flush=True)
            if "listening" in line:
                return True
    return False


def main() -> int:
    python = sys.executable
    bob = subprocess.Popen(
        [python, str(HERE / "bob.py")], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        if not wait_for_ready(bob, time.monotonic() + 10):
            print("demo: bob did not start listening", file=sys.stderr)
            return 1
        try:
            alice = subprocess.run([python, str(HERE / "alice.py")], timeout=TIMEOUT)
            rest, _ = bob.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            print("demo: a peer did not finish in time", file=sys.stderr)
            return 1
        print(rest, end="", flush=True)
        if alice.returncode != 0 or bob.returncode != 0:
            print(f"demo: failed (alice {alice.returncode}, bob {bob.returncode})", file=sys.stderr)
            return 1
        print("demo: call completed")
        return 0
    finally:
        if bob.poll() is None:
            bob.kill()  # by this Popen's PID
            bob.wait()


if __name__ == "__main__":
    sys.exit(main())
