"""How many bytes of datagrams wait unread in a UDP socket (for overload control).

The kernel queues what arrives until the event loop reads it. When that
queue keeps growing the process is behind, however busy or idle its timers
look: :class:`~sipd.session.overload.OverloadControl` refuses new INVITEs
while it is longer than ``overload_max_backlog``. Linux reports the queue's
memory with ``SO_MEMINFO`` (about 1.3 kB for a 500-byte datagram); where the
OS cannot say, there is no reader and that check is off.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable

__all__ = ["SO_MEMINFO", "receive_backlog"]

#: ``getsockopt(SOL_SOCKET, SO_MEMINFO)`` (Linux >= 3.9); its first value is
#: the receive queue's memory (``SK_MEMINFO_RMEM_ALLOC``).
SO_MEMINFO = int(getattr(socket, "SO_MEMINFO", 55))
_MEMINFO_SIZE = 9 * 4


def receive_backlog(listening: object) -> Callable[[], int] | None:
    """A function giving the bytes queued unread for ``listening``'s socket, or None.

    ``listening`` is what ``reactor.listenUDP`` returned (its ``socket``
    attribute is read); None where ``SO_MEMINFO`` is not available.
    """
    sock = getattr(listening, "socket", None)
    if not sys.platform.startswith("linux") or not isinstance(sock, socket.socket):
        return None

    def queued() -> int:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO_SIZE)
        except OSError:
            return 0
        value: int = struct.unpack_from("I", raw)[0]
        return value

    try:
        sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO_SIZE)
    except OSError:
        return None
    return queued
