"""Tests of the registrar and location service (``sipd/session/registrar.py``).

A real :class:`UnifiedCoordinator` runs on :class:`FakeUdpReactor` (a
``task.Clock``) with a :class:`Registrar` attached, so each REGISTER goes
through the parser, the transaction layer and the dialog adapter as on a
socket, and the real :class:`~sipd.sip.auth_server.DigestServer` checks it.
The digest answers are computed here with :mod:`hashlib` straight from
RFC 7616 §3.4.1, independently of ``sipd.sip.auth``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sipd.config import SipdConfig
from sipd.session.coordinator import UnifiedCoordinator
from sipd.session.registrar import Registrar
from sipd.sip.message import Response, parse_message
from tests.unit.test_transport_udp import FakeUdpReactor

REALM = "sipd.test"
CLIENT = ("127.0.0.1", 40000)
REQUEST_URI = "sip:127.0.0.1:5060"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}


def _hash(algorithm: str, text: str) -> str:
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]
    return hashlib.new(name, text.encode()).hexdigest()


def _ha1(user: str, password: str, algorithm: str) -> str:
    return _hash(algorithm, f"{user}:{REALM}:{password}")


def users_table() -> dict[str, object]:
    """Both hashes for alice and bob; only an MD5 HA1 for carol (a legacy entry)."""
    table: dict[str, object] = {
        user: {a: _ha1(user, pw, a) for a in ("SHA-256", "MD5")} for user, pw in PASSWORDS.items()
    }
    table["carol"] = _ha1("carol", "carol-secret", "MD5")
    return table


@dataclass
class Challenge:
    nonce: str
    algorithm: str
    opaque: str | None
    qop: str | None
    stale: bool


def challenges(response: Response) -> list[Challenge]:
    """The Digest challenges of a 401, read with a regex (not sipd's parser)."""
    out = []
    for value in response.headers.get_all("WWW-Authenticate"):
        params = {
            k.lower(): a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)
        }
        assert value.startswith("Digest "), value
        assert params["realm"] == REALM
        out.append(
            Challenge(
                params["nonce"],
                params.get("algorithm", "MD5"),
                params.get("opaque"),
                params.get("qop"),
                params.get("stale", "").lower() == "true",
            )
        )
    return out


def authorization(
    user: str,
    password: str,
    ch: Challenge,
    *,
    nc: int = 1,
    cnonce: str = "0a4f113b",
    method: str = "REGISTER",
    uri: str = REQUEST_URI,
) -> str:
    """An ``Authorization`` value with qop=auth (RFC 7616 §3.4.1)."""
    ha1 = _ha1(user, password, ch.algorithm)
    ha2 = _hash(ch.algorithm, f"{method}:{uri}")
    response = _hash(ch.algorithm, f"{ha1}:{ch.nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    opaque = f', opaque="{ch.opaque}"' if ch.opaque is not None else ""
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{ch.nonce}", uri="{uri}", '
        f'response="{response}", algorithm={ch.algorithm}, cnonce="{cnonce}", qop=auth, '
        f"nc={nc:08x}{opaque}"
    )


class RegistrarStack:
    """A coordinator on a fake socket, answering REGISTER with a real Registrar."""

    def __init__(self, **options: object) -> None:
        self.reactor = FakeUdpReactor()
        config = SipdConfig(name="registrar", host="127.0.0.1", port=5060)
        self.coordinator = UnifiedCoordinator(config, reactor=self.reactor)
        self.coordinator.start()
        settings: dict[str, object] = {"min_expires": 60, "max_expires": 7200}
        settings.update(options)
        self.registrar = Registrar(
            REALM,
            users_table(),
            clock=self.reactor.seconds,
            **settings,  # type: ignore[arg-type]
        )
        self.coordinator.dialogs.registrar = self.registrar
        self.wire = self.reactor.ports[0]
        self.call_id = f"reg-{secrets.token_hex(4)}@127.0.0.1"
        self.cseq = 0

    def send(
        self,
        user: str = "alice",
        *,
        contacts: tuple[str, ...] | None = None,
        expires: int | None = None,
        auth: str | None = None,
        to_user: str | None = None,
        call_id: str | None = None,
        cseq: int | None = None,
    ) -> Response:
        """Send one REGISTER (a new branch each time); return the final response."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        if contacts is None:
            contacts = (f"<sip:{user}@127.0.0.1:40000>",)
        lines = [
            f"REGISTER {REQUEST_URI} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@127.0.0.1>;tag=t{secrets.token_hex(3)}",
            f"To: <sip:{to_user or user}@127.0.0.1>",
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {cseq} REGISTER",
            *(f"Contact: {c}" for c in contacts),
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        lines += ["Content-Length: 0", "", ""]
        before = len(self.wire.sent)
        self.coordinator.transport.datagramReceived("\r\n".join(lines).encode(), CLIENT)
        sent = self.wire.sent[before:]
        assert len(sent) == 1, sent
        data, dest = sent[0]
        assert dest == CLIENT
        response = parse_message(data)
        assert isinstance(response, Response)
        return response

    def register(self, user: str = "alice", algorithm: str = "SHA-256", **kw: object) -> Response:
        """REGISTER, answer the 401 with ``algorithm``, return the second final response."""
        password = kw.pop("password", PASSWORDS.get(user, "carol-secret"))
        first = self.send(user, **kw)  # type: ignore[arg-type]
        assert first.status == 401, first
        offered = {c.algorithm: c for c in challenges(first)}
        auth = authorization(user, str(password), offered[algorithm])
        return self.send(user, auth=auth, **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        d = self.coordinator.close()
        self.reactor.advance(60)
        assert d.called
        assert self.reactor.getDelayedCalls() == []


@pytest.fixture
def stack() -> Iterator[RegistrarStack]:
    s = RegistrarStack()
    yield s
    s.close()


def contact_expires(response: Response) -> dict[str, int]:
    """Contact URI -> its expires parameter, from a 200 to REGISTER."""
    out = {}
    for contact in response.contacts:
        value = contact.param("expires")
        assert value is not None and value.isdigit(), str(contact)
        out[str(contact.uri)] = int(value)
    return out


# -- challenges and credentials ---------------------------------------------------------
def test_register_without_credentials_is_challenged_sha256_first(stack: RegistrarStack) -> None:
    """An unauthenticated REGISTER gets 401 offering SHA-256 then MD5, qop=auth, one nonce."""
    response = stack.send("alice", expires=600)
    assert response.status == 401
    offered = challenges(response)
    assert [c.algorithm for c in offered] == ["SHA-256", "MD5"]
    assert all(c.qop == "auth" and not c.stale for c in offered)
    assert len({c.nonce for c in offered}) == 1
    assert stack.registrar.location.lookup("alice") == []


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_right_credentials_create_a_binding(stack: RegistrarStack, algorithm: str) -> None:
    """Credentials computed by RFC 7616 with MD5 or SHA-256 are accepted and bind the contact."""
    response = stack.register("alice", algorithm, expires=600)
    assert response.status == 200
    assert contact_expires(response) == {"sip:alice@127.0.0.1:40000": 600}
    (binding,) = stack.registrar.location.lookup("alice")
    assert str(binding.contact.uri) == "sip:alice@127.0.0.1:40000"
    assert binding.source == CLIENT


def test_user_with_only_an_md5_hash_is_offered_only_md5(stack: RegistrarStack) -> None:
    """A user stored with an MD5 HA1 alone is challenged with MD5 only, and registers."""
    first = stack.send("carol")
    assert [c.algorithm for c in challenges(first)] == ["MD5"]
    auth = authorization("carol", "carol-secret", challenges(first)[0])
    assert stack.send("carol", auth=auth).status == 200
    assert len(stack.registrar.location.lookup("carol")) == 1


def test_wrong_password_is_challenged_again_without_stale(stack: RegistrarStack) -> None:
    """A wrong digest gets a fresh 401 that is not stale, and nothing is bound."""
    response = stack.register("alice", "MD5", password="wrong")
    assert response.status == 401
    assert not any(c.stale for c in challenges(response))
    assert stack.registrar.location.lookup("alice") == []


def test_replayed_nonce_count_is_refused_as_stale(stack: RegistrarStack) -> None:
    """The same nonce and nc again (a replay) gets 401 stale=true; the next nc is accepted."""
    first = stack.send("alice", expires=600)
    ch = challenges(first)[0]
    assert stack.send("alice", auth=authorization("alice", PASSWORDS["alice"], ch)).status == 200
    replay = stack.send("alice", auth=authorization("alice", PASSWORDS["alice"], ch))
    assert replay.status == 401
    assert all(c.stale for c in challenges(replay))
    again = stack.send("alice", auth=authorization("alice", PASSWORDS["alice"], ch, nc=2))
    assert again.status == 200


def test_expired_nonce_is_stale_not_a_wrong_password() -> None:
    """A right digest over a nonce older than nonce_ttl gets 401 stale=true."""
    stack = RegistrarStack(nonce_ttl=30.0)
    try:
        ch = challenges(stack.send("alice"))[0]
        stack.reactor.advance(31)
        response = stack.send("alice", auth=authorization("alice", PASSWORDS["alice"], ch))
        assert response.status == 401
        assert all(c.stale for c in challenges(response))
        assert stack.registrar.location.lookup("alice") == []
    finally:
        stack.close()


def test_authenticated_user_may_not_register_someone_else(stack: RegistrarStack) -> None:
    """bob's valid credentials on a REGISTER for alice's AOR get 403."""
    ch = challenges(stack.send("bob", to_user="alice"))[0]
    response = stack.send("bob", to_user="alice", auth=authorization("bob", PASSWORDS["bob"], ch))
    assert response.status == 403
    assert stack.registrar.location.lookup("alice") == []
    assert stack.registrar.location.lookup("bob") == []


def test_registrar_without_auth_refuses_unknown_users() -> None:
    """With auth off, a listed user registers at once and an unlisted one gets 404."""
    stack = RegistrarStack(auth=False)
    try:
        assert stack.send("alice", expires=120).status == 200
        assert stack.send("mallory", expires=120).status == 404
        assert stack.registrar.location.lookup("mallory") == []
    finally:
        stack.close()


# -- expiry -----------------------------------------------------------------------------
def test_binding_expires_lazily_at_its_granted_time(stack: RegistrarStack) -> None:
    """A binding counts down and is gone from a lookup once its time has passed."""
    assert stack.register("alice", expires=100).status == 200
    stack.reactor.advance(40)
    (binding,) = stack.registrar.location.lookup("alice")
    assert binding.remaining(stack.reactor.seconds()) == 60
    stack.reactor.advance(59)
    assert len(stack.registrar.location.lookup("alice")) == 1
    stack.reactor.advance(2)
    assert stack.registrar.location.lookup("alice") == []
    assert len(stack.registrar.location) == 0


def test_contact_expires_parameter_wins_over_the_expires_header(stack: RegistrarStack) -> None:
    """Contact ;expires=120 beats Expires: 900; a contact without it takes the header."""
    response = stack.register(
        "alice",
        contacts=("<sip:alice@127.0.0.1:40000>;expires=120", "<sip:alice@127.0.0.1:40002>"),
        expires=900,
    )
    assert response.status == 200
    assert contact_expires(response) == {
        "sip:alice@127.0.0.1:40000": 120,
        "sip:alice@127.0.0.1:40002": 900,
    }


def test_no_expires_at_all_gets_the_default_capped_by_max_expires() -> None:
    """Without any expiry the registrar grants 3600 s, but never more than max_expires."""
    stack = RegistrarStack(max_expires=1800)
    try:
        assert contact_expires(stack.register("alice")) == {"sip:alice@127.0.0.1:40000": 1800}
        assert contact_expires(stack.register("bob", expires=99999)) == {
            "sip:bob@127.0.0.1:40000": 1800
        }
    finally:
        stack.close()


def test_too_brief_expiry_gets_423_with_min_expires(stack: RegistrarStack) -> None:
    """Expires below min_expires is answered 423 Interval Too Brief with Min-Expires."""
    response = stack.register("alice", expires=30)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"
    assert stack.registrar.location.lookup("alice") == []
    assert stack.register("alice", expires=60).status == 200


def test_expires_zero_removes_only_that_contact(stack: RegistrarStack) -> None:
    """Contact ;expires=0 removes one binding; the other stays and is listed."""
    both = ("<sip:alice@127.0.0.1:40000>", "<sip:alice@127.0.0.1:40002>")
    assert stack.register("alice", contacts=both, expires=600).status == 200
    response = stack.register("alice", contacts=("<sip:alice@127.0.0.1:40000>;expires=0",))
    assert response.status == 200
    assert list(contact_expires(response)) == ["sip:alice@127.0.0.1:40002"]
    (left,) = stack.registrar.location.lookup("alice")
    assert str(left.contact.uri) == "sip:alice@127.0.0.1:40002"


def test_wildcard_contact_with_expires_zero_removes_every_binding(stack: RegistrarStack) -> None:
    """Contact: * with Expires: 0 clears the AOR; with another Expires it is a 400."""
    both = ("<sip:alice@127.0.0.1:40000>", "<sip:alice@127.0.0.1:40002>")
    assert stack.register("alice", contacts=both, expires=600).status == 200
    bad = stack.register("alice", contacts=("*",), expires=60)
    assert bad.status == 400
    assert len(stack.registrar.location.lookup("alice")) == 2
    response = stack.register("alice", contacts=("*",), expires=0)
    assert response.status == 200
    assert response.contacts == []
    assert stack.registrar.location.lookup("alice") == []


def test_older_cseq_in_the_same_call_id_is_500(stack: RegistrarStack) -> None:
    """A REGISTER whose CSeq is not above the binding's (same Call-ID) gets 500, no update."""
    assert stack.register("alice", expires=600, cseq=10).status == 200
    stale = stack.register("alice", expires=1200, cseq=10)
    assert stale.status == 500
    (binding,) = stack.registrar.location.lookup("alice")
    assert binding.remaining(stack.reactor.seconds()) == 600
    assert stack.register("alice", expires=1200, cseq=11).status == 200
    (binding,) = stack.registrar.location.lookup("alice")
    assert binding.remaining(stack.reactor.seconds()) == 1200
    # Another Call-ID (another device restarting) may use any CSeq.
    other = stack.register("alice", expires=300, cseq=1, call_id="other@127.0.0.1")
    assert other.status == 200
