"""A datagram that cannot be sent fails its one transaction, call or packet, never the reactor.

Addresses come from the wire (a Via's rport, maddr and received, a Contact,
an SDP c= line), and the socket refuses bad ones with many exception types:
OverflowError (port > 65535), TypeError (a NUL in the host), ValueError
(Twisted's InvalidAddressError for a name or the other family),
socket.gaierror, and Twisted's MessageLengthError (not an OSError at all).
Here each send point meets each of them, on a task.Clock or a real socket
on 127.0.0.1, and a log observer checks that no failure was logged.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.error import MessageLengthError
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from sipd.media.stream import MediaStream
from sipd.send_errors import SEND_ERRORS, SendError, send_error
from sipd.sip.message import make_response
from sipd.sip.transaction import Addr, ClientState, ServerState, TransactionLayer, new_branch
from sipd.transport.udp import SipDatagramProtocol
from tests.unit.test_transaction_layer import (
    UAC,
    UAS,
    Outcome,
    RecordingTU,
    assert_clean,
    request,
)

#: One of each kind of refusal the socket layer raises.
REFUSALS: list[Exception] = [
    OverflowError("sendto(): port must be 0-65535."),
    TypeError("host name must not contain null character"),
    ValueError("write() only accepts IP addresses, not hostnames"),
    socket.gaierror(-9, "Address family for hostname not supported"),
    MessageLengthError("message too long"),
]
IDS = [type(e).__name__ for e in REFUSALS]


@pytest.fixture
def failures() -> Iterator[list[LogEvent]]:
    """Every logged failure (what twistd prints as a traceback) during the test."""
    seen: list[LogEvent] = []

    @implementer(ILogObserver)
    def observer(event: LogEvent) -> None:
        if "log_failure" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


class FlakyWire:
    """The injected ``send``: succeeds ``ok`` times, then raises ``error`` every time."""

    def __init__(self, error: Exception, ok: int = 0) -> None:
        self.error = error
        self.ok = ok
        self.sent: list[tuple[bytes, Addr]] = []
        self.refused = 0

    def __call__(self, data: bytes, addr: Addr) -> None:
        if len(self.sent) >= self.ok:
            self.refused += 1
            raise self.error
        self.sent.append((data, addr))


def layer_with(wire: FlakyWire) -> tuple[Clock, RecordingTU, TransactionLayer]:
    clock = Clock()
    tu = RecordingTU()
    return clock, tu, TransactionLayer(clock, wire, tu)


# -- the shared error type -----------------------------------------------------------


@pytest.mark.parametrize("error", REFUSALS, ids=IDS)
def test_every_refusal_is_a_send_error_and_becomes_an_oserror(error: Exception) -> None:
    assert isinstance(error, SEND_ERRORS)
    folded = send_error(("127.0.0.1", 65536), error)
    assert isinstance(folded, OSError)
    if isinstance(error, OSError):
        assert folded is error  # an OSError is passed on as it is
    else:
        assert isinstance(folded, SendError) and folded.cause is error
        assert "65536" in str(folded)


# -- the SIP socket ------------------------------------------------------------------


@pytest.fixture
def sip_protocol() -> Iterator[SipDatagramProtocol]:
    from twisted.internet import reactor

    protocol = SipDatagramProtocol(reactor)
    port: Any = reactor.listenUDP(0, protocol, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield protocol
    port.stopListening()


@pytest.mark.parametrize(
    "addr",
    [("127.0.0.1", 65536), ("[::1]", 5060), ("bogus", 5060), ("1.2.3.4\x00", 5060)],
    ids=["rport-65536", "ipv6-on-ipv4", "host-name", "nul"],
)
def test_sip_send_raises_only_oserror(sip_protocol: SipDatagramProtocol, addr: Addr) -> None:
    """Whatever the socket refuses comes out of send() as an OSError, and is counted."""
    with pytest.raises(OSError):
        sip_protocol.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", addr)
    assert "sipd_sip_send_errors_total" in sip_protocol.metrics.render()


def test_sip_send_of_an_oversized_datagram_raises_oserror(
    sip_protocol: SipDatagramProtocol,
) -> None:
    """Twisted's MessageLengthError (not an OSError) is folded in too."""
    with pytest.raises(OSError):
        sip_protocol.send(b"x" * 70000, ("127.0.0.1", 9))


def test_answer_to_a_bad_request_with_an_unusable_via_is_dropped_quietly(
    sip_protocol: SipDatagramProtocol, failures: list[LogEvent]
) -> None:
    """_reject answers where the Via says; rport=65536 there is no traceback."""
    bad = (
        b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx;rport=65536\r\n"
        b"Max-Forwards: 70\r\nTo: <sip:bob@127.0.0.1>\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n"
        b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 99\r\n\r\n"
    )
    sip_protocol.datagramReceived(bad, ("127.0.0.1", 5070))
    assert failures == []


# -- server transactions -------------------------------------------------------------


@pytest.mark.parametrize("error", REFUSALS, ids=IDS)
def test_failing_first_response_ends_the_server_transaction(
    error: Exception, failures: list[LogEvent]
) -> None:
    """§17.2.4: the TU hears of it with an OSError, the transaction ends at once."""
    wire = FlakyWire(error)
    clock, tu, layer = layer_with(wire)
    layer.receive(request("OPTIONS"), UAC)
    txn = tu.events[0][3]
    txn.respond(make_response(txn.request, 200, to_tag="x"))
    assert tu.kinds() == ["request", "transport_error"]
    assert isinstance(tu.events[1][2], OSError)
    assert txn.state is ServerState.TERMINATED
    assert_clean(clock, layer)
    assert failures == []


@pytest.mark.parametrize("error", REFUSALS, ids=IDS)
def test_failing_timer_g_retransmission_ends_the_server_transaction(
    error: Exception, failures: list[LogEvent]
) -> None:
    """The 486 went out once; its Timer G retransmission is refused: no exception escapes."""
    wire = FlakyWire(error, ok=1)
    clock, tu, layer = layer_with(wire)
    layer.receive(request("INVITE"), UAC)
    txn = tu.events[0][3]
    txn.respond(make_response(txn.request, 486, to_tag="x"))
    assert len(wire.sent) == 1
    clock.advance(0.5)  # Timer G
    assert wire.refused == 1
    assert tu.kinds() == ["request", "transport_error"]
    assert txn.state is ServerState.TERMINATED
    clock.advance(64)
    assert_clean(clock, layer)
    assert failures == []


@pytest.mark.parametrize("error", REFUSALS, ids=IDS)
def test_failing_100_trying_ends_the_server_transaction(error: Exception) -> None:
    """The layer's own 100 Trying is a send point too."""
    wire = FlakyWire(error)
    clock, tu, layer = layer_with(wire)
    layer.receive(request("INVITE"), UAC)
    assert tu.kinds() == ["request", "transport_error"]
    assert_clean(clock, layer)


# -- client transactions -------------------------------------------------------------


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
@pytest.mark.parametrize("error", REFUSALS, ids=IDS)
def test_failing_retransmission_reports_a_transport_error(
    method: str, error: Exception, failures: list[LogEvent]
) -> None:
    """Timer A (INVITE) or E (non-INVITE) meets a refusal: on_transport_error, once."""
    wire = FlakyWire(error, ok=1)
    clock, _, layer = layer_with(wire)
    out = Outcome()
    txn = layer.send_request(
        request(method, branch=new_branch()), UAS, out.on_response, out.on_timeout, out.on_error
    )
    clock.advance(0.5)
    assert len(out.errors) == 1 and isinstance(out.errors[0], OSError)
    assert out.timeouts == 0
    assert txn.state is ClientState.TERMINATED
    clock.advance(64)
    assert_clean(clock, layer)
    assert failures == []


def test_failing_first_send_without_error_callback_is_a_timeout() -> None:
    """Without on_transport_error the TU still learns at once, through on_timeout."""
    wire = FlakyWire(OverflowError("port"))
    clock, _, layer = layer_with(wire)
    out = Outcome()
    layer.send_request(
        request("OPTIONS", branch=new_branch()), UAS, out.on_response, out.on_timeout
    )
    assert out.timeouts == 1
    assert_clean(clock, layer)


# -- media ---------------------------------------------------------------------------


@pytest.mark.parametrize("error", REFUSALS, ids=IDS)
def test_media_send_errors_are_counted_per_packet(
    error: Exception, failures: list[LogEvent]
) -> None:
    """An RTP or RTCP packet the socket refuses is counted; the 20 ms tick never raises."""

    def refuse(data: bytes, addr: Addr) -> None:
        raise error

    stream = MediaStream(
        codec="PCMU",
        payload_type=0,
        remote=("192.0.2.1", 4000),
        send_rtp=refuse,
        send_rtcp=refuse,
        now=lambda: 0.0,
    )
    for _ in range(5):
        stream.tick()
    stream.rtcp_report()
    stats = stream.current_stats()
    assert stats.send_errors == 6
    assert stats.packets_sent == 0
    assert stats.as_dict()["send_errors"] == 6
    assert failures == []
