"""The issue 7 examples, run as a user runs them: ``python -m examples.<name>``.

Each example is a subprocess of the test's Python on free ports. Where the
example is a server (ivr, call_engine, call_center) the test's own
SimplePeers (the ``peers`` fixture) are its callers and agents; the audio
they hear, and the files the example writes, are checked with
:func:`dominant_frequency`. Every wait is bounded; a process still running
at the end is killed by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import CallRejected, CallState
from sipd.media.tones import ToneGenerator, dominant_frequency
from sipd.media.wav import read_wav
from tests.conftest import PeerFactory, eventually, free_udp_port, settle, within

ROOT = Path(__file__).resolve().parents[2]


class Example:
    """One example process; its output goes to a file the test can read."""

    def __init__(self, name: str, tmp: Path, *args: str) -> None:
        self.out = tmp / f"{name}-{os.getpid()}-{free_udp_port()}.out"
        with self.out.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"examples.{name}", *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    async def wait_for(self, needle: str, timeout: float = 10.0) -> None:
        found = await eventually(
            lambda: needle in self.text() or self.proc.poll() is not None, timeout
        )
        assert found and needle in self.text(), f"no {needle!r} in output:\n{self.text()}"

    async def exit_code(self, timeout: float = 15.0) -> int:
        await eventually(lambda: self.proc.poll() is not None, timeout, 0.05)
        code = self.proc.poll()
        assert code is not None, f"example still running after {timeout}s:\n{self.text()}"
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@pytest_twisted.async_yield_fixture
async def run_example(tmp_path: Path) -> AsyncIterator[Callable[..., Example]]:
    """Start examples; each is killed by PID after the test if it is still running."""
    started: list[Example] = []

    def start(name: str, *args: str) -> Example:
        example = Example(name, tmp_path, *args)
        started.append(example)
        return example

    yield start
    for example in started:
        example.kill()


async def tone_for(call: Any, hz: float, seconds: float) -> None:
    gen = ToneGenerator(hz)
    for _ in range(round(seconds * 50)):
        if not call.is_active():
            return
        await call.send_audio(gen.next_frame())


def freq(path: Path) -> float:
    return dominant_frequency(read_wav(path))


async def heard(call: Any, path: Path, seconds: float) -> float:
    """Record ``call`` for ``seconds``; the dominant frequency of what it heard."""
    done = call.record_wav(path)
    await settle(seconds)
    call.session.stop_recording(path)
    await within(done, 5)
    return freq(path)


async def exchange(
    a: Any, b: Any, fa: float, fb: float, tmp: Path, tag: str
) -> tuple[float, float]:
    """a sends fa and b sends fb for 1 s; (what a heard, what b heard)."""
    recordings = [
        defer.ensureDeferred(heard(a, tmp / f"{tag}-a.wav", 1.2)),
        defer.ensureDeferred(heard(b, tmp / f"{tag}-b.wav", 1.2)),
    ]
    await defer.gatherResults(
        [defer.ensureDeferred(tone_for(a, fa, 1.0)), defer.ensureDeferred(tone_for(b, fb, 1.0))]
    )
    a_heard, b_heard = await within(defer.gatherResults(recordings), 5)
    return a_heard, b_heard


# -- softphone ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_softphones_call_each_other_while_answering_in_the_background(
    run_example: Callable[..., Example], tmp_path: Path
) -> None:
    """Two softphones each call the other and answer the other's call: four WAVs, right tones."""
    pa, pb = free_udp_port(), free_udp_port()
    a = run_example(
        "softphone", "--port", str(pa), "--call", f"sip:softphone@127.0.0.1:{pb}",
        "--answer", "1", "--tone", "500", "--seconds", "1", "--speaker", str(tmp_path / "a.wav"),
    )  # fmt: skip
    await a.wait_for("listening")
    b = run_example(
        "softphone", "--port", str(pb), "--call", f"sip:softphone@127.0.0.1:{pa}",
        "--answer", "1", "--tone", "900", "--seconds", "1", "--speaker", str(tmp_path / "b.wav"),
    )  # fmt: skip
    assert await a.exit_code() == 0, a.text()
    assert await b.exit_code() == 0, b.text()
    for name, expected in (("a", 900), ("a-in1", 900), ("b", 500), ("b-in1", 500)):
        path = tmp_path / f"{name}.wav"
        assert len(read_wav(path)) >= 0.8 * 8000, name
        assert freq(path) == pytest.approx(expected, abs=10), name


# -- transfer -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_transfer_example_ends_with_alice_and_carol_talking(
    run_example: Callable[..., Example], tmp_path: Path
) -> None:
    """alice -> bob -> carol: the files show alice heard carol's 1200 Hz and carol alice's 500."""
    ex = run_example("transfer", "--base-port", "0", "--output-dir", str(tmp_path))
    assert await ex.exit_code(20) == 0, ex.text()
    assert "bob's transfer succeeded" in ex.text()
    assert freq(tmp_path / "alice.wav") == pytest.approx(1200, abs=10)
    assert freq(tmp_path / "carol.wav") == pytest.approx(500, abs=10)


# -- ivr ------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ivr_plays_the_prompt_and_records_until_hash_or_hangup(
    run_example: Callable[..., Example], peers: PeerFactory, tmp_path: Path
) -> None:
    """Caller 1 hears the 660 Hz prompt, leaves 600 Hz, presses #; caller 2 leaves 700 Hz."""
    port = free_udp_port()
    out = tmp_path / "messages"
    ivr = run_example("ivr", "--port", str(port), "--calls", "2", "--output-dir", str(out))
    await ivr.wait_for("listening")
    caller = await peers("caller")

    call = await caller.call(f"sip:ivr@127.0.0.1:{port}")
    await within(call.wait_for_answer(), 5)
    assert await within(heard(call, tmp_path / "prompt.wav", 0.9), 5) == pytest.approx(660, abs=10)
    await settle(0.3)
    await tone_for(call, 600, 1.0)
    # The IVR hangs up on the first '#' packet, before our end packets: still delivered.
    await within(call.send_dtmf("#"), 5)
    await within(call.wait_for_end(), 5)  # the IVR hangs up on '#'
    assert call.state is CallState.TERMINATED

    call2 = await caller.call(f"sip:ivr@127.0.0.1:{port}")
    await within(call2.wait_for_answer(), 5)
    await settle(1.2)  # the prompt
    await tone_for(call2, 700, 0.8)
    await within(call2.hangup(), 5)

    assert await ivr.exit_code() == 0, ivr.text()
    m1, m2 = read_wav(out / "message-1.wav"), read_wav(out / "message-2.wav")
    assert dominant_frequency(m1) == pytest.approx(600, abs=10)
    assert dominant_frequency(m2) == pytest.approx(700, abs=10)
    assert 0.9 <= len(m1) / 8000 <= 3.0 and 0.7 <= len(m2) / 8000 <= 3.0


@pytest_twisted.ensureDeferred
async def test_sigterm_to_the_ivr_mid_message_hangs_up_and_keeps_the_message(
    run_example: Callable[..., Example], peers: PeerFactory, tmp_path: Path
) -> None:
    """SIGTERM while a caller speaks: the caller gets BYE, the message is a valid WAV, exit 0."""
    port = free_udp_port()
    out = tmp_path / "messages"
    ivr = run_example("ivr", "--port", str(port), "--output-dir", str(out))  # runs forever
    await ivr.wait_for("listening")
    caller = await peers("caller")
    call = await caller.call(f"sip:ivr@127.0.0.1:{port}")
    await within(call.wait_for_answer(), 5)
    await settle(1.2)  # the prompt
    await tone_for(call, 600, 0.8)
    os.kill(ivr.proc.pid, signal.SIGTERM)
    await within(call.wait_for_end(), 5)
    assert any(t.event.name == "RemoteBye" for t in call.history), call.state_path
    assert await ivr.exit_code() == 0, ivr.text()
    assert "Traceback" not in ivr.text() and "message from" in ivr.text(), ivr.text()
    message = read_wav(out / "message-1.wav")
    assert len(message) >= 0.5 * 8000
    assert dominant_frequency(message) == pytest.approx(600, abs=10)


@pytest.mark.parametrize("kind", ["missing", "not a WAV"])
@pytest_twisted.ensureDeferred
async def test_ivr_with_a_bad_prompt_says_so_and_exits_1_before_answering(
    run_example: Callable[..., Example], tmp_path: Path, kind: str
) -> None:
    """--prompt names a file that is missing or not a WAV: one line on stderr, exit 1."""
    prompt = tmp_path / "prompt.wav"
    if kind == "not a WAV":
        prompt.write_text("hello\n")
    ivr = run_example("ivr", "--port", str(free_udp_port()), "--prompt", str(prompt))
    assert await ivr.exit_code() == 1, ivr.text()
    lines = ivr.text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ivr: --prompt {prompt}: "), ivr.text()
    assert "listening" not in ivr.text()


# -- call engine ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_call_engine_routes_queue_reject_agent_and_unknown(
    run_example: Callable[..., Example], peers: PeerFactory, tmp_path: Path
) -> None:
    """666 gets 403, 999 gets 404, 100 is answered later (queue tone), 200 reaches the agent."""
    agent = await peers("agent")
    caller = await peers("caller")
    port = free_udp_port()
    engine = run_example(
        "call_engine", "--port", str(port), "--queue-delay", "0.6", "--calls", "4",
        "--route", "100=queue", "--route", "666=reject:403",
        "--route", f"200=agent:sip:agent@127.0.0.1:{agent.port}",
    )  # fmt: skip
    await engine.wait_for("listening")

    for number, status in (("666", 403), ("999", 404)):
        rejected = await caller.call(f"sip:{number}@127.0.0.1:{port}")
        with pytest.raises(CallRejected) as info:
            await within(rejected.wait_for_answer(), 5)
        assert info.value.status == status

    queued = await caller.call(f"sip:100@127.0.0.1:{port}")
    await settle(0.3)
    # Deferred by the handler: not answered yet, still waiting in the queue.
    assert queued.state in (CallState.CALLING, CallState.RINGING)
    await within(queued.wait_for_answer(), 5)
    assert await within(heard(queued, tmp_path / "queue.wav", 0.8), 5) == pytest.approx(350, abs=10)
    await within(queued.wait_for_end(), 5)  # the engine hangs up after the announcement

    direct = await caller.call(f"sip:200@127.0.0.1:{port}")
    incoming = await within(agent.wait_for_incoming(), 5)
    agent_call = await within(incoming.accept(), 5)
    await within(direct.wait_for_answer(), 5)
    caller_heard, agent_heard = await exchange(direct, agent_call, 450, 1100, tmp_path, "agent")
    assert caller_heard == pytest.approx(1100, abs=10)
    assert agent_heard == pytest.approx(450, abs=10)
    await within(direct.hangup(), 5)
    await within(agent_call.wait_for_end(), 5)
    assert await engine.exit_code() == 0, engine.text()


@pytest_twisted.ensureDeferred
async def test_sigterm_to_the_call_engine_hangs_up_both_bridged_calls(
    run_example: Callable[..., Example], peers: PeerFactory
) -> None:
    """The engine (a bare UnifiedCoordinator) stopped by SIGTERM: caller and agent get BYE."""
    agent = await peers("agent")
    caller = await peers("caller")
    port = free_udp_port()
    engine = run_example(
        "call_engine", "--port", str(port), "--route", f"200=agent:sip:agent@127.0.0.1:{agent.port}"
    )
    await engine.wait_for("listening")
    direct = await caller.call(f"sip:200@127.0.0.1:{port}")
    agent_call = await within((await within(agent.wait_for_incoming(), 5)).accept(), 5)
    await within(direct.wait_for_answer(), 5)
    os.kill(engine.proc.pid, signal.SIGTERM)
    for call in (direct, agent_call):
        await within(call.wait_for_end(), 5)
        assert any(t.event.name == "RemoteBye" for t in call.history), call.state_path
    assert await engine.exit_code() == 0, engine.text()


# -- call centre ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_call_center_bridges_customers_to_the_agent_in_turn(
    run_example: Callable[..., Example], peers: PeerFactory, tmp_path: Path
) -> None:
    """Customer 1 talks to the agent while customer 2 hears hold audio, then customer 2's turn."""
    agent = await peers("agent")
    first, second = await peers("first"), await peers("second")
    port = free_udp_port()
    center = run_example(
        "call_center", "--port", str(port), "--customers", "2",
        "--agent", f"sip:agent@127.0.0.1:{agent.port}",
    )  # fmt: skip
    await center.wait_for("listening")
    uri = f"sip:center@127.0.0.1:{port}"

    c1 = await first.call(uri)
    await within(c1.wait_for_answer(), 5)
    a1 = await within((await within(agent.wait_for_incoming(), 5)).accept(), 5)
    c2 = await second.call(uri)
    await within(c2.wait_for_answer(), 5)
    hold = defer.ensureDeferred(heard(c2, tmp_path / "hold.wav", 1.0))
    c1_heard, a1_heard = await exchange(c1, a1, 520, 1250, tmp_path, "one")
    assert c1_heard == pytest.approx(1250, abs=10)
    assert a1_heard == pytest.approx(520, abs=10)
    assert await within(hold, 5) == pytest.approx(425, abs=10)  # waiting on hold

    await within(c1.hangup(), 5)
    await within(a1.wait_for_end(), 5)  # the bridge hangs up the agent's side too
    a2 = await within((await within(agent.wait_for_incoming(), 5)).accept(), 5)
    await settle(0.2)
    c2_heard, a2_heard = await exchange(c2, a2, 640, 1500, tmp_path, "two")
    assert c2_heard == pytest.approx(1500, abs=10)
    assert a2_heard == pytest.approx(640, abs=10)
    await within(a2.hangup(), 5)
    await within(c2.wait_for_end(), 5)
    assert await center.exit_code() == 0, center.text()
    assert np.isfinite(c2_heard)
