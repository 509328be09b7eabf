"""``queue``: a call-centre queue — callers wait on hold, agents take them in order.

Settings:

``agents``
    SIP URIs of the agents (required).
``hold_music``
    WAV looped to waiting callers (default: a soft 440/480 Hz ring-back-like tone).
``agent_ring_timeout``
    Seconds to ring the free agents for one caller (default 20).
``retry_delay``
    Seconds to wait before trying again when no agent answered (default 2).

The longest-waiting caller is offered to every free agent at once; the
first agent to answer is bridged to the caller and the other attempts are
cancelled. A caller who hangs up leaves the queue; an agent is free again
when their bridged call ends.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from twisted.internet import defer

from sipd import Defer, InviteDetails, UnifiedSession
from sipd.errors import CallError, ConfigError
from sipd.handlers.base import HandlerBase
from sipd.logs import Logger
from sipd.media.bridge import bridge
from sipd.media.frame import FRAME_SAMPLES, AudioFrame
from sipd.media.tones import tone
from sipd.media.wav import read_wav

__all__ = ["QueueHandler"]

_log = Logger()


class QueueHandler(HandlerBase):
    """FIFO of callers, a set of agents, bridging on first answer."""

    def __init__(self, coordinator: Any, settings: dict[str, Any]) -> None:
        super().__init__(coordinator, settings)
        agents = settings.get("agents")
        if (
            not isinstance(agents, list)
            or not agents
            or not all(isinstance(a, str) for a in agents)
        ):
            raise ConfigError("handler.settings.agents: must be a non-empty list of SIP URIs")
        self.agents: list[str] = agents
        self.busy: set[str] = set()
        self.ring_timeout = float(settings.get("agent_ring_timeout", 20))
        self.retry_delay = float(settings.get("retry_delay", 2))
        music = settings.get("hold_music")
        if music:
            import os

            base = str(settings.get("_config_dir") or os.getcwd())
            path = music if os.path.isabs(music) else os.path.join(base, music)
            self.hold = read_wav(path)
        else:
            self.hold = ((tone(440, 1.0) // 2) + (tone(480, 1.0) // 2)).astype(np.int16)
        self.waiting: deque[UnifiedSession] = deque()
        self._dispatching = False
        self.bridged = 0

    def on_incoming_invite(self, invite: InviteDetails) -> Defer:
        invite.accept().addCallbacks(self._enqueue, lambda f: None)
        return Defer()

    def _enqueue(self, caller: UnifiedSession) -> None:
        self.waiting.append(caller)
        _log.info(
            "queue: {caller} waiting (position {pos})",
            caller=caller.remote_uri,
            pos=len(self.waiting),
            call_id=caller.call_id,
        )
        caller.wait_for_end().addCallback(lambda _: self._left(caller))
        defer.ensureDeferred(self._hold_music(caller))
        self._dispatch()

    def _left(self, caller: UnifiedSession) -> None:
        if caller in self.waiting:
            self.waiting.remove(caller)

    async def _hold_music(self, caller: UnifiedSession) -> None:
        pos = 0
        n = len(self.hold)
        while caller in self.waiting and not caller.is_ended:
            chunk = np.take(self.hold, np.arange(pos, pos + FRAME_SAMPLES) % n)
            pos = (pos + FRAME_SAMPLES) % n
            try:
                await caller.send_audio(AudioFrame(chunk.astype(np.int16)))
            except CallError:
                return

    def _dispatch(self) -> None:
        if self._dispatching or not self.waiting:
            return
        free = [a for a in self.agents if a not in self.busy]
        if not free:
            return
        self._dispatching = True
        caller = self.waiting[0]
        defer.ensureDeferred(self._offer(caller, free)).addBoth(self._dispatched)

    def _dispatched(self, result: object) -> None:
        self._dispatching = False
        if isinstance(result, Exception):
            _log.error("queue dispatch failed: {error}", error=result)
        self._dispatch()

    async def _offer(self, caller: UnifiedSession, agents: list[str]) -> None:
        attempts: dict[str, UnifiedSession] = {}
        for agent in agents:
            try:
                attempts[agent] = self.coordinator.create_outgoing_call(agent)
            except CallError as exc:
                _log.warn("queue: cannot call agent {agent}: {error}", agent=agent, error=exc)
        if not attempts:
            return
        self.busy.update(attempts)
        winner: tuple[str, UnifiedSession] | None = None
        answered: defer.Deferred[tuple[str, UnifiedSession] | None] = defer.Deferred()
        pending = len(attempts)

        def one_answered(session: UnifiedSession, agent: str) -> None:
            if not answered.called:
                answered.callback((agent, session))
            else:
                session.hangup()

        def one_failed(_: object) -> None:
            nonlocal pending
            pending -= 1
            if pending == 0 and not answered.called:
                answered.callback(None)

        for agent, session in attempts.items():
            session.wait_for_answer().addCallbacks(one_answered, one_failed, callbackArgs=(agent,))

        def give_up(_: object = None) -> None:
            if not answered.called:
                answered.callback(None)

        timer = self.coordinator.clock.callLater(self.ring_timeout, give_up)
        caller.wait_for_end().addCallback(give_up)
        winner = await answered
        if timer.active():
            timer.cancel()
        for agent, session in attempts.items():
            if winner is None or session is not winner[1]:
                self.busy.discard(agent)
                if not session.is_ended:
                    session.hangup()
        if winner is None:
            if caller in self.waiting and not caller.is_ended:
                d: defer.Deferred[None] = defer.Deferred()
                self.coordinator.clock.callLater(self.retry_delay, d.callback, None)
                await d
            return
        agent, agent_session = winner
        if caller.is_ended or caller not in self.waiting:
            self.busy.discard(agent)
            agent_session.hangup()
            return
        self.waiting.remove(caller)
        self.bridged += 1
        _log.info(
            "queue: bridging {caller} to {agent}",
            caller=caller.remote_uri,
            agent=agent,
            call_id=caller.call_id,
        )
        link = bridge(caller, agent_session)
        link.done.addCallback(lambda _: self._agent_free(agent))

    def _agent_free(self, agent: str) -> None:
        self.busy.discard(agent)
        self._dispatch()


def build(coordinator: Any, settings: dict[str, Any]) -> QueueHandler:
    return QueueHandler(coordinator, settings)
