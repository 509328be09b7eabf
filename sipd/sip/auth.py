"""Digest authentication: challenges, credentials, hashes and the client side.

RFC 3261 §22 borrows HTTP digest authentication; RFC 7616 is its current
text (SHA-256, the ``-sess`` variants, which parameters are quoted) and
RFC 8760 brings SHA-256 to SIP. Everything here is sans-I/O: a
:class:`DigestClient` takes the challenged request and its 401/407 and gives
back the request to send, or ``None`` when retrying would only loop.

The server side (nonces, replay protection) lives in :mod:`sipd.sip.auth_server`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sipd.errors import AuthenticationError
from sipd.sip.errors import BadRequest
from sipd.sip.grammar import quote, split_list, unquote
from sipd.sip.message import Request, Response
from sipd.sip.via import MAGIC_COOKIE

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "DigestClient",
    "canonical_algorithm",
    "digest_response",
    "ha1",
    "parse_challenge",
    "parse_challenges",
    "parse_credentials",
    "select_challenges",
]

#: The algorithms sipd answers and offers, strongest first (RFC 8760 §2.4).
ALGORITHMS: tuple[str, ...] = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")

_CANONICAL = {name.lower(): name for name in ALGORITHMS}
_HASHLIB = {"MD5": "md5", "SHA-256": "sha256"}
# Lower is stronger; within one hash family the server's order is kept.
_STRENGTH = {"SHA-256": 0, "MD5": 1}
_QOPS = ("auth", "auth-int")
_SCHEME_RE = re.compile(r"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+)(?:\s+(.*))?$", re.S)
_NC_RE = re.compile(r"^[0-9A-Fa-f]{8}$")


def canonical_algorithm(name: str) -> str:
    """The RFC spelling of an algorithm name (they are case-insensitive); unknown kept."""
    name = name.strip()
    return _CANONICAL.get(name.lower(), name)


def _base(algorithm: str) -> str:
    return canonical_algorithm(algorithm).removesuffix("-sess")


def _h(algorithm: str, data: str | bytes) -> str:
    name = _HASHLIB.get(_base(algorithm))
    if name is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.new(name, raw).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(username:realm:password)``: what a registrar stores instead of the password.

    For a ``-sess`` algorithm this is the stored part; the session key also
    mixes in nonce and cnonce, which :func:`digest_response` does.
    """
    return _h(algorithm, f"{username}:{realm}:{password}")


def digest_response(
    *,
    ha1: str,
    algorithm: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: int | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value of RFC 7616 §3.4.1 (RFC 2069 form when ``qop`` is None).

    Taking HA1 rather than a password lets the server run the same code on
    its stored hashes; for ``-sess`` the session key
    ``H(HA1:nonce:cnonce)`` is derived here.
    """
    key = ha1.lower()
    if canonical_algorithm(algorithm).endswith("-sess"):
        if cnonce is None:
            raise ValueError(f"{algorithm} needs a cnonce")
        key = _h(algorithm, f"{key}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _h(algorithm, f"{method}:{uri}:{_h(algorithm, body)}")
    elif qop is None or qop == "auth":
        ha2 = _h(algorithm, f"{method}:{uri}")
    else:
        raise ValueError(f"unsupported qop {qop!r}")
    if qop is None:
        return _h(algorithm, f"{key}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    return _h(algorithm, f"{key}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``Digest`` challenge of a WWW-Authenticate or Proxy-Authenticate header."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @property
    def supported(self) -> bool:
        """True if sipd can answer it: a known algorithm and qop, ``-sess`` only with qop."""
        if self.algorithm not in ALGORITHMS:
            return False
        if self.qop and not any(q in _QOPS for q in self.qop):
            return False
        return not (self.algorithm.endswith("-sess") and not self.qop)

    def __str__(self) -> str:
        parts = [f"realm={quote(self.realm)}", f"nonce={quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=TRUE")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Credentials:
    """``Digest`` credentials of an Authorization or Proxy-Authorization header.

    ``algorithm`` is None when the header had none (RFC 2069 peers: MD5).
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    qop: str | None = None
    nc: int | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def __str__(self) -> str:
        # RFC 7616 §3.4: algorithm, qop and nc are tokens; the rest are quoted.
        parts = [
            f"username={quote(self.username)}",
            f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce)}",
            f"uri={quote(self.uri)}",
            f"response={quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        if self.cnonce is not None:
            parts.append(f"cnonce={quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        return "Digest " + ", ".join(parts)


def _auth_items(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split a header value into ``(scheme, params)`` groups.

    One WWW-Authenticate line may carry several challenges
    (``Digest a=1, b=2, Digest a=3``): an element that starts with a token
    followed by whitespace (and not by ``=``) opens a new group.
    """
    groups: list[tuple[str, dict[str, str]]] = []
    for element in split_list(value, ","):
        match = _SCHEME_RE.match(element)
        rest: str | None = element
        # "realm = x" (odd spacing) is a parameter, "Digest realm=x" a new scheme.
        if match and not (match.group(2) or "").startswith("="):
            groups.append((match.group(1), {}))
            rest = match.group(2)
        if not rest:
            continue
        if not groups:
            raise BadRequest(f"authentication header without a scheme: {value[:60]!r}")
        name, eq, raw = rest.partition("=")
        if not eq:
            continue  # token68 of a scheme we do not speak (Basic, Bearer...)
        groups[-1][1].setdefault(name.strip().lower(), unquote(raw.strip()))
    return groups


def _challenge_from(params: dict[str, str]) -> Challenge:
    if "realm" not in params or "nonce" not in params:
        raise BadRequest("Digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=canonical_algorithm(params.get("algorithm", "MD5")),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def parse_challenge(value: str) -> Challenge:
    """Parse one ``Digest`` challenge; a 400 :class:`BadRequest` if it is not one."""
    groups = _auth_items(value)
    if not groups or groups[0][0].lower() != "digest":
        raise BadRequest(f"not a Digest challenge: {value[:60]!r}")
    return _challenge_from(groups[0][1])


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Every well-formed Digest challenge in these header lines, in order.

    Other schemes and broken challenges are skipped: one bad offer must not
    hide a good one next to it.
    """
    out: list[Challenge] = []
    for value in values:
        try:
            groups = _auth_items(value)
        except BadRequest:
            continue
        for scheme, params in groups:
            if scheme.lower() != "digest":
                continue
            try:
                out.append(_challenge_from(params))
            except BadRequest:
                continue
    return out


def parse_credentials(value: str) -> Credentials:
    """Parse ``Digest username=..., ...``; a 400 :class:`BadRequest` when malformed."""
    groups = _auth_items(value)
    if len(groups) != 1 or groups[0][0].lower() != "digest":
        raise BadRequest(f"not Digest credentials: {value[:60]!r}")
    p = groups[0][1]
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise BadRequest(f"Digest credentials without {', '.join(missing)}")
    nc: int | None = None
    if "nc" in p:
        if not _NC_RE.match(p["nc"]):
            raise BadRequest(f"bad nonce-count {p['nc']!r}")
        nc = int(p["nc"], 16)
    return Credentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"],
        algorithm=canonical_algorithm(p["algorithm"]) if "algorithm" in p else None,
        qop=p["qop"].lower() if "qop" in p else None,
        nc=nc,
        cnonce=p.get("cnonce"),
        opaque=p.get("opaque"),
    )


def select_challenges(challenges: Iterable[Challenge]) -> dict[str, Challenge]:
    """Per realm, the strongest challenge sipd can answer (RFC 8760 §2.4)."""
    best: dict[str, Challenge] = {}
    for ch in challenges:
        if not ch.supported:
            continue
        current = best.get(ch.realm)
        if current is None or _STRENGTH[_base(ch.algorithm)] < _STRENGTH[_base(current.algorithm)]:
            best[ch.realm] = ch
    return best


def _header_names(proxy: bool) -> tuple[str, str]:
    if proxy:
        return "Proxy-Authenticate", "Proxy-Authorization"
    return "WWW-Authenticate", "Authorization"


def _try_credentials(value: str) -> Credentials | None:
    try:
        return parse_credentials(value)
    except BadRequest:
        return None


@dataclass(slots=True)
class _NonceState:
    """What a client remembers of one realm's nonce to count and reuse it."""

    challenge: Challenge
    cnonce: str
    nc: int = 0


class DigestClient:
    """The UAC side of digest authentication for one username and password.

    :meth:`authorize` answers a 401/407. It gives up (``None``, with the
    reason in :attr:`last_error`) when a realm rejects credentials we made
    for a fresh nonce without saying the nonce was stale: that means a wrong
    username or password, and asking again would loop. ``stale=true`` is
    retried with the new nonce. ``realm`` restricts the client to one realm.
    """

    #: How many of our own fresh answers are remembered to recognise rejections.
    MAX_REMEMBERED = 64

    def __init__(self, username: str, password: str, *, realm: str | None = None) -> None:
        self.username = username
        self._password = password
        self.realm = realm
        self.last_error: AuthenticationError | None = None
        self._nonces: dict[tuple[bool, str], _NonceState] = {}
        # response digest of each fresh answer -> was it an answer to stale=true?
        self._fresh: dict[str, bool] = {}

    def authorize(
        self, request: Request, response: Response, *, branch: str | None = None
    ) -> Request | None:
        """The request to send after ``response`` challenged ``request``, or None.

        The new request keeps Call-ID, From, To and body, has CSeq + 1 and a
        new top-Via branch (``branch``, or a random RFC 3261 one), answers
        every realm challenged, and refreshes credentials it holds for other
        realms with the next nonce-count.
        """
        self.last_error = None
        if response.status not in (401, 407):
            return self._give_up(request, response, "", f"{response.status} is not a challenge")
        proxy = response.status == 407
        challenge_header, credentials_header = _header_names(proxy)
        offered = parse_challenges(response.headers.get_all(challenge_header))
        chosen = select_challenges(offered)
        if self.realm is not None:
            chosen = {r: c for r, c in chosen.items() if r == self.realm}
        if not chosen:
            what = ", ".join(f"{c.algorithm} in realm {c.realm!r}" for c in offered)
            why = f"no challenge sipd can answer (offered: {what or 'none'})"
            return self._give_up(request, response, "", why)
        sent = [_try_credentials(v) for v in request.headers.get_all(credentials_header)]
        ours = {c.realm: c for c in sent if c is not None and c.response in self._fresh}
        for realm, ch in chosen.items():
            previous = ours.get(realm)
            if previous is None:
                continue  # first answer, or a pre-authorised guess: answer it
            if not ch.stale:
                return self._give_up(request, response, realm, "")
            if self._fresh[previous.response]:
                return self._give_up(request, response, realm, "it keeps calling nonces stale")
        return self._next_request(request, proxy, chosen, branch)

    def _next_request(
        self, request: Request, proxy: bool, chosen: dict[str, Challenge], branch: str | None
    ) -> Request:
        """The retry: CSeq + 1, a new branch, fresh credentials for ``chosen``."""
        headers = request.headers.copy()
        cseq = request.cseq
        headers.set("CSeq", f"{cseq.number + 1} {cseq.method}")
        via = request.top_via.with_param("branch", branch or MAGIC_COOKIE + secrets.token_hex(8))
        headers.pop_first_value("Via")
        headers.prepend("Via", str(via))
        for kind in (False, True):
            name = _header_names(kind)[1]
            old = headers.get_all(name)
            headers.remove(name)
            for value in old:
                creds = _try_credentials(value)
                if creds is None:
                    headers.add(name, value)
                    continue
                if kind == proxy and creds.realm in chosen:
                    continue  # replaced below
                # Credentials we made for another realm: same nonce, next nc.
                state = self._nonces.get((kind, creds.realm))
                if state is not None and state.challenge.nonce == creds.nonce:
                    value = str(self._credentials(state, request))
                headers.add(name, value)
        name = _header_names(proxy)[1]
        for realm, ch in chosen.items():
            state = _NonceState(ch, secrets.token_hex(8))
            self._nonces[(proxy, realm)] = state
            fresh = self._credentials(state, request)
            self._remember(fresh.response, ch.stale)
            headers.add(name, str(fresh))
        return Request(request.method, request.uri, headers, request.body, request.version)

    def preauthorize(self, request: Request, *, realm: str | None = None) -> Request:
        """Add credentials from remembered nonces, saving the 401 round trip.

        Used for a REGISTER refresh or the next request to the same server:
        each remembered realm (or only ``realm``) that the request has no
        credentials for gets them, with the nonce-count incremented. Returns
        ``request`` itself when there is nothing to add, else a copy.
        """
        headers = None
        for (proxy, known), state in self._nonces.items():
            if realm is not None and known != realm:
                continue
            name = _header_names(proxy)[1]
            present = (_try_credentials(v) for v in request.headers.get_all(name))
            if any(c is not None and c.realm == known for c in present):
                continue
            if headers is None:
                headers = request.headers.copy()
            headers.add(name, str(self._credentials(state, request)))
        if headers is None:
            return request
        return Request(request.method, request.uri, headers, request.body, request.version)

    def _credentials(self, state: _NonceState, request: Request) -> Credentials:
        ch = state.challenge
        qop = "auth" if "auth" in ch.qop else ("auth-int" if "auth-int" in ch.qop else None)
        state.nc += 1
        uri = str(request.uri)
        response = digest_response(
            ha1=ha1(self.username, ch.realm, self._password, ch.algorithm),
            algorithm=ch.algorithm,
            method=request.method,
            uri=uri,
            nonce=ch.nonce,
            qop=qop,
            nc=state.nc if qop else None,
            cnonce=state.cnonce if qop or ch.algorithm.endswith("-sess") else None,
            body=request.body,
        )
        return Credentials(
            username=self.username,
            realm=ch.realm,
            nonce=ch.nonce,
            uri=uri,
            response=response,
            algorithm=ch.algorithm,
            qop=qop,
            nc=state.nc if qop else None,
            cnonce=state.cnonce if qop else None,
            opaque=ch.opaque,
        )

    def _remember(self, response: str, stale: bool) -> None:
        self._fresh[response] = stale
        while len(self._fresh) > self.MAX_REMEMBERED:
            del self._fresh[next(iter(self._fresh))]

    def _give_up(
        self, request: Request, response: Response, realm: str, why: str
    ) -> Request | None:
        """Record in :attr:`last_error` why :meth:`authorize` gives up; returns None."""
        if response.status == 407:
            role = "proxy"
        elif request.method == "REGISTER":
            role = "registrar"
        else:
            role = "server"
        where = f"{role} at {request.uri.host}"
        if why:
            message = f"{where} asked for credentials sipd cannot give: {why}"
        else:
            message = (
                f"{where} rejected the credentials for user {self.username!r}"
                f" (realm {realm!r}); check the username and password"
            )
        self.last_error = AuthenticationError(
            message, status=response.status, username=self.username, realm=realm
        )
        return None
