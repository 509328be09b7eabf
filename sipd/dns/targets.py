"""Where a request may go: :class:`Target`, the ordered :class:`Resolution`, its cursor.

RFC 3263 §4.3 leaves the failover loop to the caller: "if a transport
error, a timeout or a 503 comes back, try the next target". The
:class:`TargetCursor` is that loop's memory: it hands out the targets in
order, records why each failed, and says when none is left, so the caller
can end the request with one message that lists every attempt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sipd.dns.records import Destination, Transport
from sipd.errors import SipdValueError

__all__ = ["Resolution", "Target", "TargetCursor"]


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send a request to: an IP address, a port and a transport.

    ``hostname`` is the DNS name the address came from (the SRV target or
    the URI host): the name to log, and the one a TLS transport checks the
    certificate against.
    """

    host: str
    port: int
    transport: Transport
    hostname: str = ""

    @property
    def addr(self) -> tuple[str, int]:
        """``(host, port)``, ready for a socket."""
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        via = f" ({self.hostname})" if self.hostname and self.hostname != self.host else ""
        return f"{host}:{self.port}/{self.transport.via_name}{via}"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The result of locating one destination: targets to try in order.

    ``ttl`` is the smallest TTL of every answer on the chain that produced
    the list (NAPTR, SRV, A/AAAA, negative answers included): until then
    the same lookup gives the same targets (in a freshly weighted SRV order),
    so a registration may keep the list that long. ``math.inf`` for an IP
    literal, 0 when some part of the chain may not be cached.
    """

    destination: Destination
    targets: tuple[Target, ...]
    ttl: float = math.inf

    def __post_init__(self) -> None:
        if not self.targets:
            raise SipdValueError(f"a resolution of {self.destination} needs at least one target")

    @property
    def first(self) -> Target:
        """The target to try first."""
        return self.targets[0]

    def cursor(self) -> TargetCursor:
        """A fresh :class:`TargetCursor` over these targets."""
        return TargetCursor(self.targets)


class TargetCursor:
    """Hands out targets in turn and remembers why each one failed.

    The caller's loop for one request (RFC 3263 §4.3)::

        cursor = resolution.cursor()
        target = cursor.next()          # the first target
        ...send; on a transport error, a timeout or a 503:
        target = cursor.fail("503 Service Unavailable")   # the next one, or None
        if target is None: give up with cursor.summary()

    ACK and CANCEL for an INVITE go to :attr:`current` (RFC 3263 §4: the
    same target as the request they belong to), never to a new one.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = tuple(targets)
        self._index = -1
        #: Every target that failed, with the reason, oldest first.
        self.failures: list[tuple[Target, str]] = []

    def __iter__(self) -> Iterator[Target]:
        """The targets not handed out yet (advancing the cursor)."""
        while (target := self.next()) is not None:
            yield target

    def next(self) -> Target | None:
        """Move to the next target and return it; None when all were handed out."""
        if self._index < len(self._targets):
            self._index += 1
        return self.current

    @property
    def current(self) -> Target | None:
        """The target handed out last (None before :meth:`next` and after the end)."""
        if 0 <= self._index < len(self._targets):
            return self._targets[self._index]
        return None

    def fail(self, reason: str) -> Target | None:
        """Record that :attr:`current` failed because of ``reason``; return the next target.

        Calling it before :meth:`next` (nothing handed out yet) raises: there is
        no attempt to blame.
        """
        current = self.current
        if current is None:
            raise SipdValueError("TargetCursor.fail() without a current target: call next()")
        self.failures.append((current, reason))
        return self.next()

    @property
    def remaining(self) -> int:
        """How many targets :meth:`next` can still hand out."""
        return max(0, len(self._targets) - self._index - 1)

    @property
    def exhausted(self) -> bool:
        """Every target was handed out and the cursor moved past the last one."""
        return self._index >= len(self._targets)

    def summary(self) -> str:
        """Every failed attempt on one line, for the final error message."""
        if not self.failures:
            return "no target failed"
        return "; ".join(f"{target}: {reason}" for target, reason in self.failures)
