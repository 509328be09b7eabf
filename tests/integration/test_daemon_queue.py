"""The ``queue`` daemon: callers wait on hold, agents take them in order.

The daemon runs as a real twistd process; two agents and four callers are
SimplePeers in the test. Every party sends its own tone (agents 700 and
900 Hz, callers 500/550/600 Hz, hold music 300 Hz), so the test's FFT
tells who hears whom:

* caller 1 and caller 2 are bridged to the two agents and each pair hears
  the other's tone, both ways;
* caller 3 waits and hears the hold music;
* caller 4 waits and hangs up, leaving the queue;
* when caller 1 hangs up, the agent it had is free again and takes the
  longest-waiting caller still there: caller 3, never caller 4.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest_twisted
from numpy.typing import NDArray
from twisted.internet import defer

from sipd import Call, SimplePeer
from sipd.errors import SipdError
from sipd.media.tones import ToneGenerator, tone
from sipd.media.wav import WavWriter
from tests.conftest import PeerFactory, eventually, settle, within
from tests.integration.test_daemon import Daemon, start_daemon, write_config
from tests.integration.test_daemon_echo_audio import spectrum_peak

HOLD_HZ = 300.0
AGENT_HZ = {"agenta": 700.0, "agentb": 900.0}
CALLER_HZ = {"c1": 500.0, "c2": 550.0, "c3": 600.0, "c4": 650.0}


async def speak(call: Call, freq: float) -> None:
    """Send a continuous tone, paced by the call's 20 ms clock, until the call ends."""
    gen = ToneGenerator(freq)
    while call.is_active():
        try:
            await call.send_audio(gen.next_frame())
        except SipdError:
            return


async def hear(call: Call, seconds: float = 0.6) -> float:
    """The dominant frequency of the next ``seconds`` of what ``call`` receives."""
    while call.try_recv_audio() is not None:  # drop what was queued before
        pass
    frames: list[NDArray[np.int16]] = []
    for _ in range(int(seconds * 50)):
        frame = await within(call.recv_audio(), 3)
        assert frame is not None, f"{call} ended while the test listened"
        frames.append(frame.samples)
    peak, share = spectrum_peak(np.concatenate(frames))
    assert share >= 0.7, f"{call} hears a mix, not one tone ({peak:.0f} Hz has {share:.0%})"
    return peak


class Agent:
    """A SimplePeer that answers every call and talks at its own frequency."""

    def __init__(self, peer: SimplePeer, freq: float) -> None:
        self.peer = peer
        self.freq = freq
        self.calls: list[Call] = []
        self.loop = defer.ensureDeferred(self._answer())
        self.loop.addErrback(lambda f: f.trap(defer.CancelledError))

    async def _answer(self) -> None:
        while True:
            incoming = await self.peer.wait_for_incoming()
            try:
                call = await incoming.accept()
            except SipdError:
                continue  # the queue cancelled this attempt: another agent was faster
            self.calls.append(call)
            defer.ensureDeferred(speak(call, self.freq))

    def active(self) -> list[Call]:
        return [c for c in self.calls if c.is_active()]


async def _call(peers: PeerFactory, name: str, daemon: Daemon) -> tuple[SimplePeer, Call]:
    peer = await peers(name)
    call = await within(peer.call(daemon.sip_uri), 5)
    await within(call.wait_for_answer(), 5)
    defer.ensureDeferred(speak(call, CALLER_HZ[name]))
    return peer, call


async def _bridged_agent(daemon: Daemon, caller: SimplePeer, agents: dict[str, Agent]) -> Agent:
    found = await daemon.until_log(rf"queue: bridging {re.escape(caller.uri)} to (\S+)")
    by_uri = {a.peer.uri: a for a in agents.values()}
    assert found.group(1) in by_uri, found.group(0)
    agent = by_uri[found.group(1)]
    # The queue rings every free agent; the slower one is hung up again.
    assert await eventually(lambda: len(agent.active()) == 1, 5), daemon.report()
    return agent


@pytest_twisted.ensureDeferred
async def test_callers_queue_for_agents_in_order(tmp_path: Path, peers: PeerFactory) -> None:
    """Bridged pairs hear each other; waiters hear hold music; a leaver loses its place."""
    agents = {name: Agent(await peers(name), hz) for name, hz in AGENT_HZ.items()}
    with WavWriter(tmp_path / "hold.wav") as wav:
        wav.write(tone(HOLD_HZ, 1.0))
    config = tmp_path / "sipd.yaml"
    write_config(
        config,
        handler="queue",
        settings={
            "agents": [a.peer.uri for a in agents.values()],
            "hold_music": "hold.wav",
            "agent_ring_timeout": 5,
            "retry_delay": 0.5,
        },
        grace=5.0,
    )
    daemon = start_daemon(tmp_path, config)
    try:
        await daemon.until_ready()

        c1, call1 = await _call(peers, "c1", daemon)
        agent1 = await _bridged_agent(daemon, c1, agents)
        await settle(0.2)
        assert abs(await hear(call1) - agent1.freq) <= 3
        assert abs(await hear(agent1.active()[0]) - CALLER_HZ["c1"]) <= 3

        c2, call2 = await _call(peers, "c2", daemon)
        agent2 = await _bridged_agent(daemon, c2, agents)
        assert agent2 is not agent1
        await settle(0.2)
        assert abs(await hear(call2) - agent2.freq) <= 3
        assert abs(await hear(agent2.active()[0]) - CALLER_HZ["c2"]) <= 3

        # Both agents are busy: callers 3 and 4 wait, hearing the hold music.
        c3, call3 = await _call(peers, "c3", daemon)
        c4, call4 = await _call(peers, "c4", daemon)
        assert abs(await hear(call3) - HOLD_HZ) <= 3
        assert abs(await hear(call4) - HOLD_HZ) <= 3
        await within(call4.hangup(), 5)

        # Caller 1 leaves: its agent is free and takes caller 3 (caller 4 has gone).
        await within(call1.hangup(), 5)
        assert await _bridged_agent(daemon, c3, agents) is agent1
        await settle(0.2)
        assert abs(await hear(call3) - agent1.freq) <= 3
        assert abs(await hear(agent1.active()[0]) - CALLER_HZ["c3"]) <= 3

        log = daemon.log()
        assert f"bridging {c4.uri}" not in log, log
        assert len(re.findall(r"queue: bridging ", log)) == 3, log
        # Agents were rung only while someone was waiting: nothing rings now.
        rung = sum(len(a.calls) for a in agents.values())
        await settle(1.0)
        assert sum(len(a.calls) for a in agents.values()) == rung
        assert call2.is_active() and call3.is_active()
    finally:
        code = await daemon.stop()
        for agent in agents.values():
            agent.loop.cancel()
    assert code == 0, daemon.report()
    assert re.search(rf"CDR .*remote={re.escape(c4.uri)} outcome=completed", daemon.log())
