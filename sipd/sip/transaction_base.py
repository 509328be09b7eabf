"""What the transaction layer and its transactions share: addresses and timer values.

Kept apart from :mod:`sipd.sip.transaction` so that the client and server
transaction modules can use them without importing the layer that imports
them (no import cycle); :mod:`sipd.sip.transaction` re-exports every name.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "DEFAULT_TIMERS",
    "UDP_SIZE_LIMIT",
    "Addr",
    "Flow",
    "Route",
    "TimerConfig",
    "is_reliable",
    "transport_of",
]

#: RFC 3261 §18.1.1: a request larger than this (path MTU 1500 unknown, minus 200)
#: that would go over UDP by default goes over TCP instead.
UDP_SIZE_LIMIT = 1300

#: A transport address: host and port (UDP unless it is a :class:`Flow`).
Addr: TypeAlias = tuple[str, int]


class Flow(tuple[str, int]):
    """A (host, port) with a transport chosen on purpose: "tcp", "tls" or "udp".

    A tuple, so every layer that reads an address as ``host, port`` keeps
    working; the transport rides along for the few that must know it: the
    sender (which socket), the transactions (RFC 3261 §17: no retransmission
    and zero wait timers on a reliable transport) and the responses (§18.2.2:
    on the connection the request came on). A plain tuple is UDP by default,
    which a request over 1300 bytes leaves for TCP (RFC 3261 §18.1.1); a
    ``Flow`` with transport "udp" is UDP asked for by name (``;transport=udp``)
    and stays UDP whatever the size.
    """

    transport: str
    #: The name a TLS server's certificate must carry when it is not ``host``: the
    #: SIP domain a target was located for by DNS (RFC 5922 §4.2). None: ``host``.
    server_name: str | None

    def __new__(cls, host: str, port: int, transport: str, server_name: str | None = None) -> Flow:
        flow = super().__new__(cls, (host, port))
        flow.transport = transport
        flow.server_name = server_name
        return flow

    def __repr__(self) -> str:
        name = "" if self.server_name is None else f", server_name={self.server_name!r}"
        return f"Flow({self[0]!r}, {self[1]}, {self.transport!r}{name})"


def transport_of(addr: Addr) -> str:
    """``"udp"``, or the stream transport of a :class:`Flow`."""
    return addr.transport if isinstance(addr, Flow) else "udp"


def is_reliable(addr: Addr) -> bool:
    """True for an address reached over TCP or TLS (RFC 3261 §17's reliable transports)."""
    return isinstance(addr, Flow) and addr.transport != "udp"


class Route(tuple[str, int], metaclass=ABCMeta):
    """A destination whose address is chosen when the request is sent (RFC 3263 §4.3).

    What the session layer passes instead of an address when the next hop is
    a host name: the tuple holds that name and the URI's port (0 when none),
    for logs; the address comes from :attr:`target` once located. A client
    transaction given a ``Route`` waits for :meth:`when_located`, sends to
    :attr:`target`, and on a transport error, a timeout or a 503 asks
    :meth:`failed` for the next target and starts over with a new branch.
    The concrete class (:class:`sipd.session.target_set.TargetSet`) asks the
    DNS; this abstract base only names the interface, so the transaction layer needs
    no resolver.
    """

    @property
    @abstractmethod
    def target(self) -> Addr | None:
        """The address to send to now; None while locating or once location failed."""
        raise NotImplementedError

    @property
    @abstractmethod
    def error(self) -> Exception | None:
        """Why no target could be found (None while locating or once located)."""
        raise NotImplementedError

    @abstractmethod
    def when_located(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once :attr:`target` or :attr:`error` is known (now if it is)."""
        raise NotImplementedError

    @abstractmethod
    def failed(self, reason: str) -> Addr | None:
        """Record that :attr:`target` failed because of ``reason``; the next target, or None."""
        raise NotImplementedError

    @property
    @abstractmethod
    def failures(self) -> int:
        """How many targets failed so far."""
        raise NotImplementedError

    @abstractmethod
    def summary(self) -> str:
        """Every failed target with its reason, for the final error message."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The base timer values of RFC 3261 §17.1.1.1 and Table 4, in seconds.

    ``t1`` is the RTT estimate, ``t2`` the cap on non-INVITE and response
    retransmission intervals, ``t4`` how long a message can stay in the
    network. Every other timer derives from them; the properties name the
    RFC timer they stand for (UDP values).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError(f"need 0 < T1 <= T2 and T4 > 0, got {self}")

    @property
    def b(self) -> float:
        """Timer B: INVITE client transaction timeout, 64*T1."""
        return 64 * self.t1

    @property
    def d(self) -> float:
        """Timer D: wait in Completed for retransmitted finals (UDP: > 32 s).

        RFC 3261 asks for "at least 32 s", which covers a server using the
        default T1 (its Timer H is 64*T1 = 32 s); with a larger T1 the server
        retransmits longer, so D grows with it.
        """
        return max(32.0, 64 * self.t1)

    @property
    def f(self) -> float:
        """Timer F: non-INVITE client transaction timeout, 64*T1."""
        return 64 * self.t1

    @property
    def h(self) -> float:
        """Timer H: wait for the ACK to a non-2xx final, 64*T1."""
        return 64 * self.t1

    @property
    def i(self) -> float:
        """Timer I: absorb ACK retransmissions in Confirmed, T4 for UDP."""
        return self.t4

    @property
    def j(self) -> float:
        """Timer J: absorb non-INVITE request retransmissions, 64*T1 for UDP."""
        return 64 * self.t1

    @property
    def k(self) -> float:
        """Timer K: absorb non-INVITE response retransmissions, T4 for UDP."""
        return self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name for it
        """Timer L: server INVITE transaction in Accepted (RFC 6026), 64*T1."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """Timer M: client INVITE transaction in Accepted (RFC 6026), 64*T1."""
        return 64 * self.t1


#: RFC 3261 defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
DEFAULT_TIMERS = TimerConfig()
