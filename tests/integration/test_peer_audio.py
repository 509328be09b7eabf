"""The peer_audio example as a user runs it: two processes, one call, two WAV files.

``examples/peer_audio/peer2.py`` (bob, 880 Hz) and ``peer1.py`` (alice,
440 Hz) run as subprocesses of the test's Python. Each records what it
receives; the test then checks the files with its own FFT (numpy only, not
sipd's detector) and against the frame counts the other side printed.

Tolerances:

* coverage: a recording holds at least 95 % of the tone frames the other
  side put on the wire (the issue's figure), and never more than it sent.
  Loopback loses nothing in practice; the slack is for a frame or two in
  flight when the BYE ends the call.
* duration: the WAV lasts as long as the RTP the other side sent in all
  (its tone plus the silence a peer sends while no tone is queued: between
  its 200 OK and the ACK, and after its last tone frame until the BYE),
  at most exactly that and at least 95 % of it. The recorder fills RTP
  timestamp gaps with silence, so a lost packet does not shorten it; only
  the last packets, still in flight when the receiver's media stops at the
  BYE, can be missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sipd.media.wav import read_wav

ROOT = Path(__file__).resolve().parents[2]
DURATION_S = 3.0
RATE = 8000
FRAME = 160
ALICE_HZ, BOB_HZ = 440.0, 880.0
#: See the module docstring for why these bounds.
MIN_COVERAGE = 0.95
#: A 160-sample block counts as tone when its RMS is above this (the
#: example's tone is 0.3 of full scale: RMS ~6950; G.711 silence is ~0-8).
TONE_RMS = 1000.0


@dataclass
class PeerRun:
    name: str
    proc: subprocess.Popen[bytes]
    out: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


def _start(module: str, name: str, tmp: Path, *args: str) -> PeerRun:
    out = tmp / f"{name}.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return PeerRun(name, proc, out)


def _wait_for_line(run: PeerRun, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, run.text())
        if found:
            return found
        if run.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{run.name} did not print {pattern!r}:\n{run.text()}")


@dataclass
class Summary:
    """What a peer script printed at the end."""

    tone_frames: int
    packets: int
    wav: Path
    dominant_hz: float


def _summary(run: PeerRun) -> Summary:
    text = run.text()
    sent = re.search(rf"{run.name}: sent (\d+) frames .*\((\d+) RTP packets in all\)", text)
    rec = re.search(rf"{run.name}: recorded (.+?) \(.*dominant frequency ([\d.]+) Hz", text)
    assert sent and rec, f"{run.name} printed no summary:\n{text}"
    return Summary(int(sent.group(1)), int(sent.group(2)), Path(rec.group(1)), float(rec.group(2)))


def _spectrum_peak(samples: NDArray[np.int16]) -> tuple[float, float]:
    """(peak frequency in Hz, share of the signal's power within 25 Hz of it)."""
    x = samples.astype(np.float64)
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    peak = float(freqs[int(np.argmax(power))])
    band = power[np.abs(freqs - peak) <= 25].sum()
    return peak, float(band / power.sum())


def _tone_frames(samples: NDArray[np.int16]) -> int:
    """How many whole 20 ms frames of the recording carry the tone."""
    usable = len(samples) - len(samples) % FRAME
    blocks = samples[:usable].astype(np.float64).reshape(-1, FRAME)
    rms = np.sqrt((blocks**2).mean(axis=1))
    return int((rms > TONE_RMS).sum())


def _check_recording(listener: str, heard: Summary, sender: str, sent: Summary, hz: float) -> None:
    samples = read_wav(heard.wav)
    peak, share = _spectrum_peak(samples)
    assert abs(peak - hz) <= 2, f"{listener} heard {peak:.1f} Hz, {sender} sent {hz}"
    assert share >= 0.9, f"{listener}'s WAV: only {share:.0%} of its power is near {hz} Hz"
    assert abs(heard.dominant_hz - peak) <= 2, (
        f"{listener} printed {heard.dominant_hz} Hz, the FFT says {peak}"
    )

    tone = _tone_frames(samples)
    assert sent.tone_frames >= MIN_COVERAGE * DURATION_S * 50, (
        f"{sender} sent only {sent.tone_frames} tone frames in {DURATION_S} s"
    )
    assert MIN_COVERAGE * sent.tone_frames <= tone <= sent.tone_frames, (
        f"{listener} recorded {tone} tone frames of the {sent.tone_frames} {sender} sent "
        f"({tone / sent.tone_frames:.1%}; needs {MIN_COVERAGE:.0%} to 100%)"
    )

    recorded_s = len(samples) / RATE
    sent_s = sent.packets * FRAME / RATE
    assert MIN_COVERAGE * sent_s <= recorded_s <= sent_s, (
        f"{listener}'s WAV lasts {recorded_s:.3f} s; {sender} sent {sent_s:.3f} s of RTP"
    )


def test_two_peer_processes_record_each_others_tone(tmp_path: Path) -> None:
    """Alice's WAV holds bob's 880 Hz and bob's holds alice's 440 Hz, in full."""
    output = tmp_path / "output"
    common = ["--port", "0", "--duration", str(DURATION_S), "--output-dir", str(output)]
    runs: list[PeerRun] = []
    try:
        bob = _start(
            "examples.peer_audio.peer2", "bob", tmp_path, *common, "--media-ports", "41000-41199"
        )
        runs.append(bob)
        ready = _wait_for_line(bob, r"bob: ready at sip:bob@127\.0\.0\.1:(\d+)", 20)
        alice = _start(
            "examples.peer_audio.peer1",
            "alice",
            tmp_path,
            *common,
            "--peer-port",
            ready.group(1),
            "--media-ports",
            "41200-41399",
        )
        runs.append(alice)
        for run in (alice, bob):
            try:
                code = run.proc.wait(DURATION_S + 20)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{run.name} did not finish:\n{run.text()}") from None
            assert code == 0, f"{run.name} exited with {code}:\n{run.text()}"
    finally:
        for run in runs:
            run.kill()

    alice_summary, bob_summary = _summary(alice), _summary(bob)
    assert alice_summary.wav == output / "peer1_audio.wav"
    assert bob_summary.wav == output / "peer2_audio.wav"
    _check_recording("alice", alice_summary, "bob", bob_summary, BOB_HZ)
    _check_recording("bob", bob_summary, "alice", alice_summary, ALICE_HZ)
