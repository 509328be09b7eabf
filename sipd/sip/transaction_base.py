"""What the transaction layer and its transactions share: addresses and timer values.

Kept apart from :mod:`sipd.sip.transaction` so that the client and server
transaction modules can use them without importing the layer that imports
them (no import cycle); :mod:`sipd.sip.transaction` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["DEFAULT_TIMERS", "Addr", "Flow", "TimerConfig", "is_reliable", "transport_of"]

#: A transport address: host and port (UDP unless it is a :class:`Flow`).
Addr: TypeAlias = tuple[str, int]


class Flow(tuple[str, int]):
    """A (host, port) reached over a stream transport: ``transport`` is "tcp" or "tls".

    A tuple, so every layer that reads an address as ``host, port`` keeps
    working; the transport rides along for the few that must know it: the
    sender (which socket), the transactions (RFC 3261 §17: no retransmission
    and zero wait timers on a reliable transport) and the responses (§18.2.2:
    on the connection the request came on).
    """

    transport: str

    def __new__(cls, host: str, port: int, transport: str) -> Flow:
        flow = super().__new__(cls, (host, port))
        flow.transport = transport
        return flow

    def __repr__(self) -> str:
        return f"Flow({self[0]!r}, {self[1]}, {self.transport!r})"


def transport_of(addr: Addr) -> str:
    """``"udp"``, or the stream transport of a :class:`Flow`."""
    return addr.transport if isinstance(addr, Flow) else "udp"


def is_reliable(addr: Addr) -> bool:
    """True for an address reached over TCP or TLS (RFC 3261 §17's reliable transports)."""
    return isinstance(addr, Flow)


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
