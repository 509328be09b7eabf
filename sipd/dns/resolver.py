"""The Twisted side of RFC 3263: ask ``twisted.names``, cache, share, never block.

:class:`Rfc3263Resolver` drives the pure :func:`~sipd.dns.select.locate`
generator: each batch of questions it yields is answered from the
:class:`~sipd.dns.cache.DnsCache`, from a query already on the wire for the
same name and type (concurrent identical lookups share one query), from the
hosts file for A/AAAA, or by a new ``twisted.names`` query. It holds no RFC
logic, only the translation of ``twisted.names`` results and failures into
:class:`~sipd.dns.records.Answer` values.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import defer
from twisted.names import client, dns
from twisted.names import error as dns_error

from sipd.dns.cache import Clock, DnsCache
from sipd.dns.records import (
    AddressRecord,
    Answer,
    Destination,
    NaptrRecord,
    Query,
    Record,
    RecordType,
    SrvRecord,
    Transport,
    ip_literal,
)
from sipd.dns.select import DEFAULT_ADDRESS_TYPES, Locator, RandInt, locate
from sipd.dns.targets import Resolution
from sipd.errors import ConfigError
from sipd.logs import Logger
from sipd.sip.uri import Uri

__all__ = [
    "DEFAULT_TIMEOUT",
    "DnsBackend",
    "Rfc3263Resolver",
    "answer_from_failure",
    "answer_from_result",
    "parse_nameserver",
]

_log = Logger()

#: Seconds to wait for each attempt (twisted.names retries every server per value).
DEFAULT_TIMEOUT = (1.0, 3.0)

_TYPE_CODES = {
    RecordType.NAPTR: dns.NAPTR,
    RecordType.SRV: dns.SRV,
    RecordType.A: dns.A,
    RecordType.AAAA: dns.AAAA,
}

#: rcode failures of twisted.names and the words an operator knows them by.
_RCODE_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (dns_error.DNSServerError, "server failure (SERVFAIL)"),
    (dns_error.DNSQueryRefusedError, "query refused (REFUSED)"),
    (dns_error.DNSNotImplementedError, "query type not implemented by the server (NOTIMP)"),
    (dns_error.DNSFormatError, "query rejected as malformed (FORMERR)"),
    (dns_error.DNSUnknownError, "unknown DNS error code"),
)


class DnsBackend(Protocol):
    """The four ``IResolver`` lookups RFC 3263 needs (``twisted.names.client.Resolver``).

    Each returns a Deferred of ``(answers, authority, additional)`` lists of
    ``RRHeader`` and fails with ``twisted.names.error`` exceptions.
    """

    def lookupNamingAuthorityPointer(self, name: str) -> defer.Deferred[Any]: ...

    def lookupService(self, name: str) -> defer.Deferred[Any]: ...

    def lookupAddress(self, name: str) -> defer.Deferred[Any]: ...

    def lookupIPV6Address(self, name: str) -> defer.Deferred[Any]: ...


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"10.0.0.53"``, ``"127.0.0.1:5353"``, ``"::1"`` or ``"[::1]:5353"`` as (ip, port).

    Nameservers must be IP addresses (resolving a resolver's name would
    need a resolver); raises :class:`~sipd.errors.ConfigError` otherwise.
    """
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), text) if rest.startswith(":") else -1
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, text)
    address = ip_literal(host)
    if address is None or not 0 < port < 65536:
        raise ConfigError(
            f"DNS server {text!r} is not an IP address with an optional port "
            "(write 10.0.0.53, 10.0.0.53:5353 or [::1]:5353)"
        )
    return (address, port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"DNS server {whole!r} has a bad port {text!r}")
    return int(text)


def answer_from_result(query: Query, result: Any) -> Answer:
    """An :class:`Answer` from a ``twisted.names`` lookup's ``(answers, authority, _)``.

    Records of other types in the answer section (a CNAME on the way) are
    not returned, but their TTL counts: the chain is only as good as its
    shortest-lived link. No records of the asked type is NODATA, with the
    SOA-derived negative TTL when the server sent an SOA (RFC 2308 §5).
    """
    answers, authority = list(result[0]), list(result[1])
    wanted = _TYPE_CODES[query.rtype]
    records = tuple(_record(rr) for rr in answers if rr.type == wanted)
    if records:
        return Answer(query, records, ttl=float(min(rr.ttl for rr in answers)))
    return Answer(query, (), ttl=_negative_ttl(authority))


def answer_from_failure(query: Query, exc: BaseException, servers: str = "") -> Answer:
    """An :class:`Answer` for a failed lookup: NXDOMAIN is negative, the rest an error."""
    if isinstance(exc, dns_error.DNSNameError):
        message = exc.args[0] if exc.args else None
        authority = list(getattr(message, "authority", None) or ())
        return Answer(query, (), ttl=_negative_ttl(authority), nxdomain=True)
    if isinstance(exc, defer.TimeoutError):
        where = f" from {servers}" if servers else ""
        return Answer(query, error=f"timed out (no answer{where})")
    for kind, text in _RCODE_ERRORS:
        if isinstance(exc, kind):
            return Answer(query, error=text)
    return Answer(query, error=f"{type(exc).__name__}: {exc}")


def _negative_ttl(authority: list[Any]) -> float | None:
    """RFC 2308 §5: the smaller of the SOA record's TTL and its MINIMUM field."""
    for rr in authority:
        if rr.type == dns.SOA:
            return float(min(rr.ttl, rr.payload.minimum))
    return None


def _text(value: Any) -> str:
    """A ``Charstr`` or ``Name`` of twisted.names as text."""
    raw = getattr(value, "string", None) or getattr(value, "name", None) or b""
    return bytes(raw).decode("ascii", "replace")


def _record(rr: Any) -> Record:
    payload, ttl = rr.payload, int(rr.ttl)
    if rr.type == dns.NAPTR:
        return NaptrRecord(
            order=int(payload.order),
            preference=int(payload.preference),
            flags=_text(payload.flags),
            service=_text(payload.service),
            regexp=_text(payload.regexp),
            replacement=_text(payload.replacement),
            ttl=ttl,
        )
    if rr.type == dns.SRV:
        return SrvRecord(
            priority=int(payload.priority),
            weight=int(payload.weight),
            port=int(payload.port),
            target=_text(payload.target),
            ttl=ttl,
        )
    if rr.type == dns.A:
        return AddressRecord(str(payload.dottedQuad()), ttl)
    return AddressRecord(socket.inet_ntop(socket.AF_INET6, payload.address), ttl)


def _hosts_addresses(path: str, name: str) -> list[str]:
    """The addresses ``path`` (an /etc/hosts file) gives ``name``; [] if none or unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        fields = line.partition("#")[0].split()
        if len(fields) >= 2 and name in (f.rstrip(".").lower() for f in fields[1:]):
            address = ip_literal(fields[0])
            if address is not None:
                found.append(address)
    return found


class Rfc3263Resolver:
    """Locates SIP servers per RFC 3263 with ``twisted.names``; never blocks the reactor.

    ``nameservers`` lists ``(ip, port)`` pairs or ``"ip[:port]"`` texts to
    ask (in turn on timeouts);
    None reads the system's ``resolv_conf`` the way twisted.names does
    (re-read every minute, so :meth:`close` it when done). ``timeout`` is
    seconds per attempt, or a sequence for retries. ``supported`` is the
    transports we can send on, in preference order; ``address_types`` which
    of A/AAAA to use. ``hosts_file`` answers A/AAAA before the DNS, as the
    system resolver does (None: DNS only). ``clock`` (default: the reactor)
    times the cache; ``rng`` draws the SRV weights; ``backend`` replaces the
    twisted.names client (tests).
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int] | str] | None = None,
        *,
        timeout: float | Sequence[float] = DEFAULT_TIMEOUT,
        supported: Sequence[Transport] = (Transport.UDP,),
        address_types: Sequence[RecordType] = DEFAULT_ADDRESS_TYPES,
        reactor: Any = None,
        clock: Clock | None = None,
        cache: DnsCache | None = None,
        backend: DnsBackend | None = None,
        rng: RandInt | None = None,
        resolv_conf: str = "/etc/resolv.conf",
        hosts_file: str | None = "/etc/hosts",
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        self.nameservers = (
            None if nameservers is None else [parse_nameserver(_join(s)) for s in nameservers]
        )
        if self.nameservers is not None and not self.nameservers:
            raise ConfigError("an empty list of DNS servers: give one, or None for the system's")
        self.timeout = _timeouts(timeout)
        self.supported = tuple(Transport(t) for t in supported)
        self.address_types = tuple(RecordType(t) for t in address_types)
        self.cache = cache if cache is not None else DnsCache(clock or reactor)
        self.hosts_file = hosts_file
        self.resolv_conf = resolv_conf
        self._backend = backend
        self._own_backend: Any = None
        self._rng: RandInt = rng if rng is not None else random.Random()
        self._inflight: dict[Query, list[defer.Deferred[Answer]]] = {}
        #: Questions that went to the DNS (not answered by the cache or a shared query).
        self.queries_sent = 0

    def resolve(
        self, destination: Uri | Destination, *, supported: Sequence[Transport] | None = None
    ) -> defer.Deferred[Resolution]:
        """The ordered targets for ``destination``; fails with :class:`DnsError`.

        Fires at once (no reactor turn) when nothing needs the network: an IP
        literal, or every record set cached.
        """
        locator = locate(
            destination,
            self.supported if supported is None else supported,
            rng=self._rng,
            address_types=self.address_types,
        )
        return defer.ensureDeferred(self._drive(locator))

    async def _drive(self, locator: Locator) -> Resolution:
        try:
            queries = next(locator)
            while True:
                answers = await defer.gatherResults(
                    [self.lookup(q) for q in queries], consumeErrors=True
                )
                queries = locator.send(tuple(answers))
        except StopIteration as stop:
            result: Resolution = stop.value
            _log.debug(
                "located {destination}: {targets}",
                destination=str(result.destination),
                targets=[str(t) for t in result.targets],
            )
            return result

    def lookup(self, query: Query) -> defer.Deferred[Answer]:
        """The answer to one question: cached, shared with an identical one, or asked."""
        cached = self.cache.get(query)
        if cached is not None:
            return defer.succeed(cached)
        mine: defer.Deferred[Answer] = defer.Deferred()
        waiters = self._inflight.get(query)
        if waiters is not None:
            waiters.append(mine)
            return mine
        self._inflight[query] = [mine]
        defer.ensureDeferred(self._ask(query)).addCallback(self._answered, query)
        return mine

    def _answered(self, answer: Answer, query: Query) -> None:
        answer = self.cache.put(answer)
        if answer.error is not None:
            _log.info("DNS {query} failed: {error}", query=str(query), error=answer.error)
        for waiter in self._inflight.pop(query, []):
            if not waiter.called:
                waiter.callback(answer)

    async def _ask(self, query: Query) -> Answer:
        if self.hosts_file is not None and query.rtype in (RecordType.A, RecordType.AAAA):
            family = socket.AF_INET if query.rtype is RecordType.A else socket.AF_INET6
            found = [
                a
                for a in _hosts_addresses(self.hosts_file, query.name)
                if (":" in a) == (family == socket.AF_INET6)
            ]
            if found:
                # TTL 0: not cached, so an edit of the file is seen on the next call.
                return Answer(query, tuple(AddressRecord(a, 0) for a in found), ttl=0.0)
        self.queries_sent += 1
        try:
            result = await self._method(query.rtype)(query.name)
            # Translating inside the try: a record we cannot read fails this one
            # query with a message, instead of leaving its waiters hanging.
            return answer_from_result(query, result)
        except Exception as exc:
            return answer_from_failure(query, exc, self._servers_text())

    def _method(self, rtype: RecordType) -> Callable[[str], defer.Deferred[Any]]:
        backend = self.backend
        methods = {
            RecordType.NAPTR: backend.lookupNamingAuthorityPointer,
            RecordType.SRV: backend.lookupService,
            RecordType.A: backend.lookupAddress,
            RecordType.AAAA: backend.lookupIPV6Address,
        }
        return methods[rtype]

    @property
    def backend(self) -> DnsBackend:
        """The twisted.names client, made on first use (IP literals never need one)."""
        if self._backend is None:
            timeout = tuple(self.timeout)
            if self.nameservers is not None:
                made = client.Resolver(  # type: ignore[no-untyped-call]
                    servers=list(self.nameservers), timeout=timeout, reactor=self._reactor
                )
            else:
                made = client.Resolver(  # type: ignore[no-untyped-call]
                    resolv=self.resolv_conf, timeout=timeout, reactor=self._reactor
                )
            self._own_backend = made
            self._backend = made
        return self._backend

    def _servers_text(self) -> str:
        servers = self.nameservers
        if servers is None:
            servers = list(getattr(self._own_backend, "dynServers", None) or [])
        return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers)

    def close(self) -> None:
        """Stop re-reading resolv.conf (the client's only timer); the cache stays usable."""
        parse_call = getattr(self._own_backend, "_parseCall", None)
        if parse_call is not None and parse_call.active():
            parse_call.cancel()


def _join(server: tuple[str, int] | str) -> str:
    """A configured server, ``(ip, port)`` or text, as text for :func:`parse_nameserver`."""
    if isinstance(server, str):
        return server
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _timeouts(timeout: float | Sequence[float]) -> tuple[float, ...]:
    values = (timeout,) if isinstance(timeout, int | float) else tuple(timeout)
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"DNS timeout must be one or more positive seconds, not {timeout!r}")
    return tuple(float(v) for v in values)
