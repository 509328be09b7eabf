"""A call centre: accept customers, call a free agent, bridge their audio.

    python -m examples.call_center --port 5110 --agent sip:agent@127.0.0.1:5111 [--agent ...]

Every customer who calls is answered at once and joins a FIFO queue, hearing
hold audio (a 425 Hz tone, or ``--hold-music`` WAV) while they wait. Whenever
an agent is free and someone is waiting, the centre calls the agent; when the
agent answers, the hold audio stops and the two calls are bridged
(``sipd.media.bridge.bridge``: each hears the other, even if one speaks PCMU
and the other PCMA). When either side hangs up, the bridge hangs up the
other and the agent is free for the next customer. If the agent does not
answer, the customer stays first in line and the agent is tried again.
``--customers N`` exits after N customers have been served (0: never). If
answering or dispatching fails, the centre says why on stderr and exits 1.
"""

from __future__ import annotations

import argparse
from collections import deque
from typing import Any

import numpy as np
from twisted.internet import defer, task

from sipd import Call, SimplePeer
from sipd.errors import CallError
from sipd.media.bridge import bridge
from sipd.media.frame import FRAME_SAMPLES, AudioFrame
from sipd.media.tones import tone
from sipd.media.wav import read_wav


class CallCenter:
    def __init__(self, peer: SimplePeer, agents: list[str], hold_audio: Any) -> None:
        self.peer = peer
        self.free_agents: deque[str] = deque(agents)
        self.waiting: deque[Call] = deque()
        self.hold_audio = hold_audio
        self.served = 0
        self.changed: defer.Deferred[None] = defer.Deferred()

    def _wake(self) -> None:
        d, self.changed = self.changed, defer.Deferred()
        d.callback(None)

    async def take_customers(self) -> None:
        """Answer every caller and put them in the queue on hold."""
        while True:
            incoming = await self.peer.wait_for_incoming()
            customer = await incoming.accept()
            print(f"customer {customer.remote_party} waiting", flush=True)
            self.waiting.append(customer)
            defer.ensureDeferred(self.play_hold(customer))
            self._wake()

    async def play_hold(self, customer: Call) -> None:
        """Loop the hold audio while the customer waits (send_audio paces it)."""
        position = 0
        while customer in self.waiting and customer.is_active():
            idx = np.arange(position, position + FRAME_SAMPLES) % len(self.hold_audio)
            position += FRAME_SAMPLES
            try:
                await customer.send_audio(AudioFrame(self.hold_audio[idx]))
            except CallError:
                return

    async def dispatch(self) -> None:
        """Pair the first waiting customer with the next free agent, forever."""
        while True:
            self.waiting = deque(c for c in self.waiting if c.is_active())  # gone: forget
            if not (self.waiting and self.free_agents):
                await self.changed
                continue
            agent_uri = self.free_agents.popleft()
            agent = await self.peer.call(agent_uri)
            try:
                await agent.wait_for_answer()
            except CallError as exc:
                print(f"agent {agent_uri} did not answer: {exc}", flush=True)
                self.free_agents.append(agent_uri)
                await task.deferLater(self.peer.coordinator.reactor, 1.0, lambda: None)
                continue
            if not self.waiting or not self.waiting[0].is_active():
                await agent.hangup()  # the customer left while the agent was ringing
                self.free_agents.appendleft(agent_uri)
                continue
            customer = self.waiting.popleft()  # stops the hold audio loop
            print(f"bridging {customer.remote_party} to {agent_uri}", flush=True)
            link = bridge(customer, agent)
            link.done.addCallback(lambda _, uri=agent_uri: self._agent_free(uri))

    def _agent_free(self, agent_uri: str) -> None:
        self.served += 1
        print(f"agent {agent_uri} is free ({self.served} served)", flush=True)
        self.free_agents.append(agent_uri)
        self._wake()


async def main(reactor: Any, args: argparse.Namespace) -> None:
    hold = read_wav(args.hold_music) if args.hold_music else tone(425, 1.0)
    peer = await SimplePeer.create("center", args.port)
    center = CallCenter(peer, args.agent, hold)
    print(f"call centre listening on {peer.uri}", flush=True)
    errors: list[str] = []

    def broke(failure: Any, what: str) -> None:
        errors.append(f"call centre: {what} stopped: {failure.getErrorMessage()}")

    defer.ensureDeferred(center.take_customers()).addErrback(broke, "answering customers")
    defer.ensureDeferred(center.dispatch()).addErrback(broke, "calling agents")
    while not errors and (args.customers == 0 or center.served < args.customers):
        await task.deferLater(reactor, 0.1, lambda: None)
    await task.deferLater(reactor, 0.3, lambda: None)  # let the last BYEs complete
    failed = list(errors)  # closing the peer ends the loops too: that is no error
    await peer.close()
    if failed:
        raise SystemExit("\n".join(failed))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="queue customers, bridge them to agents")
    parser.add_argument("--port", type=int, default=5110)
    parser.add_argument("--agent", action="append", default=[], required=True, help="agent URI")
    parser.add_argument("--hold-music", help="WAV looped to waiting customers")
    parser.add_argument("--customers", type=int, default=0, help="exit after N (0: never)")
    arguments = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
