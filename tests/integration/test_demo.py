"""``make demo`` (examples/demo/run.py): two processes place and end a real call."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from sipd.media.tones import dominant_frequency
from sipd.media.wav import read_wav

RUN = Path(__file__).resolve().parents[2] / "examples" / "demo" / "run.py"


def _free_udp_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _path(output: str, who: str) -> list[str]:
    lines = [line for line in output.splitlines() if line.startswith(f"{who}: Idle")]
    assert len(lines) == 1, output
    return lines[0].split(": ", 1)[1].split(" -> ")


def test_demo_call_runs_to_terminated_on_both_sides(tmp_path: Path) -> None:
    """Bob and Alice, as separate processes, each print a state path ending in Terminated
    and write a WAV file of what they heard: Alice hears 880 Hz, Bob 440 Hz."""
    alice_port, bob_port = _free_udp_ports(2)
    env = {**os.environ, "ALICE_PORT": str(alice_port), "BOB_PORT": str(bob_port)}
    env["CALL_SECONDS"] = "1"
    env["DEMO_OUTPUT"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, str(RUN)], env=env, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"sip:bob@127.0.0.1:{bob_port}" in output
    alice = _path(output, "alice")
    bob = _path(output, "bob")
    assert alice[-1] == "Terminated" and "Active" in alice and "Calling" in alice
    assert bob[-1] == "Terminated" and "Active" in bob and "Incoming" in bob
    # Alice hung up, so only she passes through Terminating.
    assert "Terminating" in alice
    for who, other_hz in (("alice", 880), ("bob", 440)):
        wav = tmp_path / f"demo_{who}.wav"
        assert f"{who}: wrote {wav}" in output, output
        heard = dominant_frequency(read_wav(wav))
        assert abs(heard - other_hz) < 5, (who, heard)
        assert len(read_wav(wav)) >= 0.8 * 8000, who  # about a second of the call


def test_demo_fails_when_bob_cannot_listen() -> None:
    """The demo exits non-zero (and says so) when Bob's port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        (alice_port,) = _free_udp_ports(1)
        env = {**os.environ, "ALICE_PORT": str(alice_port)}
        env["BOB_PORT"] = str(taken.getsockname()[1])
        result = subprocess.run(
            [sys.executable, str(RUN)], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode != 0
    assert "bob did not start listening" in result.stderr
