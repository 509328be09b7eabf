"""sipd over TLS against a real registrar and proxy: Kamailio with its tls module.

Kamailio (tests/interop/kamailio/kamailio-tls.cfg, TLS only, a server
certificate from tests/certs.py for 127.0.0.1) is the oracle: its location
table (``ul.dump``) says what sipd bound and over which socket, and its
sipdump trace shows every SIP message it received and sent, with the
transport and both ends of the connection. The sipd peers are TLS clients
(only the test CA, no certificate of their own): they do not listen for
TLS, so every request Kamailio delivers to them must ride the connection
they opened to register or to call. Audio is checked on the WAV files each
peer recorded (RTP is direct between the peers on loopback).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import SimplePeer, TlsConfig
from sipd.errors import RegistrationError
from tests.certs import CertFiles, make_certs
from tests.conftest import PeerFactory, get_reactor, within
from tests.interop.harness import (
    Interop,
    Registration,
    assert_tone,
    free_udp_port_range,
    interop,
    settle,
    write_tone_wav,
)
from tests.interop.kamailio_tls import KamailioTls, TracedMessage, kamailio_tls

__all__ = ["interop"]

pytestmark = pytest.mark.interop

ALICE_HZ, BOB_HZ = 440.0, 880.0
TONE_S = 1.5
RECEIVED = re.compile(r"sip:127\.0\.0\.1:(\d+);transport=tls")

#: sipd's defaults, and nat_rewrite off. By default sipd takes the rport
#: Kamailio writes into the REGISTER's Via (its connection's source port) for
#: a NAT and re-registers that port as its Contact (see
#: test_a_tls_registration_binds_the_peers_own_contact); with nat_rewrite off
#: the Contact keeps the peer's own port, where nothing listens for TLS, and
#: only Kamailio's flow handling (received address, Contact aliases) reaches it.
SETTINGS = pytest.mark.parametrize(
    "settings", [{}, {"nat_rewrite": False}], ids=["defaults", "nat_rewrite_off"]
)


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    directory = tmp_path / "pki"
    directory.mkdir()
    return make_certs(directory)


def _media_range() -> dict[str, int]:
    first = free_udp_port_range(20)
    return {"media_port_min": first, "media_port_max": first + 19}


def _client_tls(ca: Path) -> TlsConfig:
    """A TLS client that verifies the server against ``ca`` (and has no certificate)."""
    return TlsConfig(ca_certificates=str(ca), verify=True)


async def _registered_peer(
    peers: PeerFactory, k: KamailioTls, certs: CertFiles, user: str, **settings: object
) -> SimplePeer:
    """A sipd TLS peer that registered at Kamailio as ``user`` with its password."""
    peer: SimplePeer = await within(
        peers(
            user,
            transport="tls",
            tls=_client_tls(certs.ca),
            registrar=k.uri,
            username=user,
            password=k.users[user],
            **_media_range(),
            **settings,
        ),
        10,
    )
    return peer


def _only_binding(bindings: list[Registration], k: KamailioTls) -> Registration:
    """The one binding a peer should have; a second one is a Contact it failed to remove."""
    assert len(bindings) == 1, (
        f"{len(bindings)} bindings where one was expected (a re-REGISTER that moves the "
        f"Contact must remove the old one with ;expires=0): {bindings}\n{k.report()}"
    )
    return bindings[0]


def _tls_connections(peer: SimplePeer, direction: str) -> float:
    return peer.coordinator.metrics.get(
        "sipd_sip_connections_opened_total", transport="tls", direction=direction
    )


def _from_user(message: TracedMessage, user: str) -> bool:
    return f"sip:{user}@" in (message.header("From") or "")


def _from(user: str) -> Callable[[TracedMessage], bool]:
    return lambda message: _from_user(message, user)


def _answering(request: TracedMessage) -> Callable[[TracedMessage], bool]:
    """Matches the responses to ``request`` (same Call-ID and CSeq)."""
    call_id, cseq = request.header("Call-ID"), request.header("CSeq")
    return lambda m: (
        m.status is not None and m.header("Call-ID") == call_id and m.header("CSeq") == cseq
    )


def _registers(k: KamailioTls, user: str) -> list[TracedMessage]:
    return [
        m
        for m in k.messages()
        if m.tag == "rcv" and m.method == "REGISTER" and m.status is None and _from_user(m, user)
    ]


@SETTINGS
@pytest_twisted.ensureDeferred
async def test_sipd_peers_register_over_tls_with_digest_auth(
    interop: Interop, peers: PeerFactory, certs: CertFiles, settings: dict[str, object]
) -> None:
    """401 answered with credentials over TLS; ul.dump holds TLS bindings reached via the flow."""
    k = await kamailio_tls(interop, certs)
    alice = await _registered_peer(peers, k, certs, "alice", **settings)
    bob = await _registered_peer(peers, k, certs, "bob", **settings)

    table = await k.registrations()
    assert set(table) == {"alice", "bob"}, f"{table}\n{k.report()}"
    for peer in (alice, bob):
        binding = _only_binding(table[peer.name], k)
        # Bound on Kamailio's TLS socket, and the Contact asks for TLS.
        assert binding.socket == k.socket_name, binding
        assert binding.contact.startswith(f"sip:{peer.name}@127.0.0.1:"), binding
        assert binding.contact.endswith(";transport=tls"), binding
        if settings:
            assert binding.contact == f"sip:{peer.name}@127.0.0.1:{peer.port};transport=tls"
        assert binding.user_agent.startswith("sipd"), binding
        assert binding.expires is not None and binding.expires > 3000, binding
        # The flow: requests to this user go to the peer's end of its connection.
        assert binding.received is not None, binding
        assert RECEIVED.fullmatch(binding.received), binding
        # One connection carried everything (the peer has no TLS listener).
        assert _tls_connections(peer, "out") == 1
        assert _tls_connections(peer, "in") == 0

    for peer in (alice, bob):
        user = peer.name
        first, retry = (
            await k.wait_messages(2, tag="rcv", method="REGISTER", status=None, where=_from(user))
        )[:2]
        for register in (first, retry):
            assert register.proto == "tls", register
            assert register.dst == ("127.0.0.1", k.port), register
            # RFC 3261 §18.1.1: the Via names the transport the request went over.
            via = register.headers("Via")[0]
            assert via.startswith("SIP/2.0/TLS 127.0.0.1:"), via
        # The first REGISTER has no credentials and is challenged ...
        assert first.header("Authorization") is None, first.text
        challenge = (await k.wait_messages(1, tag="snd", where=_answering(first)))[0]
        assert challenge.status == 401, challenge
        assert challenge.proto == "tls" and challenge.dst == first.src, challenge
        www = challenge.header("WWW-Authenticate") or ""
        assert www.startswith("Digest ") and 'realm="sipd.test"' in www, www
        assert 'qop="auth"' in www, www
        # ... and the retry answers it, on the same connection, and is accepted.
        assert retry.src == first.src, (first, retry)
        assert retry.header("Call-ID") == first.header("Call-ID")
        authorization = retry.header("Authorization") or ""
        assert f'username="{user}"' in authorization and "qop=auth" in authorization
        nonce = re.search(r'nonce="([^"]+)"', www)
        assert nonce and f'nonce="{nonce.group(1)}"' in authorization, (www, authorization)
        ok = (await k.wait_messages(1, tag="snd", where=_answering(retry)))[0]
        assert ok.status == 200 and ok.proto == "tls" and ok.dst == retry.src, ok


@SETTINGS
@pytest_twisted.ensureDeferred
async def test_alice_calls_bob_through_kamailio_over_tls_with_audio_both_ways(
    interop: Interop,
    peers: PeerFactory,
    certs: CertFiles,
    tmp_path: Path,
    settings: dict[str, object],
) -> None:
    """INVITE challenged 407 and relayed to bob over his registration's connection; BYE ends it."""
    k = await kamailio_tls(interop, certs)
    alice = await _registered_peer(peers, k, certs, "alice", **settings)
    bob = await _registered_peer(peers, k, certs, "bob", **settings)
    bob_binding = _only_binding((await k.registrations())["bob"], k)
    assert bob_binding.received is not None
    found = RECEIVED.fullmatch(bob_binding.received)
    assert found, bob_binding
    bob_flow = ("127.0.0.1", int(found.group(1)))

    alice_wav = write_tone_wav(tmp_path / "alice-tone.wav", ALICE_HZ, TONE_S)
    bob_wav = write_tone_wav(tmp_path / "bob-tone.wav", BOB_HZ, TONE_S)

    async def bob_answers() -> None:
        incoming = await within(bob.wait_for_incoming(), 10)
        assert incoming.dialled == "bob"
        call = await within(incoming.accept(), 10)
        recorded = call.record_wav(tmp_path / "bob-heard.wav")
        await within(call.play_wav(bob_wav), 10)
        await within(call.wait_for_end(), 10)
        await within(recorded, 5)

    bob_side = defer.ensureDeferred(bob_answers())
    call = await within(alice.call("bob"), 5)
    assert str(call.session.target) == k.aor("bob")
    await within(call.wait_for_answer(), 10)
    alice_recorded = call.record_wav(tmp_path / "alice-heard.wav")
    await within(call.play_wav(alice_wav), 10)
    await settle(0.3)
    await within(call.hangup(), 10)
    await within(bob_side, 15)
    await within(alice_recorded, 5)
    assert call.failure is None, call.failure

    report = k.report()
    # alice's INVITE came over TLS, was challenged 407 and came again with credentials.
    invites = await k.wait_messages(2, tag="rcv", method="INVITE", status=None)
    assert all(m.proto == "tls" for m in invites), report
    first, retry = invites[:2]
    assert first.header("Proxy-Authorization") is None
    assert 'username="alice"' in (retry.header("Proxy-Authorization") or ""), report
    challenge = (await k.wait_messages(1, tag="snd", status=407, method="INVITE"))[0]
    assert challenge.proto == "tls" and challenge.dst == first.src, challenge
    # Kamailio relayed it to bob over the connection bob registered on.
    relayed = (await k.wait_messages(1, tag="snd", method="INVITE", status=None))[0]
    assert relayed.proto == "tls" and relayed.dst == bob_flow, (relayed, bob_binding)
    assert relayed.first_line.startswith("INVITE sip:bob@127.0.0.1:"), relayed.first_line
    assert relayed.headers("Via")[0].startswith(f"SIP/2.0/TLS 127.0.0.1:{k.port};"), relayed.text
    assert f"sip:127.0.0.1:{k.port};transport=tls;lr" in (relayed.header("Record-Route") or "")
    # bob's 200 came back the same way, and alice's ACK and BYE reached bob on it too.
    ok = await k.wait_messages(1, tag="rcv", status=200, method="INVITE")
    assert ok[0].proto == "tls" and ok[0].src == bob_flow, ok[0]
    for method in ("ACK", "BYE"):
        forwarded = (await k.wait_messages(1, tag="snd", method=method, status=None))[0]
        assert forwarded.proto == "tls" and forwarded.dst == bob_flow, forwarded
    bye_ok = await k.wait_messages(2, status=200, method="BYE")
    assert {(m.tag, m.proto) for m in bye_ok} == {("rcv", "tls"), ("snd", "tls")}, bye_ok
    # Nobody ever connected to a peer: bob has no TLS listener, and needed none.
    for peer in (alice, bob):
        assert _tls_connections(peer, "in") == 0, peer
        assert _tls_connections(peer, "out") == 1, peer

    assert_tone(tmp_path / "alice-heard.wav", BOB_HZ, "alice heard", report)
    assert_tone(tmp_path / "bob-heard.wav", ALICE_HZ, "bob heard", report)


async def _failed_registration(k: KamailioTls, ca: Path) -> RegistrationError:
    """Register a TLS peer that trusts ``ca``; return the error, checking it came fast."""
    settings: dict[str, Any] = {
        "transport": "tls",
        "tls": _client_tls(ca),
        "registrar": k.uri,
        "username": "alice",
        "password": k.users["alice"],
        "t1": 0.05,
        "t2": 0.4,
        **_media_range(),
    }
    started = get_reactor().seconds()
    with pytest.raises(RegistrationError) as raised:
        await within(
            SimplePeer.create("alice", 0, **settings),
            10,
        )
    elapsed = get_reactor().seconds() - started
    assert elapsed < 5.0, f"the failure took {elapsed:.1f}s: it should be at once"
    # Nothing reached Kamailio's SIP layer and nothing was bound.
    await settle(0.3)
    assert not [m for m in k.messages() if m.method == "REGISTER"], k.report()
    assert await k.registrations() == {}
    return raised.value


@pytest_twisted.ensureDeferred
async def test_a_peer_that_does_not_trust_kamailios_certificate_fails_registration_at_once(
    interop: Interop, certs: CertFiles
) -> None:
    """A CA that did not sign Kamailio's certificate: the error says the TLS verification failed."""
    k = await kamailio_tls(interop, certs)
    error = await _failed_registration(k, certs.other_ca)
    message = str(error)
    assert f"TLS to 127.0.0.1:{k.port} failed" in message, message
    assert "certificate verify failed" in message, message
    # Kamailio saw the handshake refused by the client for its unknown CA.
    await k.process.wait_log(r"alert unknown ca", timeout=5)


@pytest_twisted.ensureDeferred
async def test_a_kamailio_certificate_for_another_name_fails_registration_at_once(
    interop: Interop, certs: CertFiles
) -> None:
    """A certificate signed by the trusted CA for other.invalid, dialled as 127.0.0.1."""
    k = await kamailio_tls(
        interop, certs, certificate=certs.wrong_name_cert, private_key=certs.wrong_name_key
    )
    error = await _failed_registration(k, certs.ca)
    message = str(error)
    assert f"TLS to 127.0.0.1:{k.port} failed" in message, message
    assert "certificate name mismatch" in message, message
    assert "other.invalid" in message and "not 127.0.0.1" in message, message


# -- what sipd gets wrong today (product bugs; see docs/transports.md) ------------------
@pytest_twisted.ensureDeferred
async def test_a_tls_registration_binds_the_peers_own_contact(
    interop: Interop, peers: PeerFactory, certs: CertFiles
) -> None:
    """Over a connection the source port is never the UA's port: no NAT, no second REGISTER."""
    k = await kamailio_tls(interop, certs)
    alice = await _registered_peer(peers, k, certs, "alice")
    binding = _only_binding((await k.registrations())["alice"], k)
    assert binding.contact == f"sip:alice@127.0.0.1:{alice.port};transport=tls", binding
    # The challenged REGISTER and its retry with credentials, nothing more.
    await k.wait_messages(2, tag="rcv", method="REGISTER", status=None)
    await settle(0.5)
    assert len(_registers(k, "alice")) == 2, k.report()
    assert alice.coordinator.config.advertised_port is None
