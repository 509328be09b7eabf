"""SIP over TLS between real sockets on 127.0.0.1 with a throwaway PKI (tests/certs.py).

What a user relies on: messages cross with the CA they configured; a server
whose certificate names someone else, or that no trusted CA signed, fails
the send quickly with a :class:`~sipd.errors.TransportError` that says so
(never a hang); ``verify=False`` connects anyway; a server that requires
client certificates refuses a client without one and takes one with one;
and nothing older than TLS 1.2 gets in.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.protocols.tls import TLSMemoryBIOFactory

from sipd import ConfigError, TransportError
from sipd.transport.tcp import StreamTransport
from sipd.transport.tls import TlsConfig
from tests.certs import CertFiles, make_certs
from tests.conftest import eventually, get_reactor, within
from tests.integration.test_tcp_transport import Harness, Node, RawPeer, sip_request

#: Real seconds a failing handshake may take before the test calls it a hang.
QUICKLY = 5.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("tls-certs"))


@pytest_twisted.async_yield_fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        await h.close()


def _server(certs: CertFiles, **extra: object) -> TlsConfig:
    return TlsConfig(certs.server_cert, certs.server_key, certs.ca, **extra)  # type: ignore[arg-type]


async def _send_and_fail(alice: Node, target: tuple[str, int]) -> TransportError:
    """Send once and return the error the send fails with (quickly, in real time)."""
    failed: defer.Deferred[TransportError] = defer.Deferred()
    alice.transport.send(sip_request(), target, failed.callback)
    error: TransportError = await within(failed, QUICKLY)
    return error


@pytest_twisted.ensureDeferred
async def test_tls_messages_cross_both_ways_with_the_configured_ca(
    harness: Harness, certs: CertFiles
) -> None:
    alice = harness.node("tls", tls=_server(certs))
    bob = harness.node("tls", tls=_server(certs))
    got = alice.wait(lambda m: m.__class__.__name__ == "Response")
    alice.transport.send(sip_request(transport="TLS", via_port=alice.port), ("127.0.0.1", bob.port))
    response, _ = await got
    assert response.status == 200
    assert bob.received[0][0].top_via.transport == "TLS"

    # By name too (a DNS SAN), and the other way round.
    got = bob.wait(lambda m: m.__class__.__name__ == "Response")
    bob.transport.send(sip_request(transport="TLS"), ("localhost", alice.port))
    assert (await got)[0].status == 200
    assert alice.transport.via_transport == "TLS"
    assert alice.errors == [] and bob.errors == []


@pytest_twisted.ensureDeferred
async def test_a_client_with_only_the_ca_can_call_a_server(
    harness: Harness, certs: CertFiles
) -> None:
    bob = harness.node("tls", tls=_server(certs))
    alice = harness.node("tls", listen=False, tls=TlsConfig(ca_certificates=certs.ca))
    got = alice.wait()
    alice.transport.send(sip_request(transport="TLS"), ("127.0.0.1", bob.port))
    assert (await got)[0].status == 200


@pytest_twisted.ensureDeferred
async def test_a_server_certificate_for_another_name_fails_the_send(
    harness: Harness, certs: CertFiles
) -> None:
    bob = harness.node("tls", tls=TlsConfig(certs.wrong_name_cert, certs.wrong_name_key))
    alice = harness.node("tls", listen=False, tls=TlsConfig(ca_certificates=certs.ca))
    error = await _send_and_fail(alice, ("127.0.0.1", bob.port))
    assert str(error) == (
        f"TLS to 127.0.0.1:{bob.port} failed: certificate name mismatch: "
        "it is for other.invalid, 192.0.2.7, not 127.0.0.1"
    )
    assert error.peer == ("127.0.0.1", bob.port)
    assert await eventually(lambda: [a for a, _ in alice.errors] == [("127.0.0.1", bob.port)])
    assert bob.received == []
    assert alice.transport.metrics.get("sipd_sip_tls_failures_total", direction="out") == 1


@pytest_twisted.ensureDeferred
async def test_a_self_signed_server_certificate_fails_the_send(
    harness: Harness, certs: CertFiles
) -> None:
    bob = harness.node("tls", tls=TlsConfig(certs.self_signed_cert, certs.self_signed_key))
    alice = harness.node("tls", listen=False, tls=TlsConfig(ca_certificates=certs.ca))
    error = await _send_and_fail(alice, ("127.0.0.1", bob.port))
    assert str(error).startswith(f"TLS to 127.0.0.1:{bob.port} failed: certificate verify failed")
    assert "self-signed certificate" in str(error) or "self signed certificate" in str(error)
    # The server hears the client's alert: logged there as an inbound TLS failure.
    assert await eventually(lambda: bob.errors != [])
    assert "unknown ca" in str(bob.errors[0][1])


@pytest_twisted.ensureDeferred
async def test_a_certificate_from_an_untrusted_ca_fails_the_send(
    harness: Harness, certs: CertFiles
) -> None:
    bob = harness.node("tls", tls=_server(certs))
    alice = harness.node("tls", listen=False, tls=TlsConfig(ca_certificates=certs.other_ca))
    error = await _send_and_fail(alice, ("127.0.0.1", bob.port))
    assert "certificate verify failed (unable to get local issuer certificate)" in str(error)


@pytest_twisted.ensureDeferred
async def test_verify_false_connects_to_an_unverifiable_server(
    harness: Harness, certs: CertFiles
) -> None:
    bob = harness.node("tls", tls=TlsConfig(certs.self_signed_cert, certs.self_signed_key))
    alice = harness.node("tls", listen=False, tls=TlsConfig(verify=False))
    got = alice.wait()
    alice.transport.send(sip_request(transport="TLS"), ("127.0.0.1", bob.port))
    assert (await got)[0].status == 200


@pytest_twisted.ensureDeferred
async def test_mutual_tls_refuses_a_client_without_a_certificate(
    harness: Harness, certs: CertFiles
) -> None:
    bob = harness.node("tls", tls=_server(certs, require_client_certificate=True))
    alice = harness.node("tls", listen=False, tls=TlsConfig(ca_certificates=certs.ca))
    alice.transport.send(sip_request(transport="TLS"), ("127.0.0.1", bob.port))
    # TLS 1.3 finishes the client's side of the handshake before the server
    # checks for a certificate, so the refusal comes as the connection's failure.
    assert await eventually(lambda: alice.errors != [], timeout=QUICKLY)
    addr, error = alice.errors[0]
    assert addr == ("127.0.0.1", bob.port)
    assert str(error).startswith(f"TLS to 127.0.0.1:{bob.port} failed: ")
    assert "certificate required" in str(error) or "handshake failure" in str(error)
    assert bob.received == []
    assert await eventually(lambda: bob.errors != [])
    assert "did not return a certificate" in str(bob.errors[0][1])


@pytest_twisted.ensureDeferred
async def test_mutual_tls_accepts_a_client_with_a_certificate(
    harness: Harness, certs: CertFiles
) -> None:
    bob = harness.node("tls", tls=_server(certs, require_client_certificate=True))
    alice = harness.node(
        "tls", listen=False, tls=TlsConfig(certs.client_cert, certs.client_key, certs.ca)
    )
    got = alice.wait()
    alice.transport.send(sip_request(transport="TLS"), ("127.0.0.1", bob.port))
    assert (await got)[0].status == 200
    assert alice.errors == [] and bob.errors == []


@pytest_twisted.ensureDeferred
async def test_a_server_that_never_finishes_the_handshake_fails_at_the_deadline(
    harness: Harness, certs: CertFiles
) -> None:
    endpoint = TCP4ServerEndpoint(get_reactor(), 0, interface="127.0.0.1")
    port = await endpoint.listen(Factory.forProtocol(Protocol))  # accepts, says nothing
    harness.ports.append(port)
    target = ("127.0.0.1", port.getHost().port)
    alice = harness.node(
        "tls", listen=False, tls=TlsConfig(ca_certificates=certs.ca), connect_timeout=10.0
    )
    failures: list[TransportError] = []
    alice.transport.send(sip_request(), target, failures.append)
    assert await eventually(lambda: alice.transport.connection_for(target) is not None)
    conn = alice.transport.connection_for(target)
    assert conn is not None
    assert await eventually(lambda: conn.transport is not None)  # TCP is up, TLS is not
    alice.clock.advance(10)
    assert await eventually(lambda: failures != [])
    assert str(failures[0]) == (
        f"TLS to 127.0.0.1:{target[1]} failed: TLS handshake did not finish within 10 s"
    )


@pytest_twisted.ensureDeferred
async def test_tls_older_than_1_2_is_refused(harness: Harness, certs: CertFiles) -> None:
    bob = harness.node("tls", tls=_server(certs))
    try:
        old = CertificateOptions(
            insecurelyLowerMinimumTo=TLSVersion.TLSv1_0,
            lowerMaximumSecurityTo=TLSVersion.TLSv1_1,
        )
    except ValueError as exc:  # pragma: no cover - an OpenSSL without TLS 1.0/1.1 at all
        pytest.skip(f"this OpenSSL cannot even offer TLS 1.1: {exc}")
    peer = RawPeer()
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", bob.port)
    wrapped = TLSMemoryBIOFactory(old, True, Factory.forProtocol(lambda: peer))
    harness.raw.append(peer)
    await within(endpoint.connect(wrapped), QUICKLY)
    peer.transport.write(sip_request())  # type: ignore[union-attr]
    await within(peer.lost, QUICKLY)
    assert peer.received == b""  # no SIP answer: no session was ever set up
    assert bob.received == []
    assert await eventually(
        lambda: bob.transport.metrics.get("sipd_sip_tls_failures_total", direction="in") == 1
    )


def test_a_tls_transport_with_a_missing_file_fails_when_made(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(
        ConfigError, match=re.escape(f"tls.ca_certificates file {missing} does not exist")
    ):
        StreamTransport("tls", get_reactor(), tls=TlsConfig(ca_certificates=missing))


def test_a_client_only_tls_config_cannot_listen(certs: CertFiles) -> None:
    transport = StreamTransport("tls", get_reactor(), tls=TlsConfig(ca_certificates=certs.ca))
    with pytest.raises(ConfigError, match=re.escape("a TLS listener needs tls.certificate")):
        transport.listen("127.0.0.1", 0)
