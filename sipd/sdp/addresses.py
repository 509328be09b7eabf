"""Which ``c=`` addresses sipd can send media to.

RFC 8866 §5.7 allows an IP address or a fully qualified domain name in
``c=``. sipd sends RTP straight to the socket, 50 times a second, and never
resolves names on that path (a lookup per packet would block the reactor),
so it only sends to IP literals. A well-formed domain name is accepted in
negotiation but gives the stream no remote address until the peer's first
packet shows where it is (symmetric RTP latching); anything else in ``c=``
(a NUL, spaces, a multicast ``/ttl``, an empty address) is not an address at
all and fails the offer or answer (488).
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["is_ip_address", "is_usable_connection_address"]

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def is_ip_address(address: str) -> bool:
    """True for an IPv4 or IPv6 literal (no brackets, no ``/ttl``)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _is_domain_name(address: str) -> bool:
    name = address[:-1] if address.endswith(".") else address
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def is_usable_connection_address(address: str) -> bool:
    """True for an IP literal or a well-formed domain name: what a ``c=`` may carry."""
    return is_ip_address(address) or _is_domain_name(address)
