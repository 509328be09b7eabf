"""Which transport one request takes: the target URI, ``sips:``, and RFC 3261 §18.1.1.

Real sockets on 127.0.0.1. A UA configured for UDP calls
``sip:...;transport=tcp`` over TCP and ``sips:`` over TLS, opening those
transports on demand, with Via and Contact naming what it used, and the
callee's BYE coming back that way. An INVITE over 1300 bytes to a default
UDP target travels over TCP (the callee sees ``Via: SIP/2.0/TCP``), one of
about 1000 bytes stays on UDP, and when nothing accepts the TCP connection
the large INVITE goes over UDP after all.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import pytest_twisted

from sipd import CallFailed, CallRejected, CallState, SimplePeer, TlsConfig
from sipd.errors import TransportError
from sipd.sip.message import Request, Response, make_response
from tests.certs import CertFiles, make_certs
from tests.conftest import PeerFactory, RawUA, eventually, is_request, within


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path)


def padding(size: int) -> dict[str, str]:
    """Extra headers adding about ``size`` bytes to an INVITE."""
    headers: dict[str, str] = {}
    while size > 0:
        value = secrets.token_hex(min(100, max(1, size // 2)))[: max(1, size - 12)]
        headers[f"X-Pad-{len(headers)}"] = value
        size -= len(value) + 12
    return headers


async def answer_and_hang_up_from_callee(
    alice: SimplePeer, bob: SimplePeer, target: str, headers: dict[str, str] | None = None
) -> Request:
    """alice calls ``target`` (bob); bob answers, both hear audio, bob hangs up."""
    call = await within(alice.call(target, headers=headers), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    invite = incoming.session.signalling.invite_request
    assert isinstance(invite, Request)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    assert await eventually(lambda: answered.stats()["packets_received"] > 0, 5)
    # The BYE goes to alice's Contact: over the transport that Contact names.
    await within(answered.hangup(), 5)
    await within(call.wait_for_end(), 5)
    assert call.state is CallState.TERMINATED and call.failure is None
    assert answered.failure is None
    return invite


@pytest_twisted.ensureDeferred
async def test_a_udp_ua_calls_a_transport_tcp_target_over_tcp(peers: PeerFactory) -> None:
    alice = await peers("alice")  # transport="udp"
    bob = await peers("bob", transport="tcp")
    target = f"sip:bob@127.0.0.1:{bob.port};transport=tcp"
    invite = await answer_and_hang_up_from_callee(alice, bob, target)
    assert invite.top_via.transport == "TCP"
    contact = invite.headers.get("Contact") or ""
    assert "transport=tcp" in contact, contact
    # TCP was opened on demand, and listens on the SIP port's number.
    stream = alice.coordinator.transports.streams.get("tcp")
    assert stream is not None and stream.local_address[1] == alice.port
    assert f":{alice.port};transport=tcp" in contact
    # Nothing of this call went over alice's UDP socket.
    assert alice.coordinator.metrics.get("sipd_sip_requests_sent_total") == 0


@pytest_twisted.ensureDeferred
async def test_a_udp_ua_calls_a_sips_target_over_tls(peers: PeerFactory, certs: CertFiles) -> None:
    tls = TlsConfig(
        certificate=str(certs.server_cert),
        private_key=str(certs.server_key),
        ca_certificates=str(certs.ca),
    )
    alice = await peers("alice", tls=tls)  # transport="udp"
    bob = await peers("bob", transport="tls", tls=tls)
    invite = await answer_and_hang_up_from_callee(alice, bob, f"sips:bob@127.0.0.1:{bob.port}")
    assert invite.top_via.transport == "TLS"
    contact = invite.headers.get("Contact") or ""
    assert contact.startswith("<sips:alice@127.0.0.1:"), contact  # RFC 3261 §8.1.1.8
    stream = alice.coordinator.transports.streams.get("tls")
    assert stream is not None
    assert f":{stream.local_address[1]}>" in contact


@pytest_twisted.ensureDeferred
async def test_a_sips_call_without_tls_settings_fails_saying_what_to_pass(
    peers: PeerFactory,
) -> None:
    alice = await peers("alice")
    with pytest.raises(TransportError, match=r"tls=TlsConfig\(ca_certificates"):
        await within(alice.call("sips:bob@127.0.0.1:5999"), 5)
    with pytest.raises(TransportError, match=r"tls=TlsConfig"):
        await within(alice.call("sip:bob@127.0.0.1:5999;transport=tls"), 5)


@pytest_twisted.ensureDeferred
async def test_an_unknown_transport_parameter_fails_the_call(peers: PeerFactory) -> None:
    alice = await peers("alice")
    with pytest.raises(CallFailed, match="transport=sctp is not supported"):
        await within(alice.call("sip:bob@127.0.0.1:5999;transport=sctp"), 5)


@pytest_twisted.ensureDeferred
async def test_an_invite_over_1300_bytes_goes_over_tcp(peers: PeerFactory) -> None:
    alice = await peers("alice")  # UDP
    bob = await peers("bob", transport="tcp")  # listens on UDP and TCP
    target = f"sip:bob@127.0.0.1:{bob.port}"  # no transport=: UDP by default
    invite = await answer_and_hang_up_from_callee(alice, bob, target, padding(900))
    size = len(invite.to_bytes())
    assert size > 1300, size
    assert invite.top_via.transport == "TCP"
    # §18.1.1 changes the Via only: the dialog's Contact still says UDP.
    assert "transport=" not in (invite.headers.get("Contact") or "")


@pytest_twisted.ensureDeferred
async def test_an_invite_of_about_1000_bytes_stays_on_udp(peers: PeerFactory) -> None:
    alice = await peers("alice")
    bob = await peers("bob", transport="tcp")
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    base = incoming.session.signalling.invite_request
    assert isinstance(base, Request)
    await within(incoming.reject(486), 5)
    with pytest.raises(CallRejected):
        await within(call.wait_for_answer(), 5)
    pad = 1000 - len(base.to_bytes())
    assert pad > 0, len(base.to_bytes())
    invite = await answer_and_hang_up_from_callee(
        alice, bob, f"sip:bob@127.0.0.1:{bob.port}", padding(pad)
    )
    assert 900 < len(invite.to_bytes()) <= 1300, len(invite.to_bytes())
    assert invite.top_via.transport == "UDP"


@pytest_twisted.ensureDeferred
async def test_a_large_invite_falls_back_to_udp_when_tcp_is_refused(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """RFC 3261 §18.1.1: the TCP attempt is refused, so the request is retried over UDP."""
    alice = await peers("alice")
    raw = raw_ua()  # UDP only: a TCP connection to its port is refused

    def busy(message: Request | Response, source: tuple[str, int]) -> None:
        if isinstance(message, Request) and message.method == "INVITE":
            raw.send(make_response(message, 486, to_tag="r1").to_bytes(), source)

    raw.on_message = busy
    call = await within(alice.call(f"sip:raw@127.0.0.1:{raw.port}", headers=padding(900)), 5)
    invite = await raw.expect(is_request("INVITE"), 5)
    assert isinstance(invite, Request)
    assert len(invite.to_bytes()) > 1300
    assert invite.top_via.transport == "UDP"
    with pytest.raises(CallRejected):
        await within(call.wait_for_answer(), 5)
    assert await eventually(lambda: bool(raw.messages(is_request("ACK"))), 5)
