"""What the console keeps per call, bounded: the sans-I/O core of the operator's view.

A :class:`CallRecord` holds one call's SIP messages as they crossed the wire
(at most ``max_messages``), its state path with timestamps, its quality over
time (a :class:`QualitySample` per observation: interval loss, jitter,
estimated MOS), its CDR and the calls it was linked to (the other leg of a
bridge, a transfer). :class:`ConsoleRecorder` keeps the live calls and a
bounded deque of recently ended ones (``recent_calls``); a call that falls
off the end is forgotten entirely, so however many calls pass, the memory
held is bounded by ``recent_calls`` plus the live calls, each bounded.

It is fed from outside and does no I/O: :meth:`~ConsoleRecorder.message`
from the transports' tap, :meth:`~ConsoleRecorder.observe` for each live
session every second or so, :meth:`~ConsoleRecorder.ended` when one ends
(:mod:`sipd.console.live` does that wiring on the reactor). Messages arrive
before their session exists (the INVITE creates it) and after it ended (the
ACK, retransmissions): they wait, bounded, under their Call-ID.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

from sipd.capture.records import Direction, RtpRecord, WireMessage
from sipd.console.mos import estimate_mos
from sipd.console.redact import redact

Address = tuple[str, int]

__all__ = ["CallRecord", "ConsoleRecorder", "QualitySample", "SessionView", "StateStep"]


class SessionView(Protocol):
    """What the recorder reads from a session (a :class:`~sipd.UnifiedSession`)."""

    @property
    def id(self) -> str: ...
    @property
    def call_id(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def history(self) -> list[Any]: ...
    @property
    def remote_uri(self) -> str: ...
    @property
    def local_uri(self) -> str: ...
    @property
    def created_at(self) -> float: ...
    @property
    def answered_at(self) -> float | None: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def failure(self) -> Any: ...
    @property
    def direction(self) -> Any: ...
    def stats(self) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class StateStep:
    """One transition of the call's state machine (a row of the state table)."""

    at: float
    from_state: str
    event: str
    to_state: str
    row: int


@dataclass(frozen=True, slots=True)
class QualitySample:
    """Media quality over the interval since the previous sample."""

    at: float
    loss: float  #: fraction of the packets expected in the interval that were lost
    jitter_ms: float
    mos: float
    rtt_ms: float | None = None


def _number(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) else default


class CallRecord:
    """Everything the console shows about one call (see the module doc)."""

    __slots__ = (
        "_prev",
        "answered_at",
        "call_id",
        "callee",
        "caller",
        "cdr",
        "codec",
        "direction",
        "dropped_messages",
        "ended_at",
        "handler",
        "id",
        "jitter_ms",
        "linked",
        "local_port",
        "loss",
        "messages",
        "outcome",
        "rtp",
        "samples",
        "started_at",
        "state",
        "status",
        "steps",
        "transport",
    )

    def __init__(
        self, session_id: str, *, max_messages: int, max_samples: int, max_rtp: int
    ) -> None:
        self.id = session_id
        self.call_id = ""
        self.direction = ""
        self.caller = ""
        self.callee = ""
        self.handler = ""
        self.transport = ""
        self.codec: str | None = None
        self.state = ""
        self.started_at = 0.0
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.outcome: str | None = None
        self.status: int | None = None
        self.loss = 0.0
        self.jitter_ms = 0.0
        self.local_port: int | None = None
        self.messages: deque[WireMessage] = deque(maxlen=max_messages)
        self.dropped_messages = 0
        self.rtp: deque[RtpRecord] = deque(maxlen=max_rtp)
        self.samples: deque[QualitySample] = deque(maxlen=max_samples)
        self.steps: list[StateStep] = []
        self.cdr: dict[str, object] = {}
        self.linked: list[str] = []
        self._prev: tuple[float, float] | None = None  # (expected, lost) at the last sample

    @property
    def live(self) -> bool:
        return self.ended_at is None

    def add_message(self, message: WireMessage) -> None:
        if len(self.messages) == self.messages.maxlen:
            self.dropped_messages += 1
        self.messages.append(message)
        if not self.transport:
            self.transport = message.transport

    def duration(self, now: float) -> float:
        """Seconds since answer (0 if never answered), as the CDR counts it."""
        if self.answered_at is None:
            return 0.0
        return max(0.0, (self.ended_at if self.ended_at is not None else now) - self.answered_at)

    def mos(self) -> float | None:
        return self.samples[-1].mos if self.samples else None

    def summary(self, now: float) -> dict[str, object]:
        """One row of the console's call list (the JSON API)."""
        return {
            "id": self.id,
            "call_id": self.call_id,
            "direction": self.direction,
            "caller": self.caller,
            "callee": self.callee,
            "state": self.state,
            "outcome": self.outcome,
            "status": self.status,
            "started_at": self.started_at,
            "duration": round(self.duration(now), 3),
            "codec": self.codec,
            "transport": self.transport or "udp",
            "loss": round(self.loss, 4),
            "jitter_ms": round(self.jitter_ms, 2),
            "mos": self.mos(),
            "handler": self.handler,
            "messages": len(self.messages),
            "linked": list(self.linked),
        }

    # -- updates from a session ---------------------------------------------------------
    def update(self, session: SessionView, now: float) -> None:
        self.state = session.state
        if session.call_id and not self.call_id:
            self.call_id = session.call_id
        self.answered_at = session.answered_at
        self.steps = [
            StateStep(t.at, t.from_state, t.event_name, t.to_state, t.row)
            for t in session.history
            if not t.ignored
        ]

    def sample(self, stats: dict[str, object], now: float) -> None:
        """Add a quality sample from cumulative ``stats`` (``session.stats()``)."""
        if not stats:
            return
        codec = stats.get("codec")
        if isinstance(codec, str):
            self.codec = codec
        port = stats.get("local_port")
        if isinstance(port, int):
            self.local_port = port
        received = _number(stats.get("packets_received"))
        lost = max(0.0, _number(stats.get("packets_lost")))
        expected = received + lost
        prev_expected, prev_lost = self._prev or (0.0, 0.0)
        self._prev = (expected, lost)
        if expected <= prev_expected:
            return  # no packets since the last sample: nothing to rate
        self.loss = min(1.0, max(0.0, (lost - prev_lost) / (expected - prev_expected)))
        self.jitter_ms = _number(stats.get("jitter_ms"))
        rtt = stats.get("rtt_ms")
        rtt_ms = float(rtt) if isinstance(rtt, int | float) else None
        mos = estimate_mos(self.loss, self.jitter_ms, rtt_ms)
        self.samples.append(QualitySample(now, self.loss, self.jitter_ms, mos, rtt_ms))


class ConsoleRecorder:
    """Live calls and a bounded deque of ended ones (see the module doc)."""

    def __init__(
        self,
        *,
        recent_calls: int = 200,
        max_messages: int = 500,
        max_samples: int = 3600,
        max_rtp: int = 6000,
        show_secrets: bool = False,
        handler: str = "",
        waiting_calls: int = 256,
        waiting_messages: int = 50,
    ) -> None:
        self.recent_calls = recent_calls
        self.max_messages = max_messages
        self.max_samples = max_samples
        self.max_rtp = max_rtp
        self.show_secrets = show_secrets
        self.handler = handler
        self._live: dict[str, CallRecord] = {}
        self._recent: deque[CallRecord] = deque()
        self._by_call_id: dict[str, CallRecord] = {}
        self._by_port: dict[int, CallRecord] = {}
        # Messages whose call is not known (yet, or any more), by Call-ID.
        self._waiting: OrderedDict[str, list[WireMessage]] = OrderedDict()
        self._waiting_calls = waiting_calls
        self._rtp_waiting: OrderedDict[int, deque[RtpRecord]] = OrderedDict()
        self._waiting_messages = waiting_messages

    # -- reading ---------------------------------------------------------------------------
    def live_calls(self) -> list[CallRecord]:
        return list(self._live.values())

    def recent(self) -> list[CallRecord]:
        """Ended calls still held, newest first."""
        return list(reversed(self._recent))

    def get(self, session_id: str) -> CallRecord | None:
        record = self._live.get(session_id)
        if record is not None:
            return record
        return next((r for r in self._recent if r.id == session_id), None)

    def held(self) -> int:
        """Calls held now (live plus recent): the memory bound's measure."""
        return len(self._live) + len(self._recent)

    def waiting(self) -> int:
        """Call-IDs with messages waiting for their call."""
        return len(self._waiting)

    # -- feeding ---------------------------------------------------------------------------
    def message(self, message: WireMessage) -> None:
        """One SIP message from the transports' tap."""
        if not self.show_secrets:
            data = redact(message.data)
            if data is not message.data:
                message = WireMessage(
                    message.time,
                    message.direction,
                    message.transport,
                    message.local,
                    message.remote,
                    data,
                    message.call_id,
                )
        if not message.call_id:
            return
        record = self._by_call_id.get(message.call_id)
        if record is not None:
            record.add_message(message)
            return
        waiting = self._waiting.get(message.call_id)
        if waiting is None:
            if len(self._waiting) >= self._waiting_calls:
                self._waiting.popitem(last=False)
            waiting = self._waiting[message.call_id] = []
        if len(waiting) < self._waiting_messages:
            waiting.append(message)

    def rtp(self, outgoing: bool, data: bytes, local: Address, remote: Address, at: float) -> None:
        """One RTP/RTCP datagram (from :func:`sipd.media.protocol.set_rtp_tap`)."""
        direction = Direction.OUT if outgoing else Direction.IN
        packet = RtpRecord(at, direction, local, remote, data)
        port = local[1] & ~1
        record = self._by_port.get(port)
        # An ended call's port takes the packets still in flight, then is free for the next.
        if record is not None and (record.ended_at is None or at <= record.ended_at + 0.5):
            record.rtp.append(packet)
            return
        # The call is not known yet (it is sampled every second): keep its packets a while.
        waiting = self._rtp_waiting.get(port)
        if waiting is None:
            if len(self._rtp_waiting) >= self._waiting_calls:
                self._rtp_waiting.popitem(last=False)
            waiting = self._rtp_waiting[port] = deque(maxlen=self.max_rtp)
        waiting.append(packet)

    def observe(self, session: SessionView, now: float) -> CallRecord:
        """Take in a live session's state and a quality sample; create its record if new."""
        record = self._live.get(session.id) or self._start(session)
        record.update(session, now)
        self._bind(record)
        record.sample(session.stats(), now)
        partner = getattr(session, "bridged_with", None)
        if isinstance(partner, str):
            self.link(session.id, partner)  # a bridge's two legs (the queue's caller and agent)
        port = record.local_port
        if port is not None and self._by_port.get(port) is not record:
            self._by_port[port] = record
            early = self._rtp_waiting.pop(port, ())
            record.rtp.extend(p for p in early if p.time >= record.started_at)
        return record

    def ended(self, session: SessionView, now: float) -> CallRecord:
        """A session ended: final state, CDR, and into the recent deque."""
        record = self._live.get(session.id) or self._start(session)
        stats = session.stats()
        record.update(session, now)
        self._bind(record)
        record.sample(stats, now)
        failure = session.failure
        record.ended_at = session.ended_at if session.ended_at is not None else now
        record.outcome = type(failure).__name__ if failure else "completed"
        status = getattr(failure, "status", None) if failure else 200
        record.status = status if isinstance(status, int) else None
        record.cdr = {
            "call_id": record.call_id,
            "direction": record.direction,
            "caller": record.caller,
            "callee": record.callee,
            "outcome": record.outcome,
            "status": record.status,
            "started_at": record.started_at,
            "answered_at": record.answered_at,
            "ended_at": record.ended_at,
            "duration": round(record.duration(now), 3),
            "path": [record.steps[0].from_state, *(s.to_state for s in record.steps)]
            if record.steps
            else [record.state],
            **{k: v for k, v in stats.items() if isinstance(v, int | float | str) or v is None},
        }
        self._live.pop(record.id, None)
        self._recent.append(record)
        while len(self._recent) > self.recent_calls:
            self._forget(self._recent.popleft())
        return record

    def link(self, a: str, b: str) -> None:
        """Show calls ``a`` and ``b`` (session ids) as two legs of one (a bridge, a transfer)."""
        ra, rb = self.get(a), self.get(b)
        if ra is None or rb is None or a == b:
            return
        if b not in ra.linked:
            ra.linked.append(b)
        if a not in rb.linked:
            rb.linked.append(a)

    def legs(self, record: CallRecord) -> list[CallRecord]:
        """The call and the calls linked to it that are still held."""
        found = [record]
        for other in record.linked:
            leg = self.get(other)
            if leg is not None:
                found.append(leg)
        return found

    # -- internals -------------------------------------------------------------------------
    def _start(self, session: SessionView) -> CallRecord:
        record = CallRecord(
            session.id,
            max_messages=self.max_messages,
            max_samples=self.max_samples,
            max_rtp=self.max_rtp,
        )
        outgoing = getattr(session.direction, "name", "") == "OUTGOING"
        record.direction = "outgoing" if outgoing else "incoming"
        us, them = str(session.local_uri), str(session.remote_uri)
        record.caller, record.callee = (us, them) if outgoing else (them, us)
        record.started_at = session.created_at
        record.handler = self.handler
        self._live[session.id] = record
        return record

    def _bind(self, record: CallRecord) -> None:
        """Index ``record`` by its Call-ID once known; take the messages that waited for it."""
        call_id = record.call_id
        if not call_id or self._by_call_id.get(call_id) is record:
            return
        self._by_call_id[call_id] = record
        for message in self._waiting.pop(call_id, []):
            record.add_message(message)
        ordered = sorted(record.messages, key=lambda m: m.time)
        record.messages.clear()
        record.messages.extend(ordered)

    def _forget(self, record: CallRecord) -> None:
        if record.local_port is not None and self._by_port.get(record.local_port) is record:
            del self._by_port[record.local_port]
        if self._by_call_id.get(record.call_id) is record:
            del self._by_call_id[record.call_id]
        for other in record.linked:
            leg = self.get(other)
            if leg is not None and record.id in leg.linked:
                leg.linked.remove(record.id)
