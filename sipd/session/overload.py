"""Overload control for new calls (RFC 3261 §21.5.4, in the spirit of RFC 7339).

A UA driven beyond what it can carry must not let its answers come later and
later until every peer's timers fire and nothing completes. It refuses new
work early and cheaply instead: a new INVITE (one outside any dialog) gets
``503 Service Unavailable`` with ``Retry-After`` while the service is behind,
and everything that belongs to calls already admitted (requests inside
dialogs, ACK, BYE, CANCEL) is always served, so those calls complete.

:class:`OverloadControl` decides; it is sans-I/O (time comes from an injected
``IReactorTime``, so it is tested on ``task.Clock``). It refuses a new INVITE
when

* **the event loop lags**: a probe timer due every :data:`PROBE_INTERVAL`
  seconds measures how late it fires. While the average lateness (a moving
  average over the last few probes, counting a probe overdue now as one
  more) is above ``overload_max_lag`` and has been for
  ``overload_lag_sustain`` seconds, the process is not keeping up with what
  arrives (``reason="lag"``). One stall (a garbage collection, a slow disk,
  a moment without a CPU) is not an overload, and refusing the calls that
  queued behind it would turn a hiccup into failed calls; a loop that stays
  behind is;
* **datagrams pile up unread**: more than ``overload_max_backlog`` bytes
  wait in the SIP socket's receive queue (read from the kernel per new
  INVITE, :mod:`sipd.transport.backlog`; Linux), so what arrives now would
  be answered late (``reason="backlog"``). This is the check that holds a
  flood at bay: the loop's lag alone cannot tell one batch of datagrams
  from a queue that keeps growing;
* **too many INVITEs await a final answer**: more than
  ``overload_max_pending`` INVITE server transactions are still unanswered
  (``reason="pending"``);
* **the new-INVITE rate is over its bound**: a token bucket of
  ``overload_max_invite_rate`` per second for all sources together
  (``reason="rate"``);
* **one source sends too many**: a token bucket per source IP address
  (``overload_source_rate`` per second, ``overload_source_burst`` at once), so
  that a scanner's flood is refused without starving other callers
  (``reason="source"``).

Refusing must cost much less than a call, or the refusals themselves eat
the capacity (RFC 6357). So the transport hands every parsed datagram to
:meth:`OverloadControl.screen` before anything else: a new INVITE it refuses
is answered there as a stateless UAS answers (RFC 3261 §8.2.7), with no
transaction, no timer and a To tag derived from the request (a
retransmission, remembered for 64*T1, gets the same 503), and the ACK for
that 503 is absorbed. Only the checks that keep our reply valid SIP
(``check_headers``) run first. The dialog adapter asks
:meth:`OverloadControl.check` as well, for INVITEs that reach it another way;
an INVITE the screen admitted is not counted twice.

Each refusal counts in ``sipd_overload_rejected_total{reason=...}``; the
moving average of the lag is the gauge ``sipd_reactor_lag_seconds``, and each
probe's lateness is counted in the histogram ``sipd_reactor_lag_probe_seconds``. The
coordinator counts ``reason="media_ports"`` when no RTP port pair is left.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from sipd.config import SipdConfig
from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.sip.message import Request, Response, make_response
from sipd.sip.transaction_base import is_reliable, transport_of
from sipd.sip.via import response_address
from sipd.transport.ratelimit import RateLimitedLog
from sipd.transport.udp import check_headers, stamp_received

__all__ = ["LAG_WEIGHT", "PROBE_INTERVAL", "TAG_PREFIX", "OverloadControl", "TokenBucket"]

_log = Logger()

#: Seconds between two lag probes.
PROBE_INTERVAL = 0.05
#: Weight of the newest probe in the moving average of the lag.
LAG_WEIGHT = 0.25
#: Source buckets kept at most; full (idle) buckets are dropped first.
MAX_SOURCES = 10_000
#: Seconds between two log lines about entering or leaving overload.
_LOG_EVERY = 10.0
#: Every To tag of a stateless 503 starts so (our other tags are hex digits).
TAG_PREFIX = "ovl"
#: Refused INVITEs remembered at most (their retransmissions get the same 503).
MAX_REMEMBERED = 100_000
#: Upper bounds (seconds) of the lag probe's histogram.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Addr = tuple[str, int]


def _no_send(data: bytes, addr: Addr) -> None:
    raise OSError("overload control has no transport to send with")


def _nothing_pending() -> int:
    return 0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; one token per admission."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.stamp = now

    def refill(self, now: float) -> float:
        """Add what accrued since the last call; returns the tokens there are."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = now
        return self.tokens

    @property
    def full(self) -> bool:
        return self.tokens >= self.burst


class OverloadControl:
    """Admits or refuses new INVITEs from the load the UA is under (sans-I/O).

    :meth:`screen` answers refused INVITEs itself through ``send``;
    :meth:`check` only decides (None to admit, else the reason: ``"backlog"``,
    ``"lag"``, ``"pending"``, ``"rate"``, ``"source"``) and its caller answers 503 with
    :attr:`retry_after_headers`. ``pending()`` says how many INVITE server
    transactions await a final response. The lag probe starts with the first
    decision and runs until :meth:`stop`.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        enabled: bool = True,
        max_lag: float = 0.2,
        lag_sustain: float = 1.0,
        max_backlog: int = 262144,
        max_pending: int = 2000,
        remember: float = 32.0,
        max_invite_rate: float = 0.0,
        source_rate: float = 50.0,
        source_burst: int = 100,
        retry_after: int = 5,
        metrics: Metrics | None = None,
        send: Callable[[bytes, Addr], None] = _no_send,
        pending: Callable[[], int] = _nothing_pending,
    ) -> None:
        self.clock = clock
        self.send = send
        self.pending = pending
        self.enabled = enabled
        self.max_lag = max_lag
        self.lag_sustain = lag_sustain
        self.max_backlog = max_backlog
        #: Bytes waiting unread in the SIP socket, when the OS can say.
        self.backlog: Callable[[], int] | None = None
        self.max_pending = max_pending
        self.source_rate = source_rate
        self.source_burst = source_burst
        self.metrics = metrics or Metrics()
        #: The headers of a 503 this control asks for (Retry-After; none for 0).
        self.retry_after_headers: list[tuple[str, str]] = (
            [("Retry-After", str(retry_after))] if retry_after > 0 else []
        )
        now = clock.seconds()
        self._global = (
            TokenBucket(max_invite_rate, max(max_invite_rate * 0.1, 1.0), now)
            if max_invite_rate > 0
            else None
        )
        self._sources: dict[str, TokenBucket] = {}
        #: How late the last probe fired, and the moving average (seconds).
        self.lag = 0.0
        self.lag_average = 0.0
        self._due = 0.0
        # Since when the average lag has been above max_lag (None: it is not).
        self._behind_since: float | None = None
        self._probe: IDelayedCall | None = None
        self._stopped = False
        #: The reason new INVITEs are being refused now (None: admitting).
        self.refusing: str | None = None
        # The INVITE the screen admitted last: check() lets it through uncounted.
        self._admitted: Request | None = None
        #: Tells a retransmission of an INVITE a server transaction already holds
        #: (the transaction layer's ``has_server_transaction``): never refused.
        self.known: Callable[[Request], bool] | None = None
        # Refused INVITEs (Call-ID, From tag, CSeq) -> until when they are remembered.
        self._refused: dict[str, float] = {}
        #: Seconds a refused INVITE is remembered (64*T1: as long as it is retransmitted).
        self.remember = remember
        self._logged_at = -_LOG_EVERY
        self._warnings = RateLimitedLog(_log, clock)
        self.refused = 0
        self.metrics.describe(
            "sipd_overload_rejected_total", "New INVITEs answered 503 by overload control"
        )
        self.metrics.gauge(
            "sipd_reactor_lag_seconds",
            "How late the event loop runs timers (moving average of the overload probe)",
            lambda: self.lag_average,
        )
        self.metrics.histogram(
            "sipd_reactor_lag_probe_seconds",
            "How late each overload probe timer fired (every 50 ms)",
            LAG_BUCKETS,
        )

    @classmethod
    def from_config(
        cls,
        config: SipdConfig,
        clock: IReactorTime,
        metrics: Metrics | None = None,
        send: Callable[[bytes, Addr], None] = _no_send,
    ) -> OverloadControl:
        """An overload control with the ``overload_*`` settings of ``config``."""
        return cls(
            clock,
            enabled=config.overload_control,
            max_lag=config.overload_max_lag,
            lag_sustain=config.overload_lag_sustain,
            max_backlog=config.overload_max_backlog,
            max_pending=config.overload_max_pending,
            remember=64 * config.t1,
            max_invite_rate=config.overload_max_invite_rate,
            source_rate=config.overload_source_rate,
            source_burst=config.overload_source_burst,
            retry_after=config.overload_retry_after,
            metrics=metrics,
            send=send,
        )

    # -- the lag probe -------------------------------------------------------------------
    def start(self) -> None:
        """Start the lag probe (done by the first :meth:`check`)."""
        if self._probe is None and not self._stopped and self.enabled and self.max_lag > 0:
            self._schedule(self.clock.seconds())

    def stop(self) -> None:
        """Stop the lag probe for good (the UA is closing)."""
        self._stopped = True
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        self._probe = None

    def _schedule(self, now: float) -> None:
        self._due = now + PROBE_INTERVAL
        self._probe = self.clock.callLater(PROBE_INTERVAL, self._tick)

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.lag = max(0.0, now - self._due)
        self.metrics.observe("sipd_reactor_lag_probe_seconds", self.lag)
        self.lag_average += LAG_WEIGHT * (self.lag - self.lag_average)
        if self.lag_average <= self.max_lag:
            self._behind_since = None
        elif self._behind_since is None:
            # This probe was already max_lag late then.
            self._behind_since = min(now, self._due + self.max_lag)
        self._schedule(now)

    def current_lag(self) -> float:
        """The average lag, with the probe that is overdue now (if any) as a sample.

        A loop busy with a long batch of datagrams has not run its timers
        yet; counting the overdue probe lets the batch itself be refused.
        """
        average = self.lag_average
        if self._probe is None:
            return average
        overdue = self.clock.seconds() - self._due
        return average + LAG_WEIGHT * (overdue - average) if overdue > average else average

    def behind_for(self) -> float:
        """For how long the loop has been more than ``max_lag`` behind (0: it is not).

        From the probes, or, when none has run for a while, from the probe
        overdue now (a loop stuck in one long batch has been behind since
        that probe was ``max_lag`` late).
        """
        now = self.clock.seconds()
        if self._behind_since is not None:
            return now - self._behind_since
        if self._probe is None:
            return 0.0
        return max(0.0, now - self._due - self.max_lag)

    def lagging(self) -> bool:
        """True while the loop lags beyond ``max_lag`` and has for ``lag_sustain`` seconds."""
        if self.max_lag <= 0 or self.current_lag() <= self.max_lag:
            return False
        return self.lag_sustain <= 0 or self.behind_for() >= self.lag_sustain

    # -- admission ---------------------------------------------------------------------------
    def screen(self, message: Request | Response, source: Addr) -> bool:
        """See a datagram before any other layer; True when it is dealt with.

        A new INVITE refused now is answered 503 here, statelessly (RFC 3261
        §8.2.7): To tag from the request, so a retransmission gets the same
        answer; no transaction; ``send`` errors are ignored. The ACK for such
        a 503 is absorbed. Everything else (an admitted INVITE, requests
        inside dialogs, ACK, BYE, CANCEL, responses) goes on: False. A
        malformed header raises :class:`~sipd.sip.errors.SipParseError` for
        the transport to answer as usual.
        """
        if not self.enabled or not isinstance(message, Request):
            return False
        method = message.method
        if method == "ACK":
            tag = message.to.tag
            if tag is None or not tag.startswith(TAG_PREFIX):
                return False
            self.metrics.inc(
                "sipd_sip_requests_received_total", 1.0, method="ACK", **_labels(source)
            )
            return True
        if method != "INVITE" or message.to.tag is not None:
            return False
        if self.known is not None and self.known(message):
            return False  # a retransmission of an INVITE admitted already: its transaction answers
        key = "\n".join((message.call_id, message.from_.tag or "", str(message.cseq.number)))
        now = self.clock.seconds()
        if self._refused.get(key, 0.0) > now:
            # A retransmission of an INVITE refused already: the same answer,
            # or it could be admitted behind the caller's back (§8.2.7).
            check_headers(message)
            self.metrics.inc(
                "sipd_sip_requests_received_total", 1.0, method="INVITE", **_labels(source)
            )
            self._answer(message, source, key)
            return True
        reason = self.decide(source[0], self.pending())
        if reason is None:
            self._admitted = message
            return False
        check_headers(message)  # nothing invalid is echoed in our 503
        self.metrics.inc(
            "sipd_sip_requests_received_total", 1.0, method="INVITE", **_labels(source)
        )
        self._remember(key, now)
        self._refuse(reason, now)
        self._answer(message, source, key)
        return True

    def _answer(self, request: Request, source: Addr, key: str) -> None:
        """Send the 503; its To tag is the same for every copy of ``request`` (§19.3)."""
        stamp_received(request, source)
        digest = hashlib.blake2s(key.encode("utf-8", "replace"), digest_size=5).hexdigest()
        response = make_response(request, 503, to_tag=TAG_PREFIX + digest)
        for name, value in self.retry_after_headers:
            response.headers.add(name, value)
        # Over TCP/TLS the source is the request's connection (a Flow): back on it.
        to = source if is_reliable(source) else response_address(request.top_via, source)
        # Stateless: a reply that cannot be sent leaves nothing to clean up.
        with contextlib.suppress(OSError, ValueError, OverflowError):
            self.send(response.to_bytes(), to)

    def _remember(self, key: str, now: float) -> None:
        """Keep a refused INVITE's key while its caller may retransmit it (64*T1)."""
        refused = self._refused
        while refused:
            oldest = next(iter(refused))
            if refused[oldest] > now and len(refused) < MAX_REMEMBERED:
                break
            del refused[oldest]
        refused[key] = now + self.remember

    def check(self, source: str, pending: int = 0, request: Request | None = None) -> str | None:
        """Admit a new INVITE from ``source`` (None) or say why it is refused.

        ``pending`` is how many INVITE server transactions still await a
        final response. A refusal is counted; the caller answers it. The
        ``request`` the screen has just admitted passes without a second
        decision.
        """
        admitted, self._admitted = self._admitted, None
        if request is not None and request is admitted:
            return None
        reason = self.decide(source, pending)
        if reason is not None:
            self._refuse(reason, self.clock.seconds())
        return reason

    def decide(self, source: str, pending: int) -> str | None:
        """The decision alone: None, after taking the admission's tokens, or the reason."""
        if not self.enabled:
            return None
        if self._probe is None:
            self.start()
        now = self.clock.seconds()
        bucket: TokenBucket | None = None
        if self.source_rate > 0:
            bucket = self._sources.get(source)
            if bucket is None:
                bucket = self._new_source(source, now)
            if bucket.refill(now) < 1.0:
                return "source"
        backlog = self.backlog
        if self.max_backlog > 0 and backlog is not None and backlog() > self.max_backlog:
            return "backlog"
        if self.lagging():
            return "lag"
        if self.max_pending > 0 and pending >= self.max_pending:
            return "pending"
        if self._global is not None:
            if self._global.refill(now) < 1.0:
                return "rate"
            self._global.tokens -= 1.0
        if bucket is not None:
            bucket.tokens -= 1.0
        if self.refusing is not None:
            self._recovered(now)
        return None

    def _new_source(self, source: str, now: float) -> TokenBucket:
        sources = self._sources
        if len(sources) >= MAX_SOURCES:
            # Forget sources whose bucket has refilled (they are as good as new).
            for key in [k for k, b in sources.items() if b.refill(now) >= b.burst]:
                del sources[key]
            while len(sources) >= MAX_SOURCES:
                del sources[next(iter(sources))]
        bucket = TokenBucket(self.source_rate, self.source_burst, now)
        sources[source] = bucket
        return bucket

    def _refuse(self, reason: str, now: float) -> None:
        self.refused += 1
        self.metrics.inc("sipd_overload_rejected_total", reason=reason)
        if self.refusing is None and reason != "source":  # one source is not an overload
            self.refusing = reason
            if now - self._logged_at >= _LOG_EVERY:
                self._logged_at = now
                _log.warn(
                    "overload: answering new INVITEs 503 ({reason}; event loop lag {lag:.3f}s)",
                    reason=reason,
                    lag=self.current_lag(),
                )

    def _recovered(self, now: float) -> None:
        self.refusing = None
        if now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            _log.info("overload over: admitting new INVITEs again ({n} refused)", n=self.refused)

    def refused_elsewhere(
        self, reason: str, call_id: str, error: Exception
    ) -> list[tuple[str, str]]:
        """Count a new INVITE refused for want of a resource (``media_ports``).

        Logs at a bounded rate; returns the headers its 503 carries.
        """
        self.metrics.inc("sipd_overload_rejected_total", reason=reason)
        self._warnings.warn("INVITE {call_id} answered 503: {error}", call_id=call_id, error=error)
        return self.retry_after_headers


def _labels(source: Addr) -> dict[str, str]:
    """The transport label a stream transport's counters carry (UDP's have none)."""
    return {"transport": transport_of(source)} if is_reliable(source) else {}
