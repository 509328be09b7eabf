"""sipp (independent SIP software) probes a SimplePeer outside any call.

sipp runs as a child process with the scenarios in ``scenarios/``; the
reactor keeps running while the test polls it, and it is killed by PID
whatever happens. A scenario passes when sipp exits 0: the expected
response arrived (and, for OPTIONS, its Allow, Accept, Supported and
``received`` checks matched).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task

from sipd import SimplePeer

pytestmark = pytest.mark.interop

SIPP = "/usr/bin/sipp"
SCENARIOS = Path(__file__).with_name("scenarios")


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def run_sipp(scenario: Path, target_port: int, workdir: Path, timeout: float = 15.0) -> None:
    """Run one sipp call of ``scenario`` against ``target_port``; fail unless sipp exits 0."""
    if not os.access(SIPP, os.X_OK):
        pytest.fail(f"{SIPP} is missing: install the Debian package sip-tester to run this test")
    args = [
        SIPP,
        "-sf",
        str(scenario),
        f"127.0.0.1:{target_port}",
        "-i",
        "127.0.0.1",
        "-p",
        str(_free_udp_port()),
        "-s",
        "bob",
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "10s",
        "-timeout_error",
        "-trace_err",
    ]
    with (workdir / "sipp.out").open("wb") as out:
        proc = subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = _reactor().seconds() + timeout
        while proc.poll() is None and _reactor().seconds() < deadline:
            await task.deferLater(_reactor(), 0.05, lambda: None)
        code = proc.poll()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if code != 0:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(workdir.iterdir())
            if p.is_file()
        )
        pytest.fail(f"sipp {scenario.name} exited {code}\n$ {' '.join(args)}\n{logs}")


@pytest_twisted.async_yield_fixture
async def bob() -> AsyncIterator[SimplePeer]:
    peer = await SimplePeer.create("bob", 0)
    try:
        yield peer
    finally:
        await peer.close()


@pytest_twisted.ensureDeferred
async def test_sipp_options_gets_200(bob: SimplePeer, tmp_path: Path) -> None:
    """sipp's OPTIONS is answered 200 with Allow, Accept, Supported and Via received."""
    await run_sipp(SCENARIOS / "options.xml", bob.port, tmp_path)


@pytest_twisted.ensureDeferred
async def test_sipp_unknown_method_gets_501(bob: SimplePeer, tmp_path: Path) -> None:
    """sipp's FOO request is answered 501 Not Implemented."""
    await run_sipp(SCENARIOS / "unknown_method.xml", bob.port, tmp_path)
