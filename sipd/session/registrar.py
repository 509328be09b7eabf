"""A registrar and location service (RFC 3261 §10.3) for the daemon.

Bindings live in memory and expire lazily: a lookup drops what has run out,
so the location service needs no timer per binding. Authentication uses
:class:`~sipd.sip.auth_server.DigestServer` with HA1 hashes from the config,
so the daemon never stores a clear-text password.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sipd.sip.address import NameAddr
from sipd.sip.auth_server import DigestServer
from sipd.sip.message import Request, Response, make_response
from sipd.sip.transaction import ServerTransaction

__all__ = ["Binding", "LocationService", "Registrar"]


def _tag() -> str:
    return secrets.token_hex(4)


#: Granted when the client asks for nothing (RFC 3261 §10.2.1.1 suggests 3600).
DEFAULT_EXPIRES = 3600


@dataclass(slots=True)
class Binding:
    """One contact of an address-of-record."""

    contact: NameAddr
    expires_at: float
    call_id: str
    cseq: int
    source: tuple[str, int]

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


class LocationService:
    """Address-of-record -> bindings, expiring lazily."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._bindings: dict[str, dict[str, Binding]] = {}

    @staticmethod
    def key(user: str | None, host: str) -> str:
        """The AOR key: user only (one domain per daemon), case-sensitive user part."""
        return user or ""

    def lookup(self, aor: str) -> list[Binding]:
        """Live bindings of ``aor``, most recent first."""
        now = self._clock()
        table = self._bindings.get(aor)
        if not table:
            return []
        for uri, binding in list(table.items()):
            if binding.expires_at <= now:
                del table[uri]
        if not table:
            del self._bindings[aor]
            return []
        return sorted(table.values(), key=lambda b: -b.expires_at)

    def bindings(self) -> dict[str, list[Binding]]:
        """Every AOR with live bindings."""
        return {aor: self.lookup(aor) for aor in list(self._bindings) if self.lookup(aor)}

    def update(self, aor: str, binding: Binding) -> None:
        self._bindings.setdefault(aor, {})[str(binding.contact.uri)] = binding

    def remove(self, aor: str, contact_uri: str | None = None) -> None:
        if contact_uri is None:
            self._bindings.pop(aor, None)
        elif aor in self._bindings:
            self._bindings[aor].pop(contact_uri, None)

    def __len__(self) -> int:
        return sum(len(self.lookup(aor)) for aor in list(self._bindings))


class Registrar:
    """Answers REGISTER: challenge, check, bind, answer with the current bindings."""

    def __init__(
        self,
        realm: str,
        users: dict[str, object],
        *,
        clock: Callable[[], float],
        min_expires: int = 60,
        max_expires: int = 7200,
        auth: bool = True,
        nonce_ttl: float = 300.0,
        algorithm: str | Sequence[str] = ("SHA-256", "MD5"),
    ) -> None:
        self.realm = realm
        self.auth = (
            DigestServer(
                realm,
                users,  # type: ignore[arg-type]
                clock=clock,
                nonce_ttl=nonce_ttl,
                algorithm=algorithm,
            )
            if auth
            else None
        )
        self.users = users
        self.clock = clock
        self.location = LocationService(clock)
        self.min_expires = min_expires
        self.max_expires = max_expires

    def authenticate(self, request: Request, txn: ServerTransaction) -> str | None:
        """The authenticated user, or None after answering the challenge."""
        if self.auth is None:
            return request.from_.uri.user or ""
        result = self.auth.check(request)
        if result.ok:
            return result.username
        txn.respond(self.auth.challenge(request, stale=result.stale))
        return None

    def handle(self, request: Request, source: tuple[str, int], txn: ServerTransaction) -> None:
        """Process one REGISTER (RFC 3261 §10.3 steps 3-8)."""
        to_uri = request.to.uri
        user = self.authenticate(request, txn)
        if user is None:
            return
        if self.auth is not None and to_uri.user != user:
            txn.respond(
                make_response(request, 403, f"{user} may not register {to_uri.user}", to_tag=_tag())
            )
            return
        if self.auth is None and to_uri.user not in self.users and self.users:
            txn.respond(make_response(request, 404, "Unknown User", to_tag=_tag()))
            return
        aor = LocationService.key(to_uri.user, to_uri.host)
        header_expires = request.headers.get("Expires")
        default = (
            int(header_expires) if header_expires and header_expires.strip().isdigit() else None
        )
        contacts = request.headers.values("Contact")
        call_id = request.call_id
        cseq = request.cseq.number
        now = self.clock()
        if contacts == ["*"]:
            if default != 0:
                txn.respond(
                    make_response(request, 400, "Wildcard Contact Needs Expires 0", to_tag=_tag())
                )
                return
            self.location.remove(aor)
            txn.respond(self._ok(request, aor))
            return
        existing = {str(b.contact.uri): b for b in self.location.lookup(aor)}
        updates: list[tuple[NameAddr, int]] = []
        for contact in request.contacts:
            value = contact.param("expires")
            expires = int(value) if value and value.isdigit() else default
            if expires is None:
                expires = DEFAULT_EXPIRES
            if 0 < expires < self.min_expires:
                response = make_response(request, 423, to_tag=_tag())
                response.headers.add("Min-Expires", str(self.min_expires))
                txn.respond(response)
                return
            old = existing.get(str(contact.uri))
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                txn.respond(make_response(request, 500, "Out Of Order CSeq", to_tag=_tag()))
                return
            updates.append((contact, min(expires, self.max_expires)))
        for contact, expires in updates:
            if expires == 0:
                self.location.remove(aor, str(contact.uri))
            else:
                bare = contact.without_param("expires")
                self.location.update(aor, Binding(bare, now + expires, call_id, cseq, source))
        txn.respond(self._ok(request, aor))

    def _ok(self, request: Request, aor: str) -> Response:
        response = make_response(request, 200, to_tag=_tag())
        now = self.clock()
        for binding in self.location.lookup(aor):
            contact = binding.contact.with_param("expires", str(binding.remaining(now)))
            response.headers.add("Contact", str(contact))
        response.headers.add("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))
        return response
