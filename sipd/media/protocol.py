"""RTP and RTCP on Twisted ``DatagramProtocol``\\ s, and the shared media clock.

Each call binds an even RTP port and the odd RTCP port above it; both hand
datagrams to the call's :class:`~sipd.media.stream.MediaStream`, and the ICMP
"port unreachable" errors their sockets read (:mod:`sipd.media.icmp`) too. One
:class:`MediaClock` (a single ``LoopingCall`` at 20 ms) paces every stream of
the process: one timer for all calls scales better than one per call, and
when the reactor is late the clock catches up by ticking each stream as many
times as slots were missed. A slot's streams are ticked together
(:func:`sipd.media.batch.tick_streams`), their G.711 frames encoded at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from time import perf_counter
from typing import Any

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from sipd.logs import Logger
from sipd.media.batch import tick_streams
from sipd.media.stream import Addr, MediaStream

__all__ = ["MediaClock", "RtcpProtocol", "RtpProtocol", "RtpTap", "set_rtp_tap"]

#: Sees every RTP and RTCP datagram of every call, for captures (off: None):
#: ``(outgoing, data, local port, remote address)``. Process-wide, like the clock.
RtpTap = Callable[[bool, bytes, int, Addr], None]
_taps: list[RtpTap | None] = [None]


def set_rtp_tap(tap: RtpTap | None) -> None:
    """Record every call's RTP/RTCP to ``tap`` (None: stop; the default, at no cost)."""
    _taps[0] = tap


def _tap(outgoing: bool, data: bytes, protocol: DatagramProtocol, addr: Any) -> None:
    tap, transport = _taps[0], protocol.transport
    if tap is not None and transport is not None:
        with contextlib.suppress(Exception):  # recording must never break media
            tap(outgoing, data, transport.getHost().port, (addr[0], addr[1]))


_log = Logger()

#: Slots between RTCP reports (5 s at 20 ms, RFC 3550 §6.2 minimum interval).
RTCP_EVERY = 250
#: At most this many missed slots are caught up at once (then the clock slips).
MAX_CATCH_UP = 10


class RtpProtocol(DatagramProtocol):
    """The RTP socket of one call."""

    noisy = False  # no log lines per call for starting and stopping

    def __init__(self) -> None:
        self.stream: MediaStream | None = None
        self.received_early = 0
        self._socket: Any = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if _taps[0] is not None:
            _tap(False, data, self, addr)
        stream = self.stream
        if stream is None:
            self.received_early += 1
            return
        try:
            stream.rtp_received(data, (addr[0], addr[1]))
        except Exception:  # remote input must never reach the reactor
            _log.failure("RTP packet from {addr} broke the media stream", addr=addr)

    def unreachable(self, addr: Addr) -> None:
        """ICMP port unreachable for RTP we sent to ``addr`` (see :mod:`sipd.media.icmp`).

        Only the peer's current RTP address counts: an error for an address the
        stream has since moved away from (latching, a re-INVITE) says nothing.
        """
        stream = self.stream
        if stream is not None and addr == stream.remote:
            stream.unreachable(addr)

    def send(self, data: bytes, addr: Addr) -> None:
        """Send one RTP datagram straight to the socket.

        ``transport.write`` re-checks the address on every call; RTP goes to
        the same checked address 50 times a second, so the hot path skips it.
        A full socket buffer drops the packet, as UDP would anyway (``try``, not
        ``contextlib.suppress``: no context manager object per packet).
        """
        if _taps[0] is not None:
            _tap(True, data, self, addr)
        sock = self._socket
        if sock is None:
            transport = self.transport
            if transport is None:
                return
            sock = self._socket = getattr(transport, "socket", None)
            if sock is None:
                transport.write(data, addr)
                return
        try:
            sock.sendto(data, addr)
        except BlockingIOError:
            return  # the socket buffer is full: the packet is dropped

    def doStop(self) -> None:
        self._socket = None
        super().doStop()  # type: ignore[no-untyped-call]


class RtcpProtocol(DatagramProtocol):
    """The RTCP socket of one call (RTP port + 1)."""

    noisy = False

    def __init__(self) -> None:
        self.stream: MediaStream | None = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if _taps[0] is not None:
            _tap(False, data, self, addr)
        stream = self.stream
        if stream is None:
            return
        try:
            stream.rtcp_received(data, (addr[0], addr[1]))
        except Exception:
            _log.failure("RTCP packet from {addr} broke the media stream", addr=addr)

    def unreachable(self, addr: Addr) -> None:
        """ICMP port unreachable for RTCP we sent to ``addr``: evidence when it is the
        peer's current RTCP address."""
        stream = self.stream
        if stream is not None and addr == stream.remote_rtcp:
            stream.unreachable(addr)

    def send(self, data: bytes, addr: Addr) -> None:
        if _taps[0] is not None:
            _tap(True, data, self, addr)
        if self.transport is not None:
            self.transport.write(data, addr)


class MediaClock:
    """Ticks every registered stream every 20 ms from one ``LoopingCall``.

    With ``phases`` > 1 the loop runs ``phases`` times per period and each
    stream is ticked on one phase only (streams are spread evenly across
    phases). Every stream still sends once per period, but the work of one
    wake-up is 1/``phases`` of the calls, so a busy process keeps its wake-ups
    short and misses fewer slots.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = 0.02,
        rtcp_every: int = RTCP_EVERY,
        phases: int = 1,
    ) -> None:
        self._clock = clock
        self.interval = interval
        self.phases = max(1, phases)
        #: Slots between two RTCP reports of one stream.
        self.rtcp_every = max(1, rtcp_every)
        # One group per phase: stream -> its RTCP offset; and per phase the
        # streams by RTCP offset, so a slot finds its reports without a scan.
        self._groups: list[dict[MediaStream, int]] = [{} for _ in range(self.phases)]
        self._reports: list[dict[int, list[MediaStream]]] = [{} for _ in range(self.phases)]
        self._loop: task.LoopingCall | None = None
        self._subslot = 0
        self.slots = 0
        self.late_slots = 0
        #: Told how long each wake-up took (seconds), e.g. a metrics histogram.
        self.on_tick: Callable[[float], None] | None = None

    def add(self, stream: MediaStream) -> None:
        """Start pacing ``stream`` (RTCP reports staggered by arrival order)."""
        self._forget(stream)
        phase = min(range(self.phases), key=lambda p: len(self._groups[p]))
        offset = self._groups[phase][stream] = self.slots % self.rtcp_every
        self._reports[phase].setdefault(offset, []).append(stream)
        if self._loop is None:
            loop = task.LoopingCall.withCount(self._tick)
            loop.clock = self._clock
            self._loop = loop
            loop.start(self.interval / self.phases, now=False).addErrback(
                lambda f: _log.failure("media clock stopped", f)
            )

    def remove(self, stream: MediaStream) -> None:
        """Stop pacing ``stream``; the loop stops with the last stream."""
        self._forget(stream)
        if not any(self._groups) and self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()

    def _forget(self, stream: MediaStream) -> None:
        for group, reports in zip(self._groups, self._reports, strict=True):
            offset = group.pop(stream, None)
            if offset is not None:
                due = reports[offset]
                due.remove(stream)
                if not due:
                    del reports[offset]

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups)

    def _tick(self, count: int) -> None:
        started = perf_counter()
        if count > 1:
            self.late_slots += count - 1
        for _ in range(min(count, MAX_CATCH_UP * self.phases)):
            phase = self._subslot % self.phases
            self._subslot += 1
            if phase == 0:
                self.slots += 1
            group = self._groups[phase]
            if not group:
                continue
            tick_streams(list(group))
            for stream in list(self._reports[phase].get(self.slots % self.rtcp_every, ())):
                try:
                    stream.rtcp_report()
                except Exception:
                    _log.failure("media stream RTCP report failed")
        if self.on_tick is not None:
            self.on_tick(perf_counter() - started)
