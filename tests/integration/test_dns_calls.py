"""Calls and registrations to host names, located by RFC 3263 against a real dnsmasq.

dnsmasq runs on 127.0.0.1 and a free port (``--no-resolv``, ``--no-hosts``,
records from its command line only; see test_dns_dnsmasq.py) and the peers
ask it through ``dns_servers=``. The SRV records of ``example.test`` name two
targets: the first (higher priority) is down or answers 503, the call must
reach the second. The TTL is checked on the peer's own resolver cache with
an injected clock and on dnsmasq's query log. dnsmasq is stopped by PID.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import task

from sipd import CallFailed, CallRejected, CallTransportError, SimplePeer, TlsConfig
from sipd.api.call import Call
from sipd.dns import DnsCache
from sipd.sip.message import Request, Response, make_response
from tests.certs import CertFiles, make_certs
from tests.conftest import PeerFactory, RawUA, eventually, free_udp_port, is_request, within
from tests.integration.test_dns_dnsmasq import Dnsmasq, DnsmasqFactory, dnsmasq

__all__ = ["dnsmasq"]  # the fixture, imported for these tests


def srv_pair(first_port: int, second_port: int, name: str = "example.test") -> list[str]:
    """``_sip._udp.<name>``: first.<name> (priority 10) then second.<name> (priority 20)."""
    return [
        f"--srv-host=_sip._udp.{name},first.{name},{first_port},10,0",
        f"--srv-host=_sip._udp.{name},second.{name},{second_port},20,0",
        f"--host-record=first.{name},127.0.0.1",
        f"--host-record=second.{name},127.0.0.1",
    ]


async def caller(peers: PeerFactory, server: Dnsmasq, **settings: object) -> SimplePeer:
    return await peers("alice", dns_servers=[f"127.0.0.1:{server.port}"], **settings)


async def reaches_bob(alice: SimplePeer, bob: SimplePeer, target: str) -> Request:
    """alice calls ``target``; bob receives it, answers, and the call ends cleanly."""
    call = await within(alice.call(target), 5)
    incoming = await within(bob.wait_for_incoming(), 10)
    invite = incoming.session.signalling.invite_request
    assert isinstance(invite, Request)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)
    assert call.failure is None and answered.failure is None
    return invite


@pytest_twisted.ensureDeferred
async def test_the_first_srv_target_is_down_and_the_call_reaches_the_second(
    peers: PeerFactory, dnsmasq: DnsmasqFactory
) -> None:
    bob = await peers("bob")
    dead = free_udp_port()  # nothing listens: no answer, Timer B (64*T1 = 3.2 s) moves on
    server = await dnsmasq.start(*srv_pair(dead, bob.port))
    alice = await caller(peers, server)
    invite = await reaches_bob(alice, bob, "sip:bob@example.test")
    assert str(invite.uri) == "sip:bob@example.test"
    await server.barrier()
    assert "SRV _sip._udp.example.test" in server.all_queries()


@pytest_twisted.ensureDeferred
async def test_a_503_from_the_first_target_moves_the_call_to_the_second(
    peers: PeerFactory, dnsmasq: DnsmasqFactory, raw_ua: type[RawUA]
) -> None:
    bob = await peers("bob")
    busy = raw_ua()

    def unavailable(message: Request | Response, source: tuple[str, int]) -> None:
        if isinstance(message, Request) and message.method == "INVITE":
            busy.send(make_response(message, 503, to_tag="b1").to_bytes(), source)

    busy.on_message = unavailable
    server = await dnsmasq.start(*srv_pair(busy.port, bob.port))
    alice = await caller(peers, server)
    invite = await reaches_bob(alice, bob, "sip:bob@example.test")
    first = busy.messages(is_request("INVITE"))
    assert len(first) == 1 and isinstance(first[0], Request)
    # A new transaction: same request, another branch (RFC 3263 §4.3).
    assert first[0].top_via.branch != invite.top_via.branch
    assert first[0].call_id == invite.call_id
    assert await eventually(lambda: bool(busy.messages(is_request("ACK"))), 5)


@pytest_twisted.ensureDeferred
async def test_when_every_target_fails_the_call_fails_naming_them(
    peers: PeerFactory, dnsmasq: DnsmasqFactory, raw_ua: type[RawUA]
) -> None:
    one, two = raw_ua(), raw_ua()
    for raw in (one, two):

        def unavailable(m: Request | Response, source: tuple[str, int], raw: RawUA = raw) -> None:
            if isinstance(m, Request) and m.method == "INVITE":
                raw.send(make_response(m, 503, to_tag="u1").to_bytes(), source)

        raw.on_message = unavailable
    server = await dnsmasq.start(*srv_pair(one.port, two.port))
    alice = await caller(peers, server)
    call = await within(alice.call("sip:bob@example.test"), 5)
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 10)
    assert info.value.status == 503
    text = str(info.value)
    assert f"127.0.0.1:{one.port}/UDP (first.example.test)" in text, text
    assert f"127.0.0.1:{two.port}/UDP (second.example.test)" in text, text


@pytest_twisted.ensureDeferred
async def test_a_name_that_does_not_resolve_fails_the_call_with_the_dns_reason(
    peers: PeerFactory, dnsmasq: DnsmasqFactory
) -> None:
    server = await dnsmasq.start(*srv_pair(5070, 5071))
    alice = await caller(peers, server)
    call = await within(alice.call("sip:bob@nowhere.example.test"), 5)
    with pytest.raises(CallFailed, match=r"nowhere\.example\.test"):
        await within(call.wait_for_answer(), 10)


@pytest_twisted.ensureDeferred
async def test_the_location_is_cached_for_its_ttl_then_asked_again(
    peers: PeerFactory, dnsmasq: DnsmasqFactory
) -> None:
    bob = await peers("bob")
    server = await dnsmasq.start(
        f"--srv-host=_sip._udp.example.test,second.example.test,{bob.port},10,0",
        "--host-record=second.example.test,127.0.0.1",
        local_ttl=30,
    )
    alice = await caller(peers, server)
    clock = task.Clock()
    alice.coordinator.resolver.cache = DnsCache(clock)  # TTL expiry without waiting
    asked = alice.coordinator.resolver

    async def call_rejected() -> None:
        call = await within(alice.call("sip:bob@example.test"), 5)
        incoming = await within(bob.wait_for_incoming(), 10)
        await within(incoming.reject(486), 5)
        with pytest.raises(CallRejected):
            await within(call.wait_for_answer(), 5)

    await call_rejected()
    first = asked.queries_sent
    assert first >= 2  # NAPTR, SRV, A... (AAAA too)
    await server.barrier()
    logged = len(server.all_queries())

    clock.advance(29)  # within the TTL: everything from the cache
    await call_rejected()
    assert asked.queries_sent == first
    await server.barrier()
    assert len(server.all_queries()) == logged

    clock.advance(2)  # past the TTL: asked again
    await call_rejected()
    assert asked.queries_sent > first
    await server.barrier()
    assert "SRV _sip._udp.example.test" in server.all_queries()[logged:]


@pytest_twisted.ensureDeferred
async def test_registration_to_a_registrar_named_by_dns(
    peers: PeerFactory, dnsmasq: DnsmasqFactory, raw_ua: type[RawUA]
) -> None:
    registrar = raw_ua()

    def ok(message: Request | Response, source: tuple[str, int]) -> None:
        if isinstance(message, Request) and message.method == "REGISTER":
            response = make_response(message, 200, to_tag="r1")
            response.headers.add("Contact", f"{message.headers.get('Contact')};expires=60")
            registrar.send(response.to_bytes(), source)

    registrar.on_message = ok
    server = await dnsmasq.start(
        f"--srv-host=_sip._udp.example.test,registrar.example.test,{registrar.port},10,0",
        "--host-record=registrar.example.test,127.0.0.1",
    )
    alice = await caller(peers, server)
    registration = await within(alice.register("sip:example.test"), 10)
    assert registration.granted_expires == 60
    request = registrar.messages(is_request("REGISTER"))[0]
    assert isinstance(request, Request)
    assert str(request.uri) == "sip:example.test"
    assert request.top_via.transport == "UDP"


async def _sips_call(
    peers: PeerFactory, dnsmasq: DnsmasqFactory, certs: CertFiles, cert: Path, key: Path
) -> Call:
    """bob serves TLS with ``cert``; DNS names him as the SIP domain example.test's
    ``_sips._tcp`` server; alice calls ``sips:bob@example.test``."""
    bob = await peers(
        "bob",
        transport="tls",
        tls=TlsConfig(certificate=str(cert), private_key=str(key), ca_certificates=str(certs.ca)),
    )
    server = await dnsmasq.start(
        f"--srv-host=_sips._tcp.example.test,sip.example.test,{bob.port},10,0",
        "--host-record=sip.example.test,127.0.0.1",
    )
    alice = await caller(peers, server, tls=TlsConfig(ca_certificates=str(certs.ca)))
    call = await within(alice.call("sips:bob@example.test"), 5)
    incoming = bob.wait_for_incoming()
    incoming.addCallback(lambda offered: offered.accept())
    incoming.addErrback(lambda _: None)  # no call reaches bob when TLS fails
    return call


@pytest_twisted.ensureDeferred
async def test_a_tls_server_located_by_dns_is_verified_for_the_sip_domain(
    peers: PeerFactory, dnsmasq: DnsmasqFactory, tmp_path: Path
) -> None:
    """RFC 5922 §4.2: the certificate must name example.test, which it does, though it
    names neither sip.example.test (the SRV target) nor 127.0.0.1 (its address)."""
    certs = make_certs(tmp_path)
    call = await _sips_call(peers, dnsmasq, certs, certs.domain_cert, certs.domain_key)
    await within(call.wait_for_answer(), 10)
    await within(call.hangup(), 5)


@pytest_twisted.ensureDeferred
async def test_a_tls_server_located_by_dns_with_a_certificate_for_its_address_fails(
    peers: PeerFactory, dnsmasq: DnsmasqFactory, tmp_path: Path
) -> None:
    """A certificate for 127.0.0.1 and localhost does not prove the server is example.test."""
    certs = make_certs(tmp_path)
    call = await _sips_call(peers, dnsmasq, certs, certs.server_cert, certs.server_key)
    reason = r"certificate name mismatch: .*, not example\.test$"
    with pytest.raises(CallTransportError, match=reason):
        await within(call.wait_for_answer(), 10)
