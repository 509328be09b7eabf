"""A ``SimplePeer`` script stopped mid-call by SIGTERM or SIGINT ends its call cleanly.

The script is a real subprocess (``task.react``, as the README's programs
are) that calls a peer in the test process, records what it hears and sends
a tone. The test stops it by PID with a signal: the reactor's shutdown hangs
the call up, so the test's peer receives BYE, and the recording is a valid,
non-empty WAV file of what the script heard. The script exits 0 with nothing
on stderr (no ``Wave_write.__del__`` complaint).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav
from sipd.session import events as ev
from tests.conftest import PeerFactory, eventually, within

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """\
import sys

from twisted.internet import defer, task

from sipd import CallStateError, SimplePeer
from sipd.media.tones import ToneGenerator


async def main(reactor, target, wav):
    peer = await SimplePeer.create("script", 0)
    call = await peer.call(target)
    await call.wait_for_answer()
    call.record_wav(wav)
    print("talking", flush=True)
    tone = ToneGenerator(440)
    try:
        while call.is_active():
            await call.send_audio(tone.next_frame())
    except CallStateError:
        pass  # the call ended while a frame was queued
    await call.wait_for_end()
    print("call ended:", " -> ".join(call.state_path), flush=True)
    await peer.close()


task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1], sys.argv[2])))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest_twisted.ensureDeferred
async def test_a_signal_mid_call_sends_bye_and_leaves_a_valid_wav(
    peers: PeerFactory, tmp_path: Path, signum: signal.Signals
) -> None:
    callee = await peers("callee")
    script, wav, out, err = (tmp_path / n for n in ("script.py", "heard.wav", "out", "err"))
    script.write_text(SCRIPT)
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), f"sip:callee@127.0.0.1:{callee.port}", str(wav)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        incoming = await within(callee.wait_for_incoming(), 10)
        call = await within(incoming.accept(), 5)
        assert await eventually(lambda: "talking" in out.read_text(), 5), out.read_text()
        tone = ToneGenerator(880)
        for _ in range(40):  # 0.8 s for the script to hear
            await within(call.send_audio(tone.next_frame()), 2)
        os.kill(proc.pid, signum)
        await within(call.wait_for_end(), 5)
        assert any(isinstance(t.event, ev.RemoteBye) for t in call.history), call.state_path
        assert await eventually(lambda: proc.poll() is not None, 10), "the script did not exit"
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    assert proc.returncode == 0, (proc.returncode, out.read_text(), err.read_text())
    assert err.read_text() == ""
    assert "Terminated" in out.read_text()
    heard = read_wav(wav)
    assert len(heard) >= 0.5 * 8000
    assert dominant_frequency(heard) == pytest.approx(880, abs=10)
