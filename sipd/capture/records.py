"""The records a capture is made of: SIP messages and RTP packets with their addresses.

Frozen and slotted: a call keeps a bounded list of them, and a record is
written to a pcap file or a HEP packet as it is, so it carries exactly what
the wire had (the bytes, the addresses, the transport, the time).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Direction", "RtpRecord", "WireMessage"]

Address = tuple[str, int]


class Direction(enum.StrEnum):
    """Which way a message or packet went, seen from sipd."""

    IN = "in"
    OUT = "out"


@dataclass(frozen=True, slots=True)
class WireMessage:
    """One SIP message as sent or received.

    ``time`` is the wall clock (Unix seconds, for a capture's timestamps);
    ``local`` is our address, ``remote`` the peer's; ``transport`` is "udp",
    "tcp" or "tls" (a TLS message is recorded as the plain text inside TLS).
    ``call_id`` is the message's Call-ID when it could be read, else "".
    """

    time: float
    direction: Direction
    transport: str
    local: Address
    remote: Address
    data: bytes
    call_id: str = ""

    @property
    def source(self) -> Address:
        return self.remote if self.direction is Direction.IN else self.local

    @property
    def destination(self) -> Address:
        return self.local if self.direction is Direction.IN else self.remote


@dataclass(frozen=True, slots=True)
class RtpRecord:
    """One RTP or RTCP datagram of a call, as sent or received (after SRTP, if any)."""

    time: float
    direction: Direction
    local: Address
    remote: Address
    data: bytes

    @property
    def source(self) -> Address:
        return self.remote if self.direction is Direction.IN else self.local

    @property
    def destination(self) -> Address:
        return self.local if self.direction is Direction.IN else self.remote
