"""ICMP port unreachable on real sockets: the error queue and the media timeout (issue 11).

When a call's peer dies, the RTP we keep sending it comes back from the kernel
as ICMP port unreachable; sipd's RTP/RTCP ports read that from Linux's socket
error queue (sipd/media/icmp.py) and end the call after
``media_unreachable_timeout`` seconds instead of the full ``media_timeout``.
Real UDP on 127.0.0.1 (loopback answers a datagram to a closed port with ICMP
at once); Linux only, where the error queue exists.
"""

from __future__ import annotations

import gc
import socket
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol

from sipd import CallFailed, CallState
from sipd.media.icmp import ErrorQueuePort, listen_udp
from tests.conftest import PeerFactory, eventually, free_udp_port, get_reactor, settle, within

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the socket error queue is Linux's"
)


class Recorder(DatagramProtocol):
    """Records datagrams and the addresses ICMP said are unreachable."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.unreachables: list[tuple[str, int]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.datagrams.append(data)

    def unreachable(self, addr: tuple[str, int]) -> None:
        self.unreachables.append(addr)


def count_wakeups(port: Any) -> list[int]:
    """Count the reactor's calls into ``port`` (reads and POLLERR hang-ups)."""
    calls = [0]
    for name in ("doRead", "readConnectionLost"):
        original = getattr(port, name)

        def counting(*args: Any, _original: Any = original) -> Any:
            calls[0] += 1
            return _original(*args)

        setattr(port, name, counting)
    return calls


@pytest_twisted.ensureDeferred
async def test_a_datagram_to_a_closed_port_is_reported_unreachable_and_the_port_reads_on() -> None:
    """The protocol hears of each refused datagram's destination; the socket stays open
    (epoll's POLLERR would make Twisted close a plain port) and, its error queue drained,
    does not keep waking the reactor."""
    protocol = Recorder()
    port: Any = listen_udp(get_reactor(), 0, protocol, "127.0.0.1")
    try:
        assert isinstance(port, ErrorQueuePort) and port.error_queue
        wakeups = count_wakeups(port)
        dead = ("127.0.0.1", free_udp_port())
        for sent in range(1, 4):
            # Paced like RTP: each error is drained before the next send, which the
            # socket's pending error would otherwise refuse (ECONNREFUSED, nothing sent).
            protocol.transport.write(b"rtp", dead)  # type: ignore[union-attr]
            assert await eventually(lambda n=sent: len(protocol.unreachables) == n, 3)
        assert protocol.unreachables == [dead] * 3
        await settle(0.05)
        woken = wakeups[0]
        await settle(0.2)
        assert wakeups[0] == woken, "the reactor keeps waking for a drained error queue"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"still here", ("127.0.0.1", port.getHost().port))
        assert await eventually(lambda: protocol.datagrams == [b"still here"], 3)
        assert port.connected
    finally:
        await port.stopListening()


def hears_rtp(call: Any) -> Callable[[], bool]:
    return lambda: bool(call.session.stats()["packets_received"])


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off, as in tests/integration/test_no_cycles.py."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest_twisted.ensureDeferred
@pytest.mark.usefixtures("no_collector")
async def test_a_call_whose_peer_died_ends_within_the_unreachable_timeout(
    peers: PeerFactory,
) -> None:
    """Alice's RTP and RTCP sockets close abruptly (her process died, as far as the network
    can tell): Bob's RTP to them comes back as ICMP port unreachable, and Bob ends the call
    with BYE after media_unreachable_timeout (1 s), not media_timeout (60 s). The hook
    that woke Bob's session leaves no reference cycle: the call is freed without the
    cyclic collector."""
    reactor = get_reactor()
    alice = await peers("alice")
    bob = await peers("bob", media_timeout=60, media_unreachable_timeout=1)
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    answered = await within((await within(bob.wait_for_incoming(), 5)).accept(), 5)
    await within(call.wait_for_answer(), 5)
    assert await eventually(hears_rtp(answered), 5)
    media = call.session.media
    assert media is not None
    started = reactor.seconds()
    for listening in list(media.listening):
        await listening.stopListening()
    await within(answered.wait_for_end(), 5)
    waited = reactor.seconds() - started
    assert 0.9 <= waited < 4.0, f"ended after {waited:.2f}s, media_unreachable_timeout is 1s"
    failure = answered.failure
    assert isinstance(failure, CallFailed)
    text = str(failure)
    assert text.startswith("no RTP or RTCP from "), text
    assert "(ICMP port unreachable for 127.0.0.1:" in text, text
    assert answered.state_path[-2:] == ["Terminating", "Terminated"]
    await within(call.wait_for_end(), 5)  # Alice's signalling still lives: she got the BYE
    assert call.state is CallState.TERMINATED
    session = answered.session
    held = [weakref.ref(o) for o in (answered, session, session.media, session.media.stream)]
    del answered, session, failure
    assert await eventually(lambda: all(r() is None for r in held), 3), [
        type(r()).__name__ for r in held if r() is not None
    ]


@pytest_twisted.ensureDeferred
async def test_a_media_port_opens_and_closes_like_twisteds_but_logs_nothing_at_info() -> None:
    """``stopListening`` fires, the socket is closed and the protocol stopped, as with
    ``udp.Port``; yet no event at info level or above is published (a call opens and
    closes two of these; the daemon's log used to get four lines per call from them)."""
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    seen: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_level", LogLevel.info) >= LogLevel.info:
            seen.append(event)

    protocol = Recorder()
    globalLogPublisher.addObserver(observer)
    try:
        port: Any = listen_udp(get_reactor(), 0, protocol, "127.0.0.1")
        assert isinstance(port, ErrorQueuePort)
        number = port.getHost().port
        sock = port.socket
        assert protocol.transport is port
        await port.stopListening()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert sock.fileno() == -1  # closed
    assert protocol.transport is None and protocol.numPorts == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", number))  # the port number is free again
    texts = [formatEvent(e) for e in seen]
    assert not [t for t in texts if "starting on" in t or "Closed" in t], texts
