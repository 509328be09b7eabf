"""ICMP errors from Linux's socket error queue (sipd/media/icmp.py), without sockets.

The ``sock_extended_err`` parser is fed bytes laid out as ``<linux/errqueue.h>``
says; :class:`ErrorQueuePort` is driven with a fake socket and a fake reactor,
so every path that must drain the queue (a refused read, a wake-up with
nothing to read, ``POLLERR`` taken for a hang-up) is checked without waiting
for a real ICMP message. tests/integration/test_icmp.py does it for real.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from sipd.media.icmp import (
    DRAIN_EVERY,
    IP_RECVERR,
    IPV6_RECVERR,
    MAX_ERRORS_PER_DRAIN,
    MSG_ERRQUEUE,
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    ErrorQueuePort,
    listen_udp,
    parse_extended_error,
    parse_sockaddr,
    unreachable_errors,
)

DEAD = ("192.0.2.7", 40002)
SOL_IP = 0
SOL_IPV6 = socket.IPPROTO_IPV6


def sockaddr_in(host: str, port: int) -> bytes:
    """A ``struct sockaddr_in``: family (host order), port (network order), address, zeros."""
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_pton(socket.AF_INET, host)
        + bytes(8)
    )


def sockaddr_in6(host: str, port: int) -> bytes:
    """A ``struct sockaddr_in6``: family, port, flow info, address, scope id."""
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!H", port)
        + bytes(4)
        + socket.inet_pton(socket.AF_INET6, host)
        + bytes(4)
    )


def extended_err(
    ee_errno: int, origin: int, ee_type: int, code: int, offender: bytes = b"", info: int = 0
) -> bytes:
    """A ``struct sock_extended_err`` (u32 errno, u8 origin/type/code/pad, u32 info/data)."""
    return struct.pack("=IBBBBII", ee_errno, origin, ee_type, code, 0, info, 0) + offender


def port_unreachable_v4(offender: str = "192.0.2.7") -> tuple[int, int, bytes]:
    """The control message Linux attaches to an ICMP port unreachable (IPv4)."""
    data = extended_err(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3, sockaddr_in(offender, 0))
    return (SOL_IP, IP_RECVERR, data)


# -- parsing -----------------------------------------------------------------------------------
def test_an_ipv4_port_unreachable_is_parsed_with_its_offender() -> None:
    """Bytes as recvmsg(MSG_ERRQUEUE) returns them for ICMP type 3 code 3 from 192.0.2.7."""
    error = parse_extended_error(port_unreachable_v4()[2])
    assert (error.errno, error.origin, error.type, error.code) == (
        errno.ECONNREFUSED,
        SO_EE_ORIGIN_ICMP,
        3,
        3,
    )
    assert error.offender == ("192.0.2.7", 0)
    assert error.port_unreachable


def test_an_icmpv6_port_unreachable_is_parsed() -> None:
    """ICMPv6 says "port unreachable" with type 1 (destination unreachable) code 4."""
    data = extended_err(
        errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP6, 1, 4, sockaddr_in6("2001:db8::7", 0)
    )
    error = parse_extended_error(data)
    assert error.port_unreachable
    assert error.offender == ("2001:db8::7", 0)


@pytest.mark.parametrize(
    ("origin", "ee_type", "code", "ee_errno"),
    [
        (SO_EE_ORIGIN_ICMP, 3, 1, errno.EHOSTUNREACH),  # host unreachable
        (SO_EE_ORIGIN_ICMP, 3, 4, errno.EMSGSIZE),  # fragmentation needed
        (SO_EE_ORIGIN_ICMP, 11, 0, errno.EHOSTUNREACH),  # time exceeded
        (SO_EE_ORIGIN_ICMP6, 1, 3, errno.EHOSTUNREACH),  # ICMPv6 address unreachable
        (SO_EE_ORIGIN_ICMP6, 3, 4, errno.ECONNREFUSED),  # ICMPv4's numbers mean nothing in v6
        (1, 0, 0, errno.EMSGSIZE),  # SO_EE_ORIGIN_LOCAL: our own path MTU
    ],
)
def test_other_errors_are_not_port_unreachable(
    origin: int, ee_type: int, code: int, ee_errno: int
) -> None:
    """Only "nothing listens at that port" is evidence that the peer's process is gone."""
    assert not parse_extended_error(extended_err(ee_errno, origin, ee_type, code)).port_unreachable


def test_a_truncated_extended_error_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        parse_extended_error(bytes(15))


def test_an_error_without_an_offender_address_parses() -> None:
    error = parse_extended_error(extended_err(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3))
    assert error.offender is None and error.port_unreachable


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (sockaddr_in("198.51.100.1", 5004), ("198.51.100.1", 5004)),
        (sockaddr_in6("::1", 5005), ("::1", 5005)),
        (b"", None),
        (sockaddr_in("198.51.100.1", 5004)[:6], None),
        (struct.pack("=H", socket.AF_UNIX) + bytes(14), None),
    ],
)
def test_sockaddrs_are_read_with_the_port_in_network_order(
    data: bytes, expected: tuple[str, int] | None
) -> None:
    assert parse_sockaddr(data) == expected


def test_only_recverr_messages_that_say_port_unreachable_are_taken() -> None:
    """Other control messages, malformed ones and other ICMP errors are skipped."""
    host_unreachable = extended_err(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP, 3, 1)
    v6 = extended_err(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP6, 1, 4)
    ancdata = [
        (SOL_IP, 1, b"\x00" * 4),  # IP_TOS, say
        (SOL_IP, IP_RECVERR, b"short"),
        (SOL_IP, IP_RECVERR, host_unreachable),
        port_unreachable_v4(),
        (SOL_IPV6, IPV6_RECVERR, v6),
    ]
    found = list(unreachable_errors(ancdata))
    assert [(e.origin, e.type, e.code) for e in found] == [
        (SO_EE_ORIGIN_ICMP, 3, 3),
        (SO_EE_ORIGIN_ICMP6, 1, 4),
    ]


# -- the port, on a fake socket -------------------------------------------------------------------
class FakeSocket:
    """Plays the kernel: ``reads`` are what recvfrom gives (datagrams or errors, then
    EAGAIN); ``errors`` the error queue; ``so_error`` the pending socket error."""

    def __init__(self) -> None:
        self.reads: list[tuple[bytes, tuple[str, int]] | OSError] = []
        self.errors: list[tuple[list[tuple[int, int, bytes]], Any] | OSError] = []
        self.so_error = 0
        self.recvmsg_calls = 0

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        if not self.reads:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        item = self.reads.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def recvmsg(self, bufsize: int, ancbufsize: int, flags: int) -> tuple[Any, ...]:
        assert flags == MSG_ERRQUEUE
        self.recvmsg_calls += 1
        if not self.errors:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        item = self.errors.pop(0)
        if isinstance(item, OSError):
            raise item
        ancdata, addr = item
        return b"x", ancdata, socket.MSG_ERRQUEUE, addr

    def getsockopt(self, level: int, option: int) -> int:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR)
        pending, self.so_error = self.so_error, 0
        return pending

    def refused(self, addr: tuple[str, int] = DEAD) -> None:
        """An ICMP port unreachable for a datagram we sent to ``addr`` is queued."""
        self.errors.append(([port_unreachable_v4()], addr))


class FakeReactor:
    def __init__(self) -> None:
        self.readers: list[Any] = []

    def addReader(self, reader: Any) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: Any) -> None:
        if reader in self.readers:
            self.readers.remove(reader)


class Recorder:
    """A protocol that records datagrams and unreachable addresses."""

    def __init__(self, *, fail: bool = False) -> None:
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self.unreachables: list[tuple[str, int]] = []
        self.fail = fail

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.append((data, addr))

    def unreachable(self, addr: tuple[str, int]) -> None:
        self.unreachables.append(addr)
        if self.fail:
            raise RuntimeError("the protocol broke")


def make_port(protocol: Any = None) -> tuple[ErrorQueuePort, FakeSocket, FakeReactor, Any]:
    reactor = FakeReactor()
    protocol = protocol if protocol is not None else Recorder()
    port = ErrorQueuePort(0, protocol, "127.0.0.1", 8192, reactor)
    sock = FakeSocket()
    port.socket = sock
    port.connected = 1
    port.error_queue = True
    return port, sock, reactor, protocol


PEER = ("192.0.2.9", 5004)


def test_a_refused_read_drains_the_queue_then_reads_the_datagrams_behind_it() -> None:
    """Linux reports a pending ICMP error before the data queued after it: the error queue
    is read (the protocol hears of the address) and the datagrams are still delivered."""
    port, sock, _, protocol = make_port()
    sock.reads = [ConnectionRefusedError(errno.ECONNREFUSED, "refused"), (b"a", PEER), (b"b", PEER)]
    sock.refused()
    port.doRead()
    assert protocol.unreachables == [DEAD]
    assert protocol.datagrams == [(b"a", PEER), (b"b", PEER)]
    assert port.unreachable_count == 1


def test_a_wake_up_with_nothing_to_read_drains_the_queue() -> None:
    """select() and asyncio report a socket with queued errors as readable: without reading
    the queue the loop would wake for the same error forever."""
    port, sock, _, protocol = make_port()
    sock.refused()
    sock.refused(("192.0.2.8", 40004))
    port.doRead()
    assert protocol.unreachables == [DEAD, ("192.0.2.8", 40004)]
    assert sock.errors == []


def test_reading_datagrams_costs_no_error_queue_call_until_every_nth_wake_up() -> None:
    """The hot path (datagrams, then EAGAIN) makes no extra system call; every
    DRAIN_EVERY-th such wake-up reads the queue anyway, in case a send took the
    pending error that would have told us."""
    port, sock, _, protocol = make_port()
    for _ in range(DRAIN_EVERY - 1):
        sock.reads = [(b"rtp", PEER)]
        port.doRead()
    assert sock.recvmsg_calls == 0
    sock.refused()
    sock.reads = [(b"rtp", PEER)]
    port.doRead()
    assert protocol.unreachables == [DEAD]
    assert len(protocol.datagrams) == DRAIN_EVERY


def test_one_wake_up_reads_a_bounded_number_of_errors() -> None:
    port, sock, _, protocol = make_port()
    for _ in range(MAX_ERRORS_PER_DRAIN + 10):
        sock.refused()
    port.doRead()
    assert len(protocol.unreachables) == MAX_ERRORS_PER_DRAIN
    port.doRead()
    assert len(protocol.unreachables) == MAX_ERRORS_PER_DRAIN + 10


def test_nothing_raises_into_the_reactor() -> None:
    """A protocol that fails on unreachable(), a queue that fails to read, an error that is
    no port unreachable: logged or counted, never raised."""
    port, sock, _, protocol = make_port(Recorder(fail=True))
    sock.refused()
    host_unreachable = extended_err(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP, 3, 1)
    sock.errors.append(([(SOL_IP, IP_RECVERR, host_unreachable)], DEAD))
    sock.errors.append(OSError(errno.ENOMEM, "Cannot allocate memory"))
    sock.refused()
    port.doRead()
    assert protocol.unreachables == [DEAD]
    assert (port.unreachable_count, port.other_errors) == (1, 1)
    port.doRead()  # the rest of the queue on the next wake-up
    assert protocol.unreachables == [DEAD, DEAD]


def test_a_protocol_without_unreachable_still_gets_its_queue_drained() -> None:
    class Plain:
        def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
            pass

    port, sock, _, _ = make_port(Plain())
    sock.refused()
    port.doRead()
    assert sock.errors == [] and port.unreachable_count == 1


def test_pollerr_alone_drains_the_queue_and_keeps_reading() -> None:
    """epoll and poll report an error-only socket as POLLERR without POLLIN, which Twisted
    takes for a hang-up: it stops reading and calls readConnectionLost. The port drains
    the queue and reads on instead of closing its socket."""
    port, sock, reactor, protocol = make_port()
    lost: list[Failure] = []
    port.connectionLost = lost.append  # type: ignore[method-assign,assignment]
    sock.refused()
    port.readConnectionLost(Failure(ConnectionDone()))
    assert protocol.unreachables == [DEAD]
    assert reactor.readers == [port] and lost == []
    # A pending error the kernel could not queue: cleared, reading resumes.
    reactor.readers.clear()
    sock.so_error = errno.ECONNREFUSED
    port.readConnectionLost(Failure(ConnectionDone()))
    assert reactor.readers == [port] and lost == [] and sock.so_error == 0


def test_a_hang_up_with_no_error_pending_closes_the_port_as_twisted_would() -> None:
    port, _, reactor, _ = make_port()
    lost: list[Failure] = []
    port.connectionLost = lost.append  # type: ignore[method-assign,assignment]
    port.readConnectionLost(Failure(ConnectionDone()))
    assert reactor.readers == [] and len(lost) == 1


def test_listen_udp_falls_back_to_listenudp_for_other_reactors() -> None:
    """A test's fake reactor (or a platform without the error queue) gets plain listenUDP."""
    calls: list[tuple[Any, ...]] = []

    class Fake:
        def listenUDP(self, port: int, protocol: Any, interface: str, maxPacketSize: int) -> str:
            calls.append((port, protocol, interface, maxPacketSize))
            return "listening"

    protocol = Recorder()
    assert listen_udp(Fake(), 4000, protocol, "127.0.0.1") == "listening"
    assert calls == [(4000, protocol, "127.0.0.1", 8192)]
