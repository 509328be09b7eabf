"""ICMP "port unreachable" for the RTP and RTCP sockets, read from Linux's error queue.

When the peer of a call has gone away (its process died), every RTP packet we
send it comes back as ICMP port unreachable, and that is better evidence than
silence that the call is over. An unconnected UDP socket hears nothing of it:
Linux reports ICMP errors on such a socket only with ``IP_RECVERR`` set, and
then queues them on the socket's *error queue*, read with
``recvmsg(..., MSG_ERRQUEUE)``; Twisted's ``udp.Port`` neither sets the option
nor reads that queue (and swallows ``ECONNREFUSED`` on unconnected sockets).

:class:`ErrorQueuePort` is a ``udp.Port`` that does both and tells its
protocol ``unreachable(addr)`` (``addr``: where the refused datagram was
going) when the protocol has that method. An error left in the queue keeps
the socket in error for ``poll``/``epoll``, which is why the queue is drained
on every path that can see it:

* ``select`` (and asyncio) report the socket readable: :meth:`ErrorQueuePort.doRead`
  finds no datagram, or ``recvfrom`` fails with ``ECONNREFUSED`` (the pending
  error is reported before the data behind it), and drains the queue. Without
  that the loop would wake for the same error forever.
* ``epoll`` and ``poll`` report ``POLLERR`` without ``POLLIN``, which Twisted
  takes for a closed descriptor: it stops reading and calls
  ``readConnectionLost`` (the port declares itself half-closeable for this).
  The port drains the queue and reads on instead of closing the socket.
* Datagrams arriving all the time may hide the error (a send consumed the
  socket's pending error first): the queue is also read every
  :data:`DRAIN_EVERY` wake-ups.

Reading is bounded (:data:`MAX_ERRORS_PER_DRAIN` errors a wake-up) and never
raises into the reactor. Elsewhere (not Linux, or the reactor is not a
``PosixReactorBase``, e.g. a test's fake) :func:`listen_udp` is plain
``reactor.listenUDP``. Parsing the kernel's ``sock_extended_err`` is pure
(:func:`parse_extended_error`, :func:`unreachable_errors`).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet import base, udp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHalfCloseableDescriptor, IListeningPort
from twisted.internet.posixbase import PosixReactorBase
from twisted.python.failure import Failure
from zope.interface import implementer

from sipd.logs import Logger

__all__ = [
    "DRAIN_EVERY",
    "MAX_ERRORS_PER_DRAIN",
    "ErrorQueuePort",
    "ExtendedError",
    "listen_udp",
    "parse_extended_error",
    "parse_sockaddr",
    "unreachable_errors",
]

_log = Logger()

#: Linux constants Python 3.11 does not export everywhere (``<linux/in.h>``,
#: ``<linux/in6.h>``, ``<linux/socket.h>``, ``<linux/errqueue.h>``).
IP_RECVERR = int(getattr(socket, "IP_RECVERR", 11))
IPV6_RECVERR = int(getattr(socket, "IPV6_RECVERR", 25))
MSG_ERRQUEUE = int(getattr(socket, "MSG_ERRQUEUE", 0x2000))
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_SOL_IP = int(getattr(socket, "SOL_IP", 0))
_SOL_IPV6 = int(socket.IPPROTO_IPV6)

#: Errors read from the queue in one wake-up; the rest wait for the next one.
MAX_ERRORS_PER_DRAIN = 64
#: Read the error queue at least once every this many wake-ups that found data.
DRAIN_EVERY = 64
#: The refused datagram's head is copied back with each error; we need none of it.
_PAYLOAD_BUFSIZE = 1
_ANCILLARY_BUFSIZE = 1024  # one sock_extended_err with its sockaddr: under 100 bytes

#: ``struct sock_extended_err``: ee_errno, ee_origin, ee_type, ee_code, ee_pad,
#: ee_info, ee_data (host byte order), followed by the offender's sockaddr.
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_IGNORED_READ = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


@dataclass(frozen=True, slots=True)
class ExtendedError:
    """One ``sock_extended_err`` from the error queue."""

    errno: int
    origin: int
    type: int
    code: int
    info: int
    data: int
    #: Who sent the ICMP message (a router or the peer's host), if the kernel says.
    offender: tuple[str, int] | None = None

    @property
    def port_unreachable(self) -> bool:
        """ICMP (type 3 code 3) or ICMPv6 (type 1 code 4) port unreachable: nothing
        listens at the address the datagram went to."""
        if self.origin == SO_EE_ORIGIN_ICMP:
            return self.type == 3 and self.code == 3
        if self.origin == SO_EE_ORIGIN_ICMP6:
            return self.type == 1 and self.code == 4
        return False


def parse_sockaddr(data: bytes) -> tuple[str, int] | None:
    """``(host, port)`` of a ``sockaddr_in`` or ``sockaddr_in6``; None for anything else.

    The family is in host byte order, the port in network order.
    """
    if len(data) < 2:
        return None
    (family,) = struct.unpack_from("=H", data)
    if family == socket.AF_INET and len(data) >= 8:
        return socket.inet_ntop(socket.AF_INET, data[4:8]), struct.unpack_from("!H", data, 2)[0]
    if family == socket.AF_INET6 and len(data) >= 24:
        return socket.inet_ntop(socket.AF_INET6, data[8:24]), struct.unpack_from("!H", data, 2)[0]
    return None


def parse_extended_error(data: bytes) -> ExtendedError:
    """The ``sock_extended_err`` of an ``IP_RECVERR``/``IPV6_RECVERR`` control message.

    Raises ``ValueError`` when ``data`` is shorter than the structure.
    """
    if len(data) < _EXTENDED_ERR.size:
        raise ValueError(
            f"sock_extended_err needs {_EXTENDED_ERR.size} bytes, the control message has "
            f"{len(data)}"
        )
    ee_errno, origin, ee_type, code, _pad, info, ee_data = _EXTENDED_ERR.unpack_from(data)
    return ExtendedError(
        errno=ee_errno,
        origin=origin,
        type=ee_type,
        code=code,
        info=info,
        data=ee_data,
        offender=parse_sockaddr(data[_EXTENDED_ERR.size :]),
    )


def unreachable_errors(ancdata: Iterable[tuple[int, int, bytes]]) -> Iterator[ExtendedError]:
    """The port-unreachable errors among ``recvmsg``'s control messages.

    An ``AF_INET6`` socket reports IPv4 errors (of a dual-stack socket) under
    ``IPV6_RECVERR`` too; malformed messages are skipped.
    """
    for level, kind, data in ancdata:
        if (level, kind) not in ((_SOL_IP, IP_RECVERR), (_SOL_IPV6, IPV6_RECVERR)):
            continue
        try:
            error = parse_extended_error(data)
        except ValueError:
            continue
        if error.port_unreachable:
            yield error


@implementer(IHalfCloseableDescriptor)
class ErrorQueuePort(udp.Port):
    """A ``udp.Port`` that reads ICMP errors and tells ``protocol.unreachable(addr)``.

    Made like ``reactor.listenUDP`` makes its ports (see :func:`listen_udp`).

    It binds and closes without ``udp.Port``'s two info-level log lines
    ("... starting on N", "(UDP Port N Closed)"): a call opens and closes two
    media ports, and at the daemon's default level those lines were four of
    every call's five log lines, formatted and written at each call's set-up
    and end. They are debug events here.
    """

    #: True once ``IP_RECVERR`` is set: only then is there a queue to read.
    error_queue = False
    #: Port-unreachable errors reported to the protocol, and other errors read.
    unreachable_count = 0
    other_errors = 0
    _wakeups = 0

    def _bindSocket(self) -> None:
        if self._preexistingSocket is None:
            try:
                sock = self.createInternetSocket()
                sock.bind((self.interface, self.port))
            except OSError as exc:
                raise CannotListenError(self.interface, self.port, exc) from exc  # type: ignore[no-untyped-call]
        else:  # adopted (adoptDatagramPort)
            sock, self._preexistingSocket = self._preexistingSocket, None
        self._realPortNumber = sock.getsockname()[1]
        _log.debug("media port {port} open", port=self._realPortNumber)
        self.connected = 1
        self.socket = sock
        self.fileno = sock.fileno  # type: ignore[method-assign]
        self.error_queue = _enable_error_queue(sock, self.addressFamily)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Close as ``udp.Port`` does (protocol stopped, socket closed,
        ``stopListening``'s Deferred fired), logging at debug level."""
        _log.debug("media port {port} closed", port=self._realPortNumber)
        self._realPortNumber = None
        self.maxThroughput = -1
        base.BasePort.connectionLost(self, reason)  # type: ignore[no-untyped-call]
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno
        stopped = self.__dict__.pop("d", None)
        if stopped is not None:
            stopped.callback(None)

    def doRead(self) -> None:
        """Read datagrams as ``udp.Port`` does, and the error queue when it may hold errors."""
        if not self.error_queue:
            super().doRead()  # type: ignore[no-untyped-call]
            return
        read = 0
        drained = False
        sock = self.socket
        protocol = self.protocol
        while read < self.maxThroughput:
            try:
                data, addr = sock.recvfrom(self.maxPacketSize)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and not drained:
                    # The pending ICMP error comes before the datagrams queued
                    # behind it: take the errors, then read on.
                    self.drain_errors()
                    drained = True
                    continue
                if exc.errno in _IGNORED_READ or exc.errno == errno.ECONNREFUSED:
                    self._wakeups += 1
                    if not drained and (read == 0 or self._wakeups >= DRAIN_EVERY):
                        # Woken with nothing to read: an error is what woke us.
                        self.drain_errors()
                    return
                raise  # as udp.Port does: the reactor closes the port
            read += len(data)
            if self.addressFamily == socket.AF_INET6:
                addr = addr[:2]
            try:
                protocol.datagramReceived(data, addr)
            except BaseException:
                _log.failure("datagram from {addr} broke its protocol", addr=addr)

    def readConnectionLost(self, reason: Failure) -> None:
        """``epoll``/``poll`` saw ``POLLERR`` alone and Twisted stopped reading: drain and resume.

        Only a socket that really had an error pending is kept; anything else is
        treated as Twisted would (the port is closed).
        """
        if self.error_queue and self.connected:
            pending = self.drain_errors()
            with contextlib.suppress(OSError):
                # A pending error whose queue entry the kernel could not store.
                pending += bool(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            if pending:
                self.startReading()  # type: ignore[no-untyped-call]
                return
        self.connectionLost(reason)

    def drain_errors(self) -> int:
        """Read up to :data:`MAX_ERRORS_PER_DRAIN` errors; tell the protocol of unreachable ports.

        Returns how many errors were read. Never raises.
        """
        self._wakeups = 0
        count = 0
        sock = self.socket
        notify = getattr(self.protocol, "unreachable", None)
        while count < MAX_ERRORS_PER_DRAIN:
            try:
                _data, ancdata, _flags, addr = sock.recvmsg(
                    _PAYLOAD_BUFSIZE, _ANCILLARY_BUFSIZE, MSG_ERRQUEUE
                )
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                _log.debug("reading the error queue of {port} failed: {exc}", port=self, exc=exc)
                break
            count += 1
            if next(unreachable_errors(ancdata), None) is None:
                self.other_errors += 1
                continue
            self.unreachable_count += 1
            if notify is None or not isinstance(addr, tuple) or len(addr) < 2:
                continue
            try:
                notify((addr[0], addr[1]))
            except Exception:
                _log.failure("{protocol}.unreachable({addr}) failed", protocol=notify, addr=addr)
        return count


def _enable_error_queue(sock: socket.socket, family: int) -> bool:
    """Set ``IP_RECVERR`` (and ``IPV6_RECVERR`` on an IPv6 socket); False where it cannot be."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(_SOL_IPV6, IPV6_RECVERR, 1)
            with contextlib.suppress(OSError):  # IPv4 errors of a dual-stack socket
                sock.setsockopt(_SOL_IP, IP_RECVERR, 1)
        else:
            sock.setsockopt(_SOL_IP, IP_RECVERR, 1)
    except OSError as exc:
        _log.debug("no ICMP errors on this UDP socket: {exc}", exc=exc)
        return False
    return True


def listen_udp(
    reactor: Any, port: int, protocol: Any, interface: str = "", max_packet_size: int = 8192
) -> IListeningPort:
    """``reactor.listenUDP``, with an :class:`ErrorQueuePort` where the reactor drives one.

    Raises ``CannotListenError`` as ``listenUDP`` does.
    """
    if sys.platform.startswith("linux") and isinstance(reactor, PosixReactorBase):
        listening = ErrorQueuePort(  # type: ignore[no-untyped-call]
            port, protocol, interface, max_packet_size, reactor
        )
        listening.startListening()  # type: ignore[no-untyped-call]
        return listening
    result: IListeningPort = reactor.listenUDP(
        port, protocol, interface=interface, maxPacketSize=max_packet_size
    )
    return result
