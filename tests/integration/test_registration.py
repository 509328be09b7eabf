"""Registration and digest authentication between SimplePeers and a registrar, on sockets.

The registrar is in process: a :class:`UnifiedCoordinator` on 127.0.0.1 with
a real :class:`Registrar` (HA1 user table, the real DigestServer) and the
daemon's :class:`RoutingHandler`, wired the way ``sipd.daemon.service``
wires them. :class:`RecordingRegistrar` only notes each REGISTER (and when
it came) before handling it, so the tests count requests on the registrar's
side. Peers that need a misbehaving server (a BYE answered 407) talk to a
scripted :class:`~tests.conftest.RawUA` that checks the digest with
:mod:`hashlib` itself.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from zope.interface import implementer

from sipd import CallState, SimplePeer
from sipd.config import SipdConfig
from sipd.errors import AuthenticationError, CallRejected, RegistrationError
from sipd.handlers.routing import RoutingHandler
from sipd.session.coordinator import UnifiedCoordinator
from sipd.session.interceptor import Accept, ISignalingHandler, Reject
from sipd.session.registrar import Registrar
from sipd.session.registration import Registration, RegistrationState
from sipd.sip.message import Request, Response
from sipd.sip.transaction import ServerTransaction
from tests.conftest import (
    PeerFactory,
    RawUA,
    eventually,
    free_udp_port,
    get_reactor,
    is_request,
    settle,
    within,
)

REALM = "sipd.test"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def _ha1(user: str, algorithm: str) -> str:
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]
    return hashlib.new(name, f"{user}:{REALM}:{PASSWORDS[user]}".encode()).hexdigest()


def users() -> dict[str, object]:
    """alice and bob with both hashes; carol with an MD5 HA1 only (a legacy entry)."""
    table: dict[str, object] = {
        u: {a: _ha1(u, a) for a in ("SHA-256", "MD5")} for u in ("alice", "bob")
    }
    table["carol"] = _ha1("carol", "MD5")
    return table


def _params(value: str) -> dict[str, str]:
    return {k.lower(): a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}


class RecordingRegistrar(Registrar):
    """A Registrar that notes every REGISTER it is handed, with the time it came."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: list[tuple[float, Request]] = []

    def handle(self, request: Request, source: tuple[str, int], txn: ServerTransaction) -> None:
        self.seen.append((self.clock(), request))
        super().handle(request, source, txn)

    def requests(self, user: str | None = None) -> list[Request]:
        return [r for _, r in self.seen if user is None or r.to.uri.user == user]


@implementer(ISignalingHandler)
class NobodyHere:
    """What the registrar does with calls to users without a binding: 404."""

    def on_incoming_invite(self, invite: Any) -> Any:
        return Reject(404, "Not Found")

    def on_response(self, dialog_id: str, response: Response) -> Any:
        return Accept()


class RegistrarUA:
    """A registrar and location service on a UDP port, routing calls to bindings."""

    def __init__(self, port: int = 0, *, authenticate_invites: bool = True, **options: Any) -> None:
        reactor = get_reactor()
        config = SipdConfig(name="registrar", host="127.0.0.1", port=port, t1=0.05, t2=0.4)
        self.coordinator = UnifiedCoordinator(config, reactor=reactor)
        settings: dict[str, Any] = {"min_expires": 1, "max_expires": 3600}
        settings.update(options)
        self.registrar = RecordingRegistrar(REALM, users(), clock=reactor.seconds, **settings)
        self.coordinator.dialogs.registrar = self.registrar
        self.coordinator.dialogs.authenticate_invites = authenticate_invites
        self.coordinator.interceptor.handler = RoutingHandler(
            self.coordinator, NobodyHere(), self.registrar
        )
        self.coordinator.start()

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.coordinator.port}"

    def contacts(self, user: str) -> list[str]:
        return [str(b.contact.uri) for b in self.registrar.location.lookup(user)]


class Env:
    """Peers and registrars of one test; torn down peers first (their un-REGISTERs answered)."""

    def __init__(self) -> None:
        self.peers = PeerFactory()
        self.registrars: list[RegistrarUA] = []

    def registrar(self, port: int = 0, **options: Any) -> RegistrarUA:
        ua = RegistrarUA(port, **options)
        self.registrars.append(ua)
        return ua

    async def peer(self, name: str, at: RegistrarUA | None = None, **kw: Any) -> SimplePeer:
        """A peer; with ``at``, registered there as ``name`` with its password."""
        if at is not None:
            kw.setdefault("registrar", at.uri)
            kw.setdefault("username", name)
            kw.setdefault("password", PASSWORDS[name])
        return await within(self.peers(name, **kw), 10)


@pytest_twisted.async_yield_fixture
async def env() -> AsyncIterator[Env]:
    """Peers and in-process registrars; after the test nothing of theirs is left behind.

    Peers close first (so their un-REGISTERs reach a live registrar), then
    the registrars; then the reactor must hold no delayed call the test added
    (refresh and back-off timers included).
    """
    reactor = get_reactor()
    before = {id(dc) for dc in reactor.getDelayedCalls()}
    e = Env()
    problems: list[str] = []
    try:
        yield e
        await eventually(lambda: not e.peers.leftovers())
        problems += e.peers.leftovers()
    finally:
        await e.peers.close_all()
        for ua in e.registrars:
            await within(ua.coordinator.close(), 10)
    await settle(0.02)
    problems += [
        f"delayed call left after close: {getattr(dc.func, '__qualname__', dc.func)}"
        for dc in reactor.getDelayedCalls()
        if dc.active() and id(dc) not in before
    ]
    assert not problems, "\n".join(problems)


def registration_of(peer: SimplePeer) -> Registration:
    (registration,) = peer.coordinator.registrations
    return registration


# -- registration ---------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_peers_register_with_sha256_and_with_md5(env: Env) -> None:
    """alice answers the SHA-256 challenge, carol (MD5 HA1 only) the MD5 one; both are bound."""
    reg = env.registrar()
    alice = await env.peer("alice", reg)
    carol = await env.peer("carol", reg)
    assert reg.contacts("alice") == [alice.uri]
    assert reg.contacts("carol") == [carol.uri]
    algorithms = {}
    for user in ("alice", "carol"):
        unauthenticated, answered = reg.registrar.requests(user)
        assert unauthenticated.headers.get("Authorization") is None
        p = _params(answered.headers.get("Authorization") or "")
        assert p["username"] == user and p["realm"] == REALM and p["qop"] == "auth"
        assert p["nc"] == "00000001" and p["cnonce"]
        algorithms[user] = p["algorithm"]
    assert algorithms == {"alice": "SHA-256", "carol": "MD5"}
    assert registration_of(alice).state is RegistrationState.REGISTERED


@pytest_twisted.ensureDeferred
async def test_refresh_comes_before_the_granted_expiry_and_the_binding_never_lapses(
    env: Env,
) -> None:
    """Asked 3600, granted 2 s: refreshes come before expiry, each a single REGISTER."""
    reg = env.registrar(max_expires=2)
    alice = await env.peer("alice", reg)
    registration = registration_of(alice)
    assert registration.granted_expires == 2
    reactor = get_reactor()
    start = reactor.seconds()
    lapsed = []
    while reactor.seconds() - start < 3.5:
        if reg.contacts("alice") != [alice.uri]:
            lapsed.append(round(reactor.seconds() - start, 2))
        await settle(0.02)
    assert not lapsed, f"the binding lapsed at {lapsed} s"
    times = [t for t, r in reg.registrar.seen if r.headers.get("Authorization")]
    assert len(times) >= 4, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap < 2.0 for gap in gaps), gaps
    # Refreshes are pre-authorised with the next nonce-count: no 401 round trip.
    assert len(reg.registrar.requests("alice")) == registration.registrations + 1
    assert registration.state is RegistrationState.REGISTERED


@pytest_twisted.ensureDeferred
async def test_wrong_password_fails_after_at_most_two_registers(env: Env) -> None:
    """A wrong password ends in AuthenticationError, not a loop, for create() and register()."""
    reg = env.registrar()
    with pytest.raises(AuthenticationError) as info:
        await env.peer("alice", reg, password="not-alices")
    assert "alice" in str(info.value) and "password" in str(info.value)
    assert len(reg.registrar.requests("alice")) == 2
    bob = await env.peer("bob")
    with pytest.raises(AuthenticationError):
        await within(bob.register(reg.uri, username="bob", password="guess"), 10)
    await settle(0.3)
    assert len(reg.registrar.requests("bob")) == 2
    assert reg.registrar.location.lookup("alice") == []
    assert reg.registrar.location.lookup("bob") == []


@pytest_twisted.ensureDeferred
async def test_stale_nonce_is_retried_without_failing(env: Env) -> None:
    """Nonces live 0.5 s, refreshes come every second: each is stale, retried, and succeeds."""
    reg = env.registrar(max_expires=2, nonce_ttl=0.5)
    alice = await env.peer("alice", reg)
    registration = registration_of(alice)
    assert await eventually(lambda: registration.registrations >= 3, timeout=4)
    assert registration.state is RegistrationState.REGISTERED
    assert registration.error is None
    assert reg.contacts("alice") == [alice.uri]
    requests = reg.registrar.requests("alice")
    nonces = {_params(r.headers.get("Authorization") or "").get("nonce") for r in requests}
    assert len(nonces - {None}) >= 3
    # Every refresh cost a stale 401 and a retry: more REGISTERs than registrations + 1.
    assert len(requests) >= 2 * registration.registrations


@pytest_twisted.ensureDeferred
async def test_close_unregisters(env: Env) -> None:
    """close() sends REGISTER with Expires: 0 and the binding is gone."""
    reg = env.registrar()
    alice = await env.peer("alice", reg)
    bob = await env.peer("bob", reg)
    assert reg.contacts("alice") == [alice.uri]
    await within(alice.close(), 10)
    last = reg.registrar.requests("alice")[-1]
    assert last.headers.get("Expires") == "0"
    assert reg.registrar.location.lookup("alice") == []
    assert reg.contacts("bob") == [bob.uri]


@pytest_twisted.ensureDeferred
async def test_unreachable_registrar_backs_off_then_registers_when_it_appears(env: Env) -> None:
    """No registrar: RegistrationError after Timer F; retried 2 s later, it succeeds."""
    port = free_udp_port()
    alice = await env.peer("alice", t1=0.01, t2=0.04)
    reactor = get_reactor()
    started = reactor.seconds()
    with pytest.raises(RegistrationError) as info:
        await within(alice.register(f"sip:127.0.0.1:{port}", password="alice-pw"), 5)
    failed = reactor.seconds()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert 0.5 <= failed - started < 2.0  # Timer F = 64 * T1 = 0.64 s
    registration = registration_of(alice)
    assert registration.state is RegistrationState.RETRYING
    reg = env.registrar(port)
    assert await eventually(
        lambda: registration.state is RegistrationState.REGISTERED, timeout=5
    ), registration
    first_seen = reg.registrar.seen[0][0]
    assert first_seen - failed >= 1.9  # the first back-off step is 2 s
    assert registration.attempts >= 3  # the lost one, the challenged one, the answered one
    assert reg.contacts("alice") == [alice.uri]


# -- calls through the registrar ----------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_plain_number_call_goes_through_the_registrar_with_invite_auth(env: Env) -> None:
    """alice dials "bob": the registrar challenges the INVITE (401), then bridges it to bob."""
    reg = env.registrar()
    alice = await env.peer("alice", reg)
    bob = await env.peer("bob", reg)
    call = await alice.call("bob")
    incoming = await within(bob.wait_for_incoming(), 10)
    # bob is called by the registrar at his registered contact, not by alice directly.
    assert incoming.caller.endswith(f"@127.0.0.1:{reg.coordinator.port}")
    assert incoming.callee == bob.uri
    answered = await within(incoming.accept(), 10)
    await within(call.wait_for_answer(), 10)
    assert call.is_active() and answered.is_active()
    invites = reg.coordinator.metrics.get("sipd_sip_requests_received_total", method="INVITE")
    assert invites == 2  # the challenged INVITE and the one with credentials
    retries = alice.coordinator.metrics.get("sipd_sip_auth_retries_total", method="INVITE")
    assert retries == 1
    await within(call.hangup(), 10)
    await within(answered.wait_for_end(), 10)
    assert call.state is CallState.TERMINATED and call.failure is None


@pytest_twisted.ensureDeferred
async def test_call_without_credentials_is_refused_with_401(env: Env) -> None:
    """A caller without a password cannot answer the registrar's challenge: 401, no loop."""
    reg = env.registrar()
    await env.peer("bob", reg)
    mallory = await env.peer("mallory")
    call = await mallory.call(f"sip:bob@127.0.0.1:{reg.coordinator.port}")
    with pytest.raises(CallRejected) as info:
        await within(call.wait_for_answer(), 10)
    assert info.value.status == 401
    assert reg.coordinator.metrics.get("sipd_sip_requests_received_total", method="INVITE") == 1


# -- a server that challenges BYE -------------------------------------------------------------
def _reply(request: Request, status: int, reason: str, *extra: str, body: str = "") -> str:
    h = request.headers
    to = h.get("To") or ""
    if ";tag=" not in to:
        to += ";tag=raw1"
    lines = [
        f"SIP/2.0 {status} {reason}",
        *(f"Via: {v}" for v in h.get_all("Via")),
        f"From: {h.get('From')}",
        f"To: {to}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq.number} {request.method}",
        *extra,
        f"Content-Length: {len(body.encode())}",
        "",
        body,
    ]
    return "\n".join(lines)


@pytest_twisted.ensureDeferred
async def test_bye_challenged_with_407_is_answered_with_credentials(raw_ua: Any, env: Env) -> None:
    """The far end answers BYE with 407; the retry carries a right Proxy-Authorization."""
    raw: RawUA = raw_ua()
    alice = await env.peer("alice", username="alice", password="alice-pw")
    nonce = "bye-nonce-1"
    sdp = (
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        f"m=audio {free_udp_port()} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
    ).replace("\n", "\r\n")
    byes: list[Request] = []

    def script(message: Request | Response, source: tuple[str, int]) -> None:
        if not isinstance(message, Request):
            return
        if message.method == "INVITE":
            raw.send(
                _reply(
                    message,
                    200,
                    "OK",
                    f"Contact: <sip:raw@127.0.0.1:{raw.port}>",
                    "Content-Type: application/sdp",
                    body=sdp,
                ),
                source,
            )
        elif message.method == "BYE":
            byes.append(message)
            if message.headers.get("Proxy-Authorization") is None:
                challenge = (
                    f'Proxy-Authenticate: Digest realm="{REALM}", nonce="{nonce}", '
                    'algorithm=MD5, qop="auth"'
                )
                raw.send(_reply(message, 407, "Proxy Authentication Required", challenge), source)
            else:
                raw.send(_reply(message, 200, "OK"), source)

    raw.on_message = script
    call = await alice.call(f"sip:raw@127.0.0.1:{raw.port}")
    await within(call.wait_for_answer(), 10)
    await within(raw.expect(is_request("ACK")), 5)
    await within(call.hangup(), 10)
    assert call.state is CallState.TERMINATED and call.failure is None
    first, second = byes
    assert second.cseq.number == first.cseq.number + 1
    assert second.top_via.branch != first.top_via.branch
    p = _params(second.headers.get("Proxy-Authorization") or "")
    assert p["username"] == "alice" and p["nonce"] == nonce and p["qop"] == "auth"
    assert p["uri"] == str(second.uri) == f"sip:raw@127.0.0.1:{raw.port}"
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    ha1 = md5(f"alice:{REALM}:alice-pw")
    ha2 = md5(f"BYE:{p['uri']}")
    assert p["response"] == md5(f"{ha1}:{nonce}:{p['nc']}:{p['cnonce']}:auth:{ha2}")


# -- addresses --------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_wildcard_bound_peer_advertises_a_reachable_address(raw_ua: Any, env: Env) -> None:
    """Bound to 0.0.0.0, REGISTER and INVITE carry 127.0.0.1 in Via (with rport) and Contact."""
    raw: RawUA = raw_ua()

    def script(message: Request | Response, source: tuple[str, int]) -> None:
        if isinstance(message, Request) and message.method == "REGISTER":
            raw.send(_reply(message, 200, "OK", "Expires: 600"), source)
        elif isinstance(message, Request) and message.method == "INVITE":
            raw.send(_reply(message, 486, "Busy Here"), source)

    raw.on_message = script
    alice = await env.peer(
        "alice", host="0.0.0.0", registrar=f"sip:127.0.0.1:{raw.port}", register_expires=600
    )
    call = await alice.call(f"sip:raw@127.0.0.1:{raw.port}")
    with pytest.raises(CallRejected):
        await within(call.wait_for_answer(), 10)
    register = raw.messages(is_request("REGISTER"))[0]
    invite = raw.messages(is_request("INVITE"))[0]
    for request in (register, invite):
        assert isinstance(request, Request)
        via = request.top_via
        assert via.host == "127.0.0.1" and via.port == alice.port
        assert via.rport is True
        assert [(c.uri.host, c.uri.port) for c in request.contacts] == [("127.0.0.1", alice.port)]
    assert isinstance(invite, Request)
    assert b"0.0.0.0" not in invite.body
    assert alice.uri == f"sip:alice@127.0.0.1:{alice.port}"
