"""Overload control on real sockets (issue 11, "Overload collapses throughput").

A scanner on 127.0.0.2 floods Bob with new INVITEs; Bob answers all but its
source's burst with 503 + Retry-After, statelessly, while Alice's call from
127.0.0.1 is answered and completes (RFC 3261 §21.5.4; per-source limits so
that one flood cannot starve other callers).
"""

from __future__ import annotations

import secrets
import socket
from collections import Counter

import pytest_twisted
from twisted.internet.protocol import DatagramProtocol

from sipd.sip.message import Response, parse_message
from tests.conftest import PeerFactory, eventually, get_reactor, settle, within

SCANNER_HOST = "127.0.0.2"


class Scanner(DatagramProtocol):
    """Sends INVITEs as fast as it can from 127.0.0.2 and counts the answers."""

    def __init__(self, target: int) -> None:
        self.target = target
        #: The final status each INVITE got (by Call-ID; retransmissions count once).
        self.finals: dict[str, int] = {}
        self.retry_after: set[str | None] = set()
        self.port = 0

    def start(self) -> None:
        listening = get_reactor().listenUDP(0, self, SCANNER_HOST)
        listening.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.port = listening.getHost().port

    @property
    def statuses(self) -> Counter[int]:
        return Counter(self.finals.values())

    def flood(self, count: int) -> None:
        assert self.transport is not None
        for _ in range(count):
            self.transport.write(self._invite(), ("127.0.0.1", self.target))

    def _invite(self) -> bytes:
        sdp = (
            f"v=0\r\no=- 1 1 IN IP4 {SCANNER_HOST}\r\ns=-\r\nc=IN IP4 {SCANNER_HOST}\r\n"
            "t=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
        )
        return (
            f"INVITE sip:100@127.0.0.1:{self.target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {SCANNER_HOST}:{self.port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:scanner@{SCANNER_HOST}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:100@127.0.0.1:{self.target}>\r\n"
            f"Call-ID: {secrets.token_hex(10)}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:scanner@{SCANNER_HOST}:{self.port}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode()

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if isinstance(message, Response) and message.status >= 200:
            self.finals[message.call_id] = message.status
            if message.status == 503:
                self.retry_after.add(message.headers.get("Retry-After"))


@pytest_twisted.ensureDeferred
async def test_a_flood_from_one_source_gets_503_while_another_callers_call_completes(
    peers: PeerFactory,
) -> None:
    # Only the per-source limit is under test: the checks of the whole UA's load
    # (lag and receive queue, unit-tested on a clock) stay off, or the burst of
    # datagrams this test sends at once would make Bob refuse Alice too.
    bob = await peers(
        "bob",
        overload_source_rate=2.0,
        overload_source_burst=5,
        overload_max_lag=0.0,
        overload_max_backlog=0,
    )
    alice = await peers("alice")
    scanner = Scanner(bob.port)
    scanner.start()
    try:
        scanner.flood(200)
        call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
        scanner.flood(200)
        # Bob sees Alice's call among the scanner's few admitted ones.
        answered = None
        while answered is None:
            incoming = await within(bob.wait_for_incoming(), 5)
            if "alice" in incoming.caller:
                answered = await within(incoming.accept(), 5)
            else:
                await within(incoming.reject(486), 5)
        await within(call.wait_for_answer(), 5)
        assert call.is_active() and answered.is_active()
        scanner.flood(100)
        await settle(0.2)
        await within(call.hangup(), 5)
        await within(answered.wait_for_end(), 5)

        assert await eventually(lambda: sum(scanner.statuses.values()) >= 490, 5)
        refused = scanner.statuses[503]
        assert refused >= 480, scanner.statuses  # all but the burst and a few a second
        assert scanner.retry_after == {"5"}
        metrics = bob.coordinator.metrics
        assert metrics.get("sipd_overload_rejected_total", reason="source") == refused
        # The calls the scanner got through were refused by Bob's application.
        while (incoming := bob.try_incoming()) is not None:
            await within(incoming.reject(486), 5)
    finally:
        assert scanner.transport is not None
        await scanner.transport.stopListening()
