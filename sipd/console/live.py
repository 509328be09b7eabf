"""Connecting a :class:`ConsoleRecorder` to a running coordinator (the Twisted edge).

The transports' tap feeds it every SIP message (and, with ``capture_rtp``,
every RTP/RTCP datagram); a ``LoopingCall`` every ``interval`` seconds
(1 s: RTCP's own interval is 5 s, and the receive statistics move every
packet) lets it see new sessions and sample their quality; the
coordinator's end listeners close each call's record and its transfer
listeners link the two calls of a transfer. Other sinks (the HEP sender)
get each record as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import task

from sipd.capture.records import Direction, RtpRecord, WireMessage
from sipd.console.recorder import ConsoleRecorder
from sipd.logs import Logger
from sipd.media.protocol import set_rtp_tap

__all__ = ["ConsoleLive"]

_log = Logger()

Sink = Callable[[WireMessage | RtpRecord], None]


class ConsoleLive:
    """The recorder of one coordinator, fed while started."""

    def __init__(
        self,
        coordinator: Any,
        recorder: ConsoleRecorder | None,
        *,
        interval: float = 1.0,
        capture_rtp: bool = False,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.coordinator = coordinator
        self.recorder = recorder
        self.interval = interval
        self.capture_rtp = capture_rtp
        self.sinks = list(sinks)
        self._loop: task.LoopingCall | None = None

    def start(self) -> None:
        ua = self.coordinator
        ua.transports.set_message_tap(self._message)
        if self.capture_rtp:
            set_rtp_tap(self._rtp)
        if self.recorder is None:
            return
        ua.on_session_end.append(self._ended)
        ua.on_transfer.append(self._transfer)
        self._loop = task.LoopingCall(self._poll)
        self._loop.clock = ua.clock
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: _log.failure("console sampling stopped", f)
        )

    def stop(self) -> None:
        self.coordinator.transports.set_message_tap(None)
        if self.capture_rtp:
            set_rtp_tap(None)
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def now(self) -> float:
        seconds: float = self.coordinator.clock.seconds()
        return seconds

    def _message(self, message: WireMessage) -> None:
        if self.recorder is not None:
            self.recorder.message(message)
        for sink in self.sinks:
            sink(message)

    def _rtp(self, outgoing: bool, data: bytes, port: int, remote: tuple[str, int]) -> None:
        at, local = time.time(), (self.coordinator.config.host, port)
        if self.recorder is not None:
            self.recorder.rtp(outgoing, data, local, remote, at)
        if self.sinks:
            direction = Direction.OUT if outgoing else Direction.IN
            record = RtpRecord(at, direction, local, remote, data)
            for sink in self.sinks:
                sink(record)

    def _poll(self) -> None:
        recorder, now = self.recorder, self.now()
        if recorder is None:
            return
        for session in self.coordinator.sessions():
            try:
                recorder.observe(session, now)
            except Exception:
                _log.failure("console could not sample a call", call_id=session.call_id)

    def _ended(self, session: Any) -> None:
        if self.recorder is not None:
            self.recorder.ended(session, self.now())

    def _transfer(self, old: Any, new: Any) -> None:
        if self.recorder is not None:
            self.recorder.observe(new, self.now())
            self.recorder.link(old.id, new.id)
