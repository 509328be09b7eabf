"""A bounded TTL cache of DNS answers, on an injected clock.

The cache keeps answers per :class:`~sipd.dns.records.Query` (one record
set each), not whole target lists: every lookup then runs the RFC 3263
selection again over cached record sets, which redraws the SRV weights each
time (the load spreading RFC 2782 wants), and each link of a NAPTR → SRV →
A chain expires on its own TTL, so the chain as a whole lives exactly as
long as its shortest TTL.

* Positive answers live for their TTL (capped by ``max_ttl``); TTL 0 means
  "do not cache" (dnsmasq's default for its own records).
* Negative answers (NXDOMAIN, NODATA) live for the SOA-derived TTL the
  adapter found (RFC 2308), capped by ``negative_ttl`` (30 s by default),
  or ``negative_ttl`` when there was no SOA: briefly, so a record that is
  added is seen soon, but a burst of calls to a name without NAPTR does not
  ask the DNS for the missing NAPTR every time.
* Failures (timeout, SERVFAIL) are not cached: the next attempt asks again.
* At most ``max_entries`` answers: when full, expired ones go first, then
  the least recently used.

The clock is a callable returning seconds or an ``IReactorTime`` (the
reactor, or ``twisted.internet.task.Clock`` in tests).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from sipd.dns.records import Answer, Query
from sipd.errors import SipdValueError

__all__ = ["Clock", "DnsCache", "clock_function"]

#: What may tell the time: ``reactor``/``task.Clock`` or a plain callable.
Clock = Callable[[], float] | IReactorTime


def clock_function(clock: Clock) -> Callable[[], float]:
    """``clock`` as a callable returning seconds."""
    if IReactorTime.providedBy(clock):
        return clock.seconds
    if not callable(clock):
        raise SipdValueError(f"a clock must be callable or provide IReactorTime, not {clock!r}")
    return clock


class DnsCache:
    """Answers by query, each until its expiry time on the injected clock."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_entries: int = 1024,
        negative_ttl: float = 30.0,
        max_ttl: float = 86400.0,
    ) -> None:
        if max_entries < 1:
            raise SipdValueError(f"a DNS cache needs room for one answer, not {max_entries}")
        if negative_ttl < 0 or max_ttl < 0:
            raise SipdValueError("DNS cache TTLs cannot be negative")
        self._now = clock_function(clock)
        self.max_entries = max_entries
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self._entries: OrderedDict[Query, tuple[float, Answer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, query: object) -> bool:
        return isinstance(query, Query) and self.get(query) is not None

    def get(self, query: Query) -> Answer | None:
        """The cached answer with ``ttl`` set to what is left of it, or None."""
        entry = self._entries.get(query)
        if entry is None:
            return None
        expires, answer = entry
        left = expires - self._now()
        if left <= 0:
            del self._entries[query]
            return None
        self._entries.move_to_end(query)
        return dataclasses.replace(answer, ttl=left)

    def ttl_for(self, answer: Answer) -> float:
        """How long ``answer`` would be kept (0: not at all)."""
        if answer.error is not None:
            return 0.0
        if answer.negative:
            if answer.ttl is None:
                return self.negative_ttl
            return max(0.0, min(answer.ttl, self.negative_ttl))
        return min(answer.valid_for, self.max_ttl)

    def put(self, answer: Answer) -> Answer:
        """Keep ``answer`` for its TTL; return it with the TTL the cache applies.

        The returned answer is what the caller should use: a negative answer
        without an SOA gets the cache's negative TTL, so the RFC 3263 chain's
        smallest TTL accounts for it.
        """
        ttl = self.ttl_for(answer)
        self._entries.pop(answer.query, None)
        if answer.error is not None:
            return answer
        answer = dataclasses.replace(answer, ttl=ttl)
        if ttl <= 0:
            return answer
        if len(self._entries) >= self.max_entries:
            self.purge()
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[answer.query] = (self._now() + ttl, answer)
        return answer

    def purge(self) -> int:
        """Drop the expired answers; return how many went."""
        now = self._now()
        expired = [q for q, (expires, _) in self._entries.items() if expires <= now]
        for query in expired:
            del self._entries[query]
        return len(expired)

    def clear(self) -> None:
        """Forget everything (the nameservers changed)."""
        self._entries.clear()
