"""The registrar side of digest authentication and client-server round trips."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from sipd.errors import ConfigError
from sipd.sip.auth import DigestClient, ha1, parse_challenges, parse_credentials
from sipd.sip.auth_server import AuthFailure, AuthResult, DigestServer, ha1_set
from sipd.sip.message import Request, Response, parse_message
from sipd.sip.uri import parse_uri

REALM = "sip.example.com"
BODY = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"


def make_request(
    method: str = "REGISTER", uri: str = "sip:sip.example.com", body: bytes = b""
) -> Request:
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1;rport\r\n"
        "From: <sip:alice@sip.example.com>;tag=a1\r\n"
        "To: <sip:alice@sip.example.com>\r\n"
        "Call-ID: auth-test@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def wire(message: Request | Response) -> Request | Response:
    """Serialise and parse again, as the other side receives it."""
    return parse_message(bytes(message))


def as_request(message: Request | Response) -> Request:
    assert isinstance(message, Request)
    return message


def as_response(message: Request | Response) -> Response:
    assert isinstance(message, Response)
    return message


def server(clock: Clock, **kwargs: object) -> DigestServer:
    users = {"alice": ha1_set("alice", REALM, "pw", ("SHA-256", "MD5"))}
    return DigestServer(REALM, users, clock=clock.seconds, **kwargs)  # type: ignore[arg-type]


def round_trip(
    srv: DigestServer, client: DigestClient, req: Request, *, proxy: bool = False
) -> tuple[Request | None, AuthResult]:
    """Challenge req, let the client answer, check the answer; both over the wire."""
    challenge = as_response(wire(srv.challenge(as_request(wire(req)), proxy=proxy)))
    answer = client.authorize(req, challenge)
    if answer is None:
        return None, AuthResult(False)
    return answer, srv.check(as_request(wire(answer)), proxy=proxy)


def test_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    """A 401 carries SHA-256 first, then MD5, qop=auth, one nonce and an opaque."""
    srv = server(Clock())
    resp = as_response(wire(srv.challenge(make_request())))
    assert resp.status == 401 and resp.to.tag
    offered = parse_challenges(resp.headers.get_all("WWW-Authenticate"))
    assert [c.algorithm for c in offered] == ["SHA-256", "MD5"]
    assert all(c.realm == REALM and c.qop == ("auth",) and not c.stale for c in offered)
    assert len({c.nonce for c in offered}) == 1 and offered[0].opaque == srv.opaque
    assert srv.challenge(make_request()).headers.get("WWW-Authenticate") != resp.headers.get(
        "WWW-Authenticate"
    )


def test_proxy_challenge_is_a_407_and_can_be_stale() -> None:
    """proxy=True gives 407 with Proxy-Authenticate; stale=True sets the flag."""
    resp = server(Clock()).challenge(make_request("INVITE"), proxy=True, stale=True)
    assert resp.status == 407 and "WWW-Authenticate" not in resp.headers
    assert all(c.stale for c in parse_challenges(resp.headers.get_all("Proxy-Authenticate")))


@pytest.mark.parametrize(
    ("algorithm", "qop"),
    [
        (algorithm, qop)
        for algorithm in ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")
        for qop in (("auth",), ("auth-int",), ())
        if qop or not algorithm.endswith("-sess")  # -sess needs the cnonce of qop
    ],
)
@pytest.mark.parametrize("proxy", [False, True])
def test_client_and_server_agree(algorithm: str, qop: tuple[str, ...], proxy: bool) -> None:
    """Every algorithm, with and without qop, as registrar and as proxy, verifies."""
    srv = server(Clock(), algorithm=algorithm, qop=qop)
    answer, result = round_trip(
        srv, DigestClient("alice", "pw"), make_request("INVITE", body=BODY), proxy=proxy
    )
    assert result == AuthResult(True, username="alice")
    assert answer is not None
    name = "Proxy-Authorization" if proxy else "Authorization"
    creds = parse_credentials(answer.headers.get(name) or "")
    assert creds.algorithm == algorithm and creds.qop == (qop[0] if qop else None)


def test_default_offer_is_answered_with_sha256() -> None:
    """Offered both, the client answers SHA-256 and the server accepts it."""
    answer, result = round_trip(server(Clock()), DigestClient("alice", "pw"), make_request())
    assert result.ok and answer is not None
    assert parse_credentials(answer.headers.get("Authorization") or "").algorithm == "SHA-256"


def test_wrong_password_ends_after_one_retry() -> None:
    """A wrong password: WRONG_RESPONSE, a fresh challenge, then the client gives up."""
    srv = server(Clock())
    client = DigestClient("alice", "nope")
    req: Request | None = make_request()
    attempts = 0
    while req is not None:
        attempts += 1
        assert attempts < 5, "the client loops"
        result = srv.check(as_request(wire(req)))
        assert not result.ok
        if attempts > 1:
            assert result.reason is AuthFailure.WRONG_RESPONSE and not result.stale
        req = client.authorize(req, as_response(wire(srv.challenge(req, stale=result.stale))))
    assert attempts == 2
    assert client.last_error is not None and "check the username and password" in str(
        client.last_error
    )


def test_missing_unknown_and_wrong_realm_are_told_apart() -> None:
    """No header, a stranger, and credentials for another realm have their own reasons."""
    srv = server(Clock())
    assert srv.check(make_request()).reason is AuthFailure.MISSING
    _, result = round_trip(srv, DigestClient("mallory", "pw"), make_request())
    assert result.reason is AuthFailure.UNKNOWN_USER and result.username == "mallory"
    other = DigestServer("other.realm", {}, clock=Clock().seconds)
    answer = DigestClient("alice", "pw").authorize(make_request(), other.challenge(make_request()))
    assert answer is not None
    assert srv.check(answer).reason is AuthFailure.WRONG_REALM


def test_uri_must_match_the_request_uri() -> None:
    """Credentials computed for another Request-URI are refused as URI_MISMATCH."""
    srv = server(Clock())
    answer, result = round_trip(srv, DigestClient("alice", "pw"), make_request())
    assert result.ok and answer is not None
    moved = Request(
        answer.method, parse_uri("sip:elsewhere.example.com"), answer.headers, answer.body
    )
    assert srv.check(moved).reason is AuthFailure.URI_MISMATCH


def test_replayed_or_lower_nonce_count_is_refused() -> None:
    """The same request twice is a replay; a higher nc with the same nonce is fine."""
    srv = server(Clock())
    client = DigestClient("alice", "pw")
    answer, result = round_trip(srv, client, make_request())
    assert result.ok and answer is not None
    replay = srv.check(as_request(wire(answer)))
    assert replay.reason is AuthFailure.REPLAYED and replay.stale
    nc2 = client.preauthorize(make_request())
    nc3 = client.preauthorize(make_request())
    assert srv.check(nc3).ok
    assert srv.check(nc2).reason is AuthFailure.REPLAYED
    assert srv.tracked_nonces == 1


def test_rfc2069_nonces_are_single_use() -> None:
    """Without qop there is no nc, so a nonce is accepted once only."""
    srv = server(Clock(), qop=())
    client = DigestClient("alice", "pw")
    answer, result = round_trip(srv, client, make_request())
    assert result.ok and answer is not None
    assert srv.check(client.preauthorize(make_request())).reason is AuthFailure.REPLAYED


def test_expired_nonce_is_stale_and_the_client_retries_without_failing() -> None:
    """After nonce_ttl a right answer is STALE; the stale challenge is answered at once."""
    clock = Clock()
    srv = server(clock, nonce_ttl=60.0)
    client = DigestClient("alice", "pw")
    assert round_trip(srv, client, make_request())[1].ok
    clock.advance(59)
    assert srv.check(client.preauthorize(make_request())).ok
    clock.advance(2)
    late = client.preauthorize(make_request())
    verdict = srv.check(late)
    assert verdict.reason is AuthFailure.STALE_NONCE and verdict.stale
    retry = client.authorize(late, as_response(wire(srv.challenge(late, stale=True))))
    assert retry is not None and srv.check(as_request(wire(retry))).ok


def test_nonce_from_another_server_secret_is_stale() -> None:
    """A restart with a new secret makes old nonces stale, not a wrong password."""
    clock = Clock()
    before = server(clock, secret=b"one")
    after = server(clock, secret=b"two")
    answer = DigestClient("alice", "pw").authorize(make_request(), before.challenge(make_request()))
    assert answer is not None
    assert after.check(answer).reason is AuthFailure.STALE_NONCE
    assert server(clock, secret=b"one").check(answer).ok


def test_tampered_nonce_is_stale() -> None:
    """A nonce whose HMAC does not verify is not accepted even with a right digest."""
    clock = Clock()
    srv = server(clock)
    resp = srv.challenge(make_request())
    nonce = parse_challenges(resp.headers.get_all("WWW-Authenticate"))[0].nonce
    flipped = nonce[:10] + ("B" if nonce[10] == "A" else "A") + nonce[11:]
    first = resp.headers.get("WWW-Authenticate") or ""
    resp.headers.set("WWW-Authenticate", first.replace(nonce, flipped))
    answer = DigestClient("alice", "pw").authorize(make_request(), resp)
    assert answer is not None
    assert srv.check(answer).reason is AuthFailure.STALE_NONCE


def test_replay_memory_is_bounded_by_the_ttl() -> None:
    """Used nonces are forgotten once older than the ttl."""
    clock = Clock()
    srv = server(clock, nonce_ttl=30.0)
    for _ in range(20):
        assert round_trip(srv, DigestClient("alice", "pw"), make_request())[1].ok
        clock.advance(1)
    assert srv.tracked_nonces == 20
    clock.advance(31)
    srv.check(make_request())
    assert srv.tracked_nonces == 0


def test_unsupported_algorithm_qop_and_foreign_opaque_are_refused() -> None:
    """An algorithm or qop not offered is refused; a foreign opaque is stale."""
    clock = Clock()
    md5_only = server(clock, algorithm="MD5", qop=())
    answer = DigestClient("alice", "pw").authorize(
        make_request(), md5_only.challenge(make_request())
    )
    assert answer is not None
    strict = server(clock, algorithm="SHA-256")
    assert strict.check(answer).reason is AuthFailure.UNSUPPORTED
    assert server(clock, algorithm="MD5").check(answer).reason is AuthFailure.UNSUPPORTED
    value = answer.headers.get("Authorization") or ""
    answer.headers.set("Authorization", value.replace(md5_only.opaque, "forged"))
    assert md5_only.check(answer).reason is AuthFailure.STALE_NONCE


def test_malformed_credentials_are_reported() -> None:
    """Unparseable credentials give MALFORMED with the parse error."""
    req = make_request()
    req.headers.add("Authorization", 'Digest username="alice", realm="x"')
    result = server(Clock()).check(req)
    assert result.reason is AuthFailure.MALFORMED and "uri" in result.detail


def test_user_lookup_callable_and_single_ha1_entries() -> None:
    """Users may be a callable; a plain HA1 string serves only its own hash."""
    clock = Clock()
    asked: list[tuple[str, str]] = []

    def lookup(user: str, hash_name: str) -> str | None:
        asked.append((user, hash_name))
        return ha1(user, REALM, "pw", hash_name) if user == "carol" else None

    srv = DigestServer(REALM, lookup, clock=clock.seconds)
    assert round_trip(srv, DigestClient("carol", "pw"), make_request())[1].ok
    assert asked == [("carol", "SHA-256")]
    md5_only = DigestServer(REALM, {"dave": ha1("dave", REALM, "pw")}, clock=clock.seconds)
    assert round_trip(md5_only, DigestClient("dave", "pw"), make_request())[1].reason is (
        AuthFailure.UNKNOWN_USER
    )
    md5_offer = DigestServer(
        REALM,
        {"dave": hashlib.md5(f"dave:{REALM}:pw".encode()).hexdigest()},
        clock=clock.seconds,
        algorithm="MD5",
    )
    assert round_trip(md5_offer, DigestClient("dave", "pw"), make_request())[1].ok


@pytest.mark.parametrize(
    "kwargs",
    [
        {"algorithm": "SHA-1"},
        {"algorithm": []},
        {"qop": ("auth-conf",)},
        {"nonce_ttl": 0},
        {"algorithm": "MD5-sess", "qop": ()},
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, object]) -> None:
    """Unknown algorithms or qop, an empty list, a zero ttl raise ConfigError."""
    with pytest.raises(ConfigError):
        DigestServer(REALM, {}, clock=Clock().seconds, **kwargs)  # type: ignore[arg-type]


_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF).filter(lambda c: c.isprintable()),
    max_size=16,
)


@settings(max_examples=60, deadline=None)
@given(username=_TEXT, password=_TEXT, realm=_TEXT, algorithm=st.sampled_from(["MD5", "SHA-256"]))
def test_any_credentials_verify_after_the_wire(
    username: str, password: str, realm: str, algorithm: str
) -> None:
    """Printable names, passwords and realms with quotes and backslashes verify."""
    clock = Clock()
    srv = DigestServer(
        realm,
        {username: ha1_set(username, realm, password)},
        clock=clock.seconds,
        algorithm=algorithm,
    )
    _, result = round_trip(srv, DigestClient(username, password), make_request())
    assert result == AuthResult(True, username=username)
