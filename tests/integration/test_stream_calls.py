"""Calls between two sipd peers over TCP and over TLS (RFC 3261 §18, docs/transports.md).

Real sockets on 127.0.0.1. The signalling goes over the stream transport
(Via and Contact say so, no request is retransmitted), the audio over RTP
as on UDP; a TLS peer whose certificate the caller cannot verify fails the
call at once with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from sipd import (
    CallFailed,
    CallState,
    CallTransportError,
    SimplePeer,
    TlsConfig,
    TransportError,
)
from sipd.sip.message import Request
from tests.certs import CertFiles, make_certs
from tests.conftest import PeerFactory, eventually, within


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path)


async def talk(alice: SimplePeer, bob: SimplePeer) -> None:
    """A call from alice to bob with audio both ways, hung up by alice."""
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    invite = incoming.session.signalling.invite_request
    assert isinstance(invite, Request)
    transport = alice.coordinator.config.transport.upper()
    assert invite.top_via.transport == transport
    assert f"transport={transport.lower()}" in (invite.headers.get("Contact") or "")
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    assert await eventually(lambda: answered.stats()["packets_received"] > 0, 5)
    assert await eventually(lambda: call.stats()["packets_received"] > 0, 5)
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)
    assert call.state is CallState.TERMINATED and call.failure is None
    assert answered.state is CallState.TERMINATED and answered.failure is None


@pytest_twisted.ensureDeferred
async def test_a_call_over_tcp(peers: PeerFactory) -> None:
    alice = await peers("alice", transport="tcp")
    bob = await peers("bob", transport="tcp")
    await talk(alice, bob)
    stream = bob.coordinator.transports.stream
    assert stream is not None and stream.kind == "tcp"
    # The INVITE, ACK and BYE rode one connection; nothing was sent over UDP.
    assert alice.coordinator.metrics.get("sipd_sip_requests_sent_total") == 0


@pytest_twisted.ensureDeferred
async def test_a_call_over_tls(peers: PeerFactory, certs: CertFiles) -> None:
    server = TlsConfig(
        certificate=str(certs.server_cert),
        private_key=str(certs.server_key),
        ca_certificates=str(certs.ca),
    )
    alice = await peers("alice", transport="tls", tls=server)
    bob = await peers("bob", transport="tls", tls=server)
    await talk(alice, bob)


@pytest_twisted.ensureDeferred
async def test_an_untrusted_tls_server_fails_the_call_at_once_with_the_reason(
    peers: PeerFactory, certs: CertFiles
) -> None:
    bob_tls = TlsConfig(
        certificate=str(certs.self_signed_cert), private_key=str(certs.self_signed_key)
    )
    alice_tls = TlsConfig(ca_certificates=str(certs.ca))
    bob = await peers("bob", transport="tls", tls=bob_tls)
    alice = await peers("alice", transport="tls", tls=alice_tls)
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    with pytest.raises(CallTransportError, match="certificate verify failed") as info:
        await within(call.wait_for_answer(), 5)
    assert isinstance(info.value, CallFailed) and isinstance(info.value, TransportError)
    assert bob.try_incoming() is None


@pytest_twisted.ensureDeferred
async def test_a_tls_server_with_another_name_fails_the_call_at_once_with_the_reason(
    peers: PeerFactory, certs: CertFiles
) -> None:
    """The CA is trusted but the certificate names other.invalid, not 127.0.0.1."""
    bob_tls = TlsConfig(
        certificate=str(certs.wrong_name_cert),
        private_key=str(certs.wrong_name_key),
        ca_certificates=str(certs.ca),
    )
    alice_tls = TlsConfig(ca_certificates=str(certs.ca))
    bob = await peers("bob", transport="tls", tls=bob_tls)
    alice = await peers("alice", transport="tls", tls=alice_tls)
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    reason = "certificate name mismatch: it is for other.invalid, 192.0.2.7, not 127.0.0.1"
    with pytest.raises(CallTransportError, match=reason):
        await within(call.wait_for_answer(), 5)
    assert bob.try_incoming() is None


@pytest_twisted.ensureDeferred
async def test_a_caller_closing_its_connection_after_its_calls_is_not_an_error(
    peers: PeerFactory,
) -> None:
    """Finished transactions on a connection the peer closes just end: no warnings."""
    from twisted.logger import LogEvent, formatEvent, globalLogPublisher

    lines: list[str] = []

    def observer(event: LogEvent) -> None:
        lines.append(formatEvent(event))

    alice = await peers("alice", transport="tcp")
    bob = await peers("bob", transport="tcp")
    for _ in range(3):
        await talk(alice, bob)
    globalLogPublisher.addObserver(observer)
    try:
        await within(alice.close(), 5)
        stream = bob.coordinator.transports.stream
        assert stream is not None
        assert await eventually(lambda: stream.connection_count == 0, 5)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert not [line for line in lines if "could not send" in line], lines
