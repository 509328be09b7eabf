"""Digest challenges, credentials, hashes and the client (sipd.sip.auth)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipd.errors import AuthenticationError
from sipd.sip.auth import (
    Challenge,
    Credentials,
    DigestClient,
    digest_response,
    ha1,
    parse_challenge,
    parse_challenges,
    parse_credentials,
    select_challenges,
)
from sipd.sip.auth_server import ha1_set
from sipd.sip.errors import BadRequest
from sipd.sip.message import Request, Response, make_response, parse_message

REGISTER = (
    b"REGISTER sip:registrar.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfirst;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=from1\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: call-1@127.0.0.1\r\n"
    b"CSeq: 7 REGISTER\r\n"
    b"Contact: <sip:alice@127.0.0.1:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
BODY = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKinv1\r\n"
    b"From: <sip:alice@example.com>;tag=from2\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: call-2@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


def request(data: bytes = REGISTER) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def challenged(req: Request, *challenges: str, status: int = 401) -> Response:
    response = make_response(req, status, to_tag="t1")
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    for value in challenges:
        response.headers.add(name, value)
    return response


def wire(req: Request) -> Request:
    """What the peer sees: the request serialised and parsed again."""
    return request(bytes(req))


def oracle(alg: str, password: str, creds: Credentials, method: str, body: bytes = b"") -> str:
    """RFC 7616 §3.4.1 written out with hashlib, independent of sipd's code."""
    name = {"MD5": "md5", "SHA-256": "sha256"}[alg.removesuffix("-sess")]

    def h(text: str | bytes) -> str:
        data = text.encode() if isinstance(text, str) else text
        return hashlib.new(name, data).hexdigest()

    a1 = h(f"{creds.username}:{creds.realm}:{password}")
    if alg.endswith("-sess"):
        a1 = h(f"{a1}:{creds.nonce}:{creds.cnonce}")
    a2 = f"{method}:{creds.uri}" + (f":{h(body)}" if creds.qop == "auth-int" else "")
    if creds.qop is None:
        return h(f"{a1}:{creds.nonce}:{h(a2)}")
    return h(f"{a1}:{creds.nonce}:{creds.nc:08x}:{creds.cnonce}:{creds.qop}:{h(a2)}")


# -- RFC test vectors ---------------------------------------------------------

RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa",\r\n realm="testrealm@host.com",'
    ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth,'
    ' nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1",'
    ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
).replace("\r\n", "")


def test_rfc2617_example_response_matches() -> None:
    """RFC 2617 §3.5: Mufasa / Circle Of Life gives 6629fae4...4ef1."""
    creds = parse_credentials(RFC2617_AUTHORIZATION)
    assert creds.nc == 1 and creds.qop == "auth" and creds.cnonce == "0a4f113b"
    got = digest_response(
        ha1=ha1("Mufasa", "testrealm@host.com", "Circle Of Life"),
        algorithm="MD5",
        method="GET",
        uri=creds.uri,
        nonce=creds.nonce,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    assert got == "6629fae49393a05397450978507c4ef1" == creds.response


RFC7616_CHALLENGE = """Digest
       realm="http-auth@example.org",
       qop="auth, auth-int",
       algorithm=SHA-256,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""""


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_examples_match(algorithm: str, expected: str) -> None:
    """RFC 7616 §3.9.1: the SHA-256 and MD5 responses for Mufasa / Circle of Life."""
    ch = parse_challenge(" ".join(RFC7616_CHALLENGE.split()))
    assert ch.realm == "http-auth@example.org"
    assert ch.qop == ("auth", "auth-int")
    assert ch.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    got = digest_response(
        ha1=ha1("Mufasa", ch.realm, "Circle of Life", algorithm),
        algorithm=algorithm,
        method="GET",
        uri="/dir/index.html",
        nonce=ch.nonce,
        qop="auth",
        nc=1,
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert got == expected


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"])
@pytest.mark.parametrize("qop", [None, "auth", "auth-int"])
def test_response_follows_the_rfc7616_formula(algorithm: str, qop: str | None) -> None:
    """Every algorithm and qop (including -sess and RFC 2069) agrees with the oracle."""
    cnonce = "c0ffee" if qop or algorithm.endswith("-sess") else None
    creds = Credentials(
        "alice", "sip.example", "n0nce", "sip:bob@example.com", "", algorithm, qop, 5, cnonce
    )
    got = digest_response(
        ha1=ha1("alice", "sip.example", "s3cret", algorithm),
        algorithm=algorithm,
        method="INVITE",
        uri=creds.uri,
        nonce=creds.nonce,
        qop=qop,
        nc=5,
        cnonce=cnonce,
        body=BODY,
    )
    assert got == oracle(algorithm, "s3cret", creds, "INVITE", BODY)


def test_ha1_set_holds_one_hash_per_algorithm() -> None:
    """ha1_set gives the MD5 and SHA-256 HA1 a registrar stores for a user."""
    table = ha1_set("bob", "r", "pw")
    assert table == {
        "SHA-256": hashlib.sha256(b"bob:r:pw").hexdigest(),
        "MD5": hashlib.md5(b"bob:r:pw").hexdigest(),
    }


# -- parsing and serialising ----------------------------------------------------


def test_challenge_parses_odd_spacing_escapes_and_case() -> None:
    """Spaces around '=', escaped quotes, commas in quotes and case are handled."""
    ch = parse_challenge(
        'digest  realm = "a \\"quoted\\" \\\\ realm" ,nonce="x,y=z",  ALGORITHM = sha-256 ,'
        " qop=auth , stale = true"
    )
    assert ch == Challenge('a "quoted" \\ realm', "x,y=z", "SHA-256", ("auth",), None, True)


def test_challenge_serialises_with_rfc7616_quoting() -> None:
    """realm, nonce, opaque and qop are quoted; algorithm and stale are tokens."""
    ch = Challenge('r"1', "n", "SHA-256-sess", ("auth", "auth-int"), "op", True)
    assert str(ch) == (
        'Digest realm="r\\"1", nonce="n", opaque="op", algorithm=SHA-256-sess,'
        ' qop="auth,auth-int", stale=TRUE'
    )
    assert parse_challenge(str(ch)) == ch


def test_credentials_serialise_with_rfc7616_quoting() -> None:
    """username, realm, nonce, uri, response, cnonce, opaque quoted; algorithm, qop, nc not."""
    creds = Credentials("u", "r", "n", "sip:x", "ab", "MD5", "auth", 10, "cn", "op")
    assert str(creds) == (
        'Digest username="u", realm="r", nonce="n", uri="sip:x", response="ab",'
        ' algorithm=MD5, cnonce="cn", opaque="op", qop=auth, nc=0000000a'
    )
    assert parse_credentials(str(creds)) == creds


def test_several_challenges_in_one_header_and_across_headers() -> None:
    """Challenges are found in one comma list and in repeated lines; Basic is skipped."""
    found = parse_challenges(
        [
            'Basic realm="b", Digest realm="a", nonce="1", Digest realm="a", nonce="2",'
            " algorithm=SHA-256",
            'Digest realm="c", nonce="3", qop="auth"',
            "Digest realm=broken-no-nonce",
        ]
    )
    assert [(c.realm, c.nonce, c.algorithm) for c in found] == [
        ("a", "1", "MD5"),
        ("a", "2", "SHA-256"),
        ("c", "3", "MD5"),
    ]


@pytest.mark.parametrize("order", [("MD5", "SHA-256"), ("SHA-256", "MD5")])
def test_selection_prefers_sha256_in_either_order(order: tuple[str, str]) -> None:
    """RFC 8760 §2.4: of MD5 and SHA-256 for one realm the client answers SHA-256."""
    offered = [Challenge("r", "n", alg, ("auth",)) for alg in order]
    offered.append(Challenge("r", "n", "SHA-512-256", ("auth",)))
    assert select_challenges(offered)["r"].algorithm == "SHA-256"


def test_unsupported_challenges_are_not_selected() -> None:
    """Unknown algorithms, unknown qop and -sess without qop are skipped."""
    offered = [
        Challenge("a", "n", "SHA-512-256", ("auth",)),
        Challenge("b", "n", "MD5", ("auth-conf",)),
        Challenge("c", "n", "MD5-sess", ()),
    ]
    assert select_challenges(offered) == {}


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="x"',
        'Digest realm="r", nonce="n", uri="u", response="x"',
        'Digest username="u", realm="r", nonce="n", uri="u", response="x", nc=1',
        'Digest username="unterminated',
        'realm="x"',
    ],
)
def test_malformed_credentials_are_a_bad_request(value: str) -> None:
    """Credentials missing a field, with a bad nc, or not Digest raise a 400 BadRequest."""
    with pytest.raises(BadRequest) as info:
        parse_credentials(value)
    assert info.value.status == 400


_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF).filter(lambda c: c.isprintable()),
    max_size=20,
)


@given(username=_TEXT, realm=_TEXT, nonce=_TEXT, opaque=_TEXT)
def test_any_printable_strings_round_trip(
    username: str, realm: str, nonce: str, opaque: str
) -> None:
    """Quotes, backslashes, commas and spaces survive serialise -> parse."""
    creds = Credentials(username, realm, nonce, "sip:x@y", "00ff", "SHA-256", "auth", 1, nonce)
    assert parse_credentials(str(creds)) == creds
    ch = Challenge(realm, nonce, "MD5", ("auth",), opaque, False)
    assert parse_challenge(str(ch)) == ch


# -- the client ----------------------------------------------------------------


def test_authorize_builds_the_next_request() -> None:
    """The retry keeps Call-ID, tags and body, bumps CSeq, changes the branch, adds credentials."""
    req = request(INVITE)
    client = DigestClient("alice", "pw")
    new = client.authorize(req, challenged(req, 'Digest realm="r", nonce="n1", qop="auth"'))
    assert new is not None
    new = wire(new)
    assert new.call_id == req.call_id and new.from_.tag == "from2"
    assert str(new.to) == str(req.to) and new.body == BODY and new.uri == req.uri
    assert new.cseq.number == 2 and new.cseq.method == "INVITE"
    assert new.top_via.branch != req.top_via.branch
    assert new.top_via.branch is not None and new.top_via.is_rfc3261
    creds = parse_credentials(new.headers.get("Authorization") or "")
    assert (creds.realm, creds.nonce, creds.nc, creds.qop) == ("r", "n1", 1, "auth")
    assert creds.response == oracle("MD5", "pw", creds, "INVITE")
    assert "Proxy-Authorization" not in new.headers


def test_authorize_uses_the_given_branch() -> None:
    """A caller-chosen branch replaces the top Via's branch."""
    req = request()
    new = DigestClient("alice", "pw").authorize(
        req, challenged(req, 'Digest realm="r", nonce="n"'), branch="z9hG4bKmine"
    )
    assert new is not None and new.top_via.branch == "z9hG4bKmine"
    assert len(new.vias) == 1


def test_407_gets_proxy_authorization_and_other_realms_are_kept() -> None:
    """A 407 is answered in Proxy-Authorization; foreign credentials stay untouched."""
    req = request()
    foreign = 'Digest username="x", realm="other", nonce="o", uri="sip:y", response="00"'
    req.headers.add("Proxy-Authorization", foreign)
    resp = challenged(req, 'Digest realm="proxy", nonce="p1", qop="auth"', status=407)
    new = DigestClient("alice", "pw").authorize(req, resp)
    assert new is not None
    values = new.headers.get_all("Proxy-Authorization")
    assert foreign in values
    realms = sorted(parse_credentials(v).realm for v in values)
    assert realms == ["other", "proxy"]
    assert "Authorization" not in new.headers


def test_proxy_credentials_are_refreshed_when_the_registrar_challenges_next() -> None:
    """After a 407 then a 401 the request carries both, the proxy's with the next nc."""
    client = DigestClient("alice", "pw")
    req = request()
    step1 = client.authorize(
        req, challenged(req, 'Digest realm="proxy", nonce="p", qop="auth"', status=407)
    )
    assert step1 is not None
    step2 = client.authorize(step1, challenged(step1, 'Digest realm="reg", nonce="r", qop=auth'))
    assert step2 is not None
    proxy_creds = parse_credentials(step2.headers.get("Proxy-Authorization") or "")
    reg_creds = parse_credentials(step2.headers.get("Authorization") or "")
    assert proxy_creds.nc == 2 and proxy_creds.realm == "proxy"
    assert proxy_creds.response == oracle("MD5", "pw", proxy_creds, "REGISTER")
    assert reg_creds.nc == 1 and reg_creds.realm == "reg"
    assert step2.cseq.number == 9


def test_wrong_password_gives_up_on_the_second_challenge() -> None:
    """Same realm challenged again without stale: None and a clear AuthenticationError."""
    client = DigestClient("alice", "wrong")
    req = request()
    first = client.authorize(req, challenged(req, 'Digest realm="r", nonce="n1", qop="auth"'))
    assert first is not None
    again = challenged(first, 'Digest realm="r", nonce="n2", qop="auth"')
    assert client.authorize(first, again) is None
    error = client.last_error
    assert isinstance(error, AuthenticationError)
    assert "registrar at registrar.example.com" in str(error)
    assert "'alice'" in str(error) and "check the username and password" in str(error)
    assert error.status == 401 and error.realm == "r"


def test_stale_challenge_is_retried_with_the_new_nonce() -> None:
    """stale=true is not a failure: the retry uses the new nonce with nc 1."""
    client = DigestClient("alice", "pw")
    req = request()
    first = client.authorize(req, challenged(req, 'Digest realm="r", nonce="n1", qop="auth"'))
    assert first is not None
    second = client.authorize(
        first, challenged(first, 'Digest realm="r", nonce="n2", qop="auth", stale=TRUE')
    )
    assert second is not None
    creds = parse_credentials(second.headers.get("Authorization") or "")
    assert (creds.nonce, creds.nc) == ("n2", 1)
    assert len(second.headers.get_all("Authorization")) == 1


def test_endless_stale_challenges_end_with_an_error() -> None:
    """A server that calls every fresh nonce stale is given up on, not looped with."""
    client = DigestClient("alice", "pw")
    req = request()
    stale = 'Digest realm="r", nonce="{}", qop="auth", stale=true'
    step = client.authorize(req, challenged(req, 'Digest realm="r", nonce="n0", qop="auth"'))
    assert step is not None
    step = client.authorize(step, challenged(step, stale.format("n1")))
    assert step is not None
    assert client.authorize(step, challenged(step, stale.format("n2"))) is None
    assert client.last_error is not None and "stale" in str(client.last_error)


def test_rejected_preauthorization_is_answered_not_given_up() -> None:
    """A reused nonce refused without stale=true (server forgot it) is not a wrong password."""
    client = DigestClient("alice", "pw")
    req = request()
    first = client.authorize(req, challenged(req, 'Digest realm="r", nonce="n1", qop="auth"'))
    assert first is not None
    refresh = client.preauthorize(request())
    assert parse_credentials(refresh.headers.get("Authorization") or "").nc == 2
    retry = client.authorize(refresh, challenged(refresh, 'Digest realm="r", nonce="n9"'))
    assert retry is not None
    creds = parse_credentials(retry.headers.get("Authorization") or "")
    assert creds.nonce == "n9" and creds.qop is None and creds.nc is None
    assert creds.response == oracle("MD5", "pw", creds, "REGISTER")


def test_preauthorize_counts_nc_and_keeps_the_cnonce() -> None:
    """Each reuse of a nonce sends nc+1 with the same cnonce and a valid digest."""
    client = DigestClient("alice", "pw")
    req = request()
    assert client.preauthorize(req) is req
    first = client.authorize(
        req, challenged(req, 'Digest realm="r", nonce="n1", qop="auth", algorithm=SHA-256-sess')
    )
    assert first is not None
    used = [parse_credentials(first.headers.get("Authorization") or "")]
    for _ in range(3):
        again = client.preauthorize(request())
        used.append(parse_credentials(again.headers.get("Authorization") or ""))
    assert [c.nc for c in used] == [1, 2, 3, 4]
    assert len({c.cnonce for c in used}) == 1
    assert all(c.response == oracle("SHA-256-sess", "pw", c, "REGISTER") for c in used)
    assert client.preauthorize(request(), realm="elsewhere").headers.get("Authorization") is None


def test_auth_int_hashes_the_body() -> None:
    """With only qop=auth-int offered the digest covers the body."""
    req = request(INVITE)
    new = DigestClient("alice", "pw").authorize(
        req, challenged(req, 'Digest realm="r", nonce="n", qop="auth-int"')
    )
    assert new is not None
    creds = parse_credentials(new.headers.get("Authorization") or "")
    assert creds.qop == "auth-int"
    assert creds.response == oracle("MD5", "pw", creds, "INVITE", BODY)
    assert creds.response != oracle("MD5", "pw", creds, "INVITE", b"")


def test_opaque_is_echoed_and_sha256_chosen_from_several() -> None:
    """The client answers the SHA-256 offer and returns its opaque unchanged."""
    req = request()
    resp = challenged(
        req,
        'Digest realm="r", nonce="n", opaque="o1", qop="auth"',
        'Digest realm="r", nonce="n", opaque="o2", algorithm=SHA-256, qop="auth"',
    )
    new = DigestClient("alice", "pw").authorize(req, resp)
    assert new is not None
    creds = parse_credentials(new.headers.get("Authorization") or "")
    assert (creds.algorithm, creds.opaque) == ("SHA-256", "o2")


def test_unanswerable_challenge_gives_up_with_the_reason() -> None:
    """Only unknown algorithms (or a non-challenge) give None and say what was offered."""
    req = request(INVITE)
    client = DigestClient("alice", "pw")
    resp = challenged(req, 'Digest realm="r", nonce="n", algorithm=SHA-512-256')
    assert client.authorize(req, resp) is None
    assert client.last_error is not None and "SHA-512-256" in str(client.last_error)
    assert "server at example.com" in str(client.last_error)
    assert client.authorize(req, make_response(req, 403)) is None


def test_client_restricted_to_a_realm_ignores_others() -> None:
    """A client bound to one realm does not answer another realm's challenge."""
    req = request()
    client = DigestClient("alice", "pw", realm="mine")
    assert client.authorize(req, challenged(req, 'Digest realm="theirs", nonce="n"')) is None
    assert client.authorize(req, challenged(req, 'Digest realm="mine", nonce="n"')) is not None
