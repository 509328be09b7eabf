"""RTP port allocation from the configured range.

RTP takes an even port and RTCP the odd port above it (RFC 3550 §11). Ports
are handed out round-robin so a port just released is not reused at once,
which keeps late packets of an old call out of a new one.
"""

from __future__ import annotations

from sipd.errors import CallError, SipdError

__all__ = ["PortAllocator", "PortsExhausted"]


class PortsExhausted(CallError):
    """No RTP/RTCP port pair of the configured range could be bound.

    Every pair is either carrying one of our calls or refused by the OS
    (another program holds it). A call that needs one is refused at once:
    an incoming INVITE gets ``503`` with ``Retry-After``, ``call()`` fails.
    """

    status = 503


class PortAllocator:
    """Hands out even RTP ports (with the odd RTCP port above) from a range."""

    def __init__(self, low: int, high: int) -> None:
        first = low + (low % 2)
        self._ports = list(range(first, high, 2))  # port+1 must fit too
        if not self._ports:
            raise SipdError(f"media port range {low}-{high} holds no RTP/RTCP pair")
        self._next = 0
        self._in_use: set[int] = set()
        self.low, self.high = low, high

    @property
    def capacity(self) -> int:
        """How many calls the range can carry at once."""
        return len(self._ports)

    @property
    def in_use(self) -> int:
        """Port pairs currently allocated."""
        return len(self._in_use)

    def allocate(self, skip: set[int] | None = None) -> int:
        """The next free even port; ``skip`` lists ports found busy by the OS."""
        n = len(self._ports)
        for i in range(n):
            port = self._ports[(self._next + i) % n]
            if port not in self._in_use and (skip is None or port not in skip):
                self._next = (self._next + i + 1) % n
                self._in_use.add(port)
                return port
        raise PortsExhausted(
            f"all {n} RTP port pairs of {self.low}-{self.high} are in use; "
            "widen media_port_min/media_port_max or end some calls"
        )

    def release(self, port: int) -> None:
        """Give a port back (no error if it was not allocated)."""
        self._in_use.discard(port)
