"""The registrar / proxy side of digest authentication (RFC 3261 §22, RFC 7616).

Nonces carry their own issue time, signed with an HMAC under a server
secret, so any nonce can be checked without a table of issued ones and it
expires by itself after ``nonce_ttl``. The only state kept is the highest
nonce-count seen per nonce that has been *used successfully*, which is what
refuses replays; entries older than the ttl are forgotten, because their
nonces have expired anyway. Passwords are never stored: the user table holds
HA1 hashes (:func:`ha1_set` makes them).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sipd.errors import ConfigError
from sipd.sip.auth import (
    ALGORITHMS,
    Challenge,
    Credentials,
    canonical_algorithm,
    digest_response,
    ha1,
    parse_credentials,
)
from sipd.sip.errors import SipParseError
from sipd.sip.message import Request, Response, make_response
from sipd.sip.uri import Uri, parse_uri

__all__ = ["AuthFailure", "AuthResult", "DigestServer", "UserLookup", "UserTable", "ha1_set"]

#: ``lookup(username, hash)`` gives the user's HA1 hex for ``"MD5"`` or
#: ``"SHA-256"``, or None for an unknown user.
UserLookup = Callable[[str, str], "str | None"]
#: username -> HA1 hex (MD5 if 32 digits, SHA-256 if 64) or ``{hash: HA1 hex}``.
UserTable = Mapping[str, "str | Mapping[str, str]"]

_STAMP = struct.Struct(">Q")
_SALT_LEN = 9
_MAC_LEN = 16
_NONCE_LEN = _STAMP.size + _SALT_LEN + _MAC_LEN  # 33 bytes: 44 base64 chars, no padding
_HEX_LENGTHS = {32: "MD5", 64: "SHA-256"}


def ha1_set(
    username: str, realm: str, password: str, algorithms: Iterable[str] = ("SHA-256", "MD5")
) -> dict[str, str]:
    """One HA1 per hash (``{"SHA-256": ..., "MD5": ...}``), for a user table.

    An MD5 HA1 cannot check a SHA-256 response, so a registrar offering both
    algorithms needs both hashes of every password.
    """
    return {
        canonical_algorithm(a).removesuffix("-sess"): ha1(username, realm, password, a)
        for a in algorithms
    }


class AuthFailure(enum.Enum):
    """Why a request's credentials were not accepted; the value reads well in a log."""

    MISSING = "no credentials"
    MALFORMED = "malformed credentials"
    WRONG_REALM = "credentials for another realm"
    UNSUPPORTED = "algorithm or qop not offered"
    URI_MISMATCH = "digest uri does not match the Request-URI"
    UNKNOWN_USER = "unknown user"
    WRONG_RESPONSE = "wrong digest response"
    STALE_NONCE = "nonce expired or not issued here"
    REPLAYED = "nonce-count replayed"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The verdict of :meth:`DigestServer.check`.

    When :attr:`stale` is true the response digest was right (the user knows
    the password) but the nonce cannot be used again: challenge with
    ``stale=True`` so the client retries without treating it as a failure.
    """

    ok: bool
    username: str | None = None
    reason: AuthFailure | None = None
    detail: str = ""

    @property
    def stale(self) -> bool:
        """True for an expired or foreign nonce, or a replayed nonce-count."""
        return self.reason in (AuthFailure.STALE_NONCE, AuthFailure.REPLAYED)


def _fail(reason: AuthFailure, detail: str = "", username: str | None = None) -> AuthResult:
    return AuthResult(False, username=username, reason=reason, detail=detail or reason.value)


class DigestServer:
    """Challenges requests and checks their digest credentials for one realm.

    ``algorithm`` is one name or a list offered in that order; the default
    offers SHA-256 then MD5 (RFC 8760 §2.4), so the user table needs both
    hashes. ``qop`` lists the protections offered; an empty one means the
    RFC 2069 form, whose nonces can each be used once only. ``clock`` gives
    seconds (``reactor.seconds``).
    """

    def __init__(
        self,
        realm: str,
        users: UserTable | UserLookup,
        *,
        clock: Callable[[], float],
        nonce_ttl: float = 300.0,
        algorithm: str | Sequence[str] = ("SHA-256", "MD5"),
        qop: Sequence[str] = ("auth",),
        secret: bytes | None = None,
    ) -> None:
        names = [algorithm] if isinstance(algorithm, str) else list(algorithm)
        self.algorithms = tuple(canonical_algorithm(a) for a in names)
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if unknown or not self.algorithms:
            raise ConfigError(
                f"digest algorithm {', '.join(unknown) or 'list is empty'}: "
                f"choose from {', '.join(ALGORITHMS)}"
            )
        self.qop = tuple(q.lower() for q in qop)
        bad_qop = [q for q in self.qop if q not in ("auth", "auth-int")]
        if bad_qop:
            raise ConfigError(f"digest qop {', '.join(bad_qop)}: choose auth and/or auth-int")
        if any(a.endswith("-sess") for a in self.algorithms) and not self.qop:
            raise ConfigError("a -sess digest algorithm needs qop (it uses the cnonce)")
        if nonce_ttl <= 0:
            raise ConfigError(f"nonce_ttl must be positive, not {nonce_ttl}")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self._users = users
        self._clock = clock
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._realm_bytes = realm.encode("utf-8")
        opaque_mac = hmac.new(self._secret, b"opaque:" + self._realm_bytes, hashlib.sha256)
        self.opaque = base64.urlsafe_b64encode(opaque_mac.digest()[:12]).decode("ascii")
        # nonce -> (highest nc used, time first used); insertion order = first use.
        self._seen: dict[str, tuple[int, float]] = {}

    # -- nonces ------------------------------------------------------------
    def new_nonce(self) -> str:
        """A fresh nonce: issue time, random salt and their HMAC, base64url."""
        stamp = _STAMP.pack(max(0, int(self._clock() * 1000)))
        salt = secrets.token_bytes(_SALT_LEN)
        return base64.urlsafe_b64encode(stamp + salt + self._mac(stamp + salt)).decode("ascii")

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, self._realm_bytes + data, hashlib.sha256).digest()[:_MAC_LEN]

    def _issued(self, nonce: str) -> float | None:
        """When we issued ``nonce``, or None if we did not (forged, or an old secret)."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_LEN:
            return None
        signed, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(signed)):
            return None
        return float(_STAMP.unpack(signed[: _STAMP.size])[0]) / 1000.0

    @property
    def tracked_nonces(self) -> int:
        """How many used nonces are remembered for replay protection."""
        return len(self._seen)

    def _forget_old(self, now: float) -> None:
        # A nonce first used more than a ttl ago was issued even earlier: expired.
        while self._seen:
            oldest = next(iter(self._seen))
            if now - self._seen[oldest][1] <= self.nonce_ttl:
                break
            del self._seen[oldest]

    # -- challenge ---------------------------------------------------------
    def challenges(
        self, *, stale: bool = False, algorithms: Sequence[str] | None = None
    ) -> list[Challenge]:
        """One challenge per offered algorithm (or per one of ``algorithms``), one nonce."""
        nonce = self.new_nonce()
        offered = self.algorithms if algorithms is None else algorithms
        return [Challenge(self.realm, nonce, a, self.qop, self.opaque, stale) for a in offered]

    def challenge(self, request: Request, *, proxy: bool = False, stale: bool = False) -> Response:
        """A 401 with WWW-Authenticate (or, for a proxy, 407 with Proxy-Authenticate).

        When the user table knows the From user, only the algorithms that
        user has an HA1 for are offered: a user stored with an MD5 hash alone
        would otherwise be asked for SHA-256 first, which no right password
        can satisfy.
        """
        response = make_response(request, 407 if proxy else 401, to_tag=secrets.token_hex(6))
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        for ch in self.challenges(stale=stale, algorithms=self._offer_for(request)):
            response.headers.add(name, str(ch))
        return response

    def _offer_for(self, request: Request) -> tuple[str, ...]:
        """The offered algorithms the request's From user has a hash for (all if unknown)."""
        users = self._users
        if not isinstance(users, Mapping):
            return self.algorithms
        try:
            entry = users.get(request.from_.uri.user or "")
        except SipParseError:
            return self.algorithms
        if entry is None:
            return self.algorithms
        hashes = {_HEX_LENGTHS.get(len(entry))} if isinstance(entry, str) else set(entry)
        usable = tuple(a for a in self.algorithms if a.removesuffix("-sess") in hashes)
        return usable or self.algorithms

    # -- check -------------------------------------------------------------
    def check(self, request: Request, *, proxy: bool = False) -> AuthResult:
        """Verify the request's credentials for this realm.

        The digest is checked before the nonce, so an expired or foreign
        nonce with a right digest is reported as stale (retry), never as a
        wrong password.
        """
        now = self._clock()
        self._forget_old(now)
        values = request.headers.get_all("Proxy-Authorization" if proxy else "Authorization")
        if not values:
            return _fail(AuthFailure.MISSING)
        creds: Credentials | None = None
        others: list[str] = []
        broken = ""
        for value in values:
            try:
                parsed = parse_credentials(value)
            except SipParseError as exc:
                broken = str(exc)
                continue
            if parsed.realm == self.realm:
                creds = parsed
                break
            others.append(parsed.realm)
        if creds is None:
            if broken:
                return _fail(AuthFailure.MALFORMED, broken)
            return _fail(AuthFailure.WRONG_REALM, f"credentials only for realms {others!r}")
        problem = self._shape_problem(creds, request.uri)
        if problem is not None:
            return problem
        algorithm = canonical_algorithm(creds.algorithm or "MD5")
        user = creds.username
        stored = self._ha1(user, algorithm.removesuffix("-sess"))
        if stored is None:
            return _fail(AuthFailure.UNKNOWN_USER, f"no {algorithm} HA1 for user {user!r}", user)
        expected = digest_response(
            ha1=stored,
            algorithm=algorithm,
            method=request.method,
            uri=creds.uri,
            nonce=creds.nonce,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
            body=request.body,
        )
        if not hmac.compare_digest(expected.encode(), creds.response.lower().encode("utf-8")):
            return _fail(AuthFailure.WRONG_RESPONSE, username=user)
        issued = self._issued(creds.nonce)
        # Both nonce and opaque derive from the secret: after a restart they
        # are foreign, yet the user knows the password, so it is "stale".
        if issued is None or (creds.opaque is not None and creds.opaque != self.opaque):
            return _fail(AuthFailure.STALE_NONCE, "nonce or opaque not issued by this server", user)
        if abs(now - issued) > self.nonce_ttl:
            return _fail(AuthFailure.STALE_NONCE, f"nonce is {now - issued:.0f} s old", user)
        count = creds.nc if creds.qop is not None and creds.nc is not None else 0
        seen = self._seen.get(creds.nonce)
        if seen is not None and count <= seen[0]:
            return _fail(AuthFailure.REPLAYED, f"nc {count} after {seen[0]}", user)
        self._seen[creds.nonce] = (count, seen[1] if seen is not None else now)
        return AuthResult(True, username=user)

    def _shape_problem(self, creds: Credentials, request_uri: Uri) -> AuthResult | None:
        """Whatever is wrong with the credentials before any hashing, else None."""
        algorithm = canonical_algorithm(creds.algorithm or "MD5")
        if algorithm not in self.algorithms:
            return _fail(AuthFailure.UNSUPPORTED, f"algorithm {algorithm} was not offered")
        if creds.qop is None:
            if self.qop:
                return _fail(AuthFailure.UNSUPPORTED, "qop is missing but was offered")
        elif creds.qop not in self.qop:
            return _fail(AuthFailure.UNSUPPORTED, f"qop {creds.qop} was not offered")
        elif creds.nc is None or creds.cnonce is None:
            return _fail(AuthFailure.MALFORMED, "qop without nc or cnonce")
        if not _same_uri(creds.uri, request_uri):
            return _fail(AuthFailure.URI_MISMATCH, f"uri {creds.uri!r} vs {request_uri}")
        return None

    def _ha1(self, username: str, hash_name: str) -> str | None:
        users = self._users
        if not isinstance(users, Mapping):
            return users(username, hash_name)
        entry = users.get(username)
        if entry is None:
            return None
        if isinstance(entry, str):
            return entry if _HEX_LENGTHS.get(len(entry)) == hash_name else None
        return entry.get(hash_name)


def _same_uri(digest_uri: str, request_uri: Uri) -> bool:
    """RFC 3261 §22.4 (via RFC 7616 §3.4.6): the digest uri names the Request-URI."""
    if digest_uri == str(request_uri):
        return True
    try:
        return parse_uri(digest_uri) == request_uri
    except SipParseError:
        return False
