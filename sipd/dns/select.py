"""RFC 3263 §4 server location as pure logic: no sockets, no reactor, no clock.

:func:`locate` is a generator in the sans-I/O style of h11: it yields the
DNS questions it needs (a tuple of :class:`~sipd.dns.records.Query`, asked
together), is sent back the :class:`~sipd.dns.records.Answer` for each, in
the same order, and finally returns a :class:`~sipd.dns.targets.Resolution`
or raises :class:`~sipd.dns.errors.DnsError`. The Twisted adapter
(:mod:`sipd.dns.resolver`) answers from its cache or the network;
:func:`locate_sync` answers from any callable (canned records in tests, a
static table). So every branch of the RFC is tested without a DNS server,
and the adapter holds no RFC logic at all.

The steps (RFC 3263 §4.1, §4.2):

1. The target is the ``maddr`` parameter, else the URI host.
2. An IP literal (or ``localhost``) is used as it is: the URI's port or the
   transport's default, the URI's transport or UDP (TLS for sips).
3. A port in the URI: A/AAAA only, UDP (TLS for sips) unless ``transport=``.
4. ``transport=`` without a port: SRV for that transport only.
5. Otherwise NAPTR: records whose service is ``SIP+D2U``, ``SIP+D2T`` or
   ``SIPS+D2T`` (only ``SIPS+D2T`` for a sips URI), for a transport we
   support, flags ``s``, no regexp; by order, then preference. Each one's
   replacement is an SRV name. No usable NAPTR: SRV ``_sip._udp``,
   ``_sip._tcp``, ``_sips._tcp`` for the supported transports in our
   preference order.
6. SRV records in RFC 2782 order (priority, then weighted random); each
   target's A/AAAA records give the addresses. No SRV at all: A/AAAA of
   the host at the transport's default port.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Protocol

from sipd.dns.errors import DnsError
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
from sipd.dns.targets import Resolution, Target
from sipd.errors import SipdValueError
from sipd.sip.uri import Uri

__all__ = [
    "DEFAULT_ADDRESS_TYPES",
    "Locator",
    "RandInt",
    "locate",
    "locate_sync",
    "order_srv",
    "usable_naptr",
]

#: Which address records to ask for, in the order their addresses are tried.
DEFAULT_ADDRESS_TYPES = (RecordType.A, RecordType.AAAA)

#: What :func:`locate` is: yields questions, is sent answers, returns the targets.
Locator = Generator[tuple[Query, ...], tuple[Answer, ...], Resolution]

_Hop = tuple[str, int, Transport]
_Addresses = Generator[tuple[Query, ...], tuple[Answer, ...], tuple[Target, ...]]

#: Names that never go to the DNS (RFC 6761 §6.3), with the address per type.
_LOCALHOST = {RecordType.A: "127.0.0.1", RecordType.AAAA: "::1"}


class RandInt(Protocol):
    """The random source of the SRV weighting: ``random.Random`` fits; tests inject one."""

    def randint(self, a: int, b: int, /) -> int:
        """A number from ``a`` to ``b``, both included."""
        ...


def order_srv(records: Iterable[SrvRecord], rng: RandInt) -> list[SrvRecord]:
    """SRV records in the order RFC 2782 says to try them.

    Lowest priority first. Within one priority, repeatedly: put the records
    of weight 0 first (the rest in their given order), draw a number from 0
    to the sum of the weights (inclusive), and take the first record whose
    running sum of weights reaches it. A weight-0 record is so picked only
    when the draw is 0, or when only weight-0 records are left.
    """
    by_priority: dict[int, list[SrvRecord]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[SrvRecord] = []
    for priority in sorted(by_priority):
        group = by_priority[priority]
        pending = [r for r in group if r.weight == 0] + [r for r in group if r.weight > 0]
        while pending:
            draw = rng.randint(0, sum(r.weight for r in pending))
            running = 0
            for index, record in enumerate(pending):
                running += record.weight
                if running >= draw:
                    ordered.append(pending.pop(index))
                    break
            else:  # only reachable with a random source that draws out of range
                raise SipdValueError(f"random draw {draw} is beyond the SRV weights")
    return ordered


def usable_naptr(
    records: Iterable[Record], supported: Sequence[Transport], secure: bool
) -> list[tuple[Transport, str]]:
    """The NAPTR routes we can use, best first: ``(transport, SRV name)`` pairs.

    RFC 3263 §4.1: a record is skipped when its service names a transport we
    do not support (SCTP, or anything else), a non-TLS one for a sips URI,
    when its flags are not ``s`` (the next step must be SRV), when it has a
    regexp (SIP uses the replacement), or when it has no replacement. The
    rest are sorted by order, then preference (RFC 3403 §4.1).
    """
    by_service = {t.naptr_service: t for t in supported if t is Transport.TLS or not secure}
    naptrs = sorted(
        (r for r in records if isinstance(r, NaptrRecord)), key=lambda r: (r.order, r.preference)
    )
    routes: list[tuple[Transport, str]] = []
    for record in naptrs:
        transport = by_service.get(record.service.upper())
        replacement = record.replacement.rstrip(".").lower()
        if transport is None or record.flags.lower() != "s" or record.regexp or not replacement:
            continue
        if (transport, replacement) not in routes:
            routes.append((transport, replacement))
    return routes


def locate(
    destination: Uri | Destination,
    supported: Sequence[Transport] = (Transport.UDP,),
    *,
    rng: RandInt,
    address_types: Sequence[RecordType] = DEFAULT_ADDRESS_TYPES,
) -> Locator:
    """Locate ``destination`` per RFC 3263 §4 (see the module docstring for the steps).

    ``supported`` is the set of transports we can send on, in our order of
    preference (it orders the SRV queries when there is no NAPTR);
    ``address_types`` says which of A and AAAA to ask for, and in which
    order to try the addresses. Raises :class:`DnsError` when no target
    results; its message names the DNS name and record type that failed.
    """
    if isinstance(destination, Destination):
        dest = destination
    else:
        dest = Destination.from_uri(destination)
    supported = _check_supported(supported)
    types = _check_address_types(address_types)
    explicit = _explicit_transport(dest, supported)
    if dest.secure:
        _default_transport(dest, supported)  # no TLS, no sips: fail before any query
    host = dest.host.rstrip(".").lower()
    literal = ip_literal(dest.host)
    if literal is not None or host == "localhost" or host.endswith(".localhost"):
        transport = explicit or _default_transport(dest, supported)
        port = dest.port or transport.default_port
        addresses = [literal] if literal is not None else [_LOCALHOST[t] for t in types]
        return Resolution(dest, tuple(Target(a, port, transport, dest.host) for a in addresses))

    chain = _Chain()
    if dest.port is not None:
        transport = explicit or _default_transport(dest, supported)
        targets = yield from _addresses(dest, [(host, dest.port, transport)], types, chain)
        return Resolution(dest, targets, chain.ttl)

    if explicit is not None:
        routes = [(explicit, f"{explicit.srv_prefix}.{host}")]
        fallback = explicit
    else:
        (naptr,) = yield (Query(host, RecordType.NAPTR),)
        chain.use(naptr, dest)
        routes = usable_naptr(naptr.records, supported, dest.secure)
        if routes:
            fallback = routes[0][0]
        else:
            fallback = _default_transport(dest, supported)
            routes = [
                (t, f"{t.srv_prefix}.{host}")
                for t in supported
                if t is Transport.TLS or not dest.secure
            ]

    answers = yield tuple(Query(name, RecordType.SRV) for _, name in routes)
    _check_answers(routes, answers)
    hops: list[_Hop] = []
    refused: list[str] = []
    for (transport, name), answer in zip(routes, answers, strict=True):
        chain.use(answer, dest)
        srvs = [r for r in answer.records if isinstance(r, SrvRecord)]
        live = [r for r in srvs if r.target != "."]
        if srvs and not live:
            refused.append(name)
        hops.extend((r.target, r.port, transport) for r in order_srv(live, rng))
    if not hops and refused:
        # RFC 2782: a lone "." target says the service is decidedly not there.
        raise DnsError(
            f"cannot locate a server for {dest}: SRV {refused[0]} says there is no SIP "
            "service at this domain (target '.')",
            name=refused[0],
            rtype="SRV",
            cause="service not available",
        )
    if not hops:
        hops = [(host, fallback.default_port, fallback)]
    targets = yield from _addresses(dest, hops, types, chain)
    return Resolution(dest, targets, chain.ttl)


def locate_sync(
    destination: Uri | Destination,
    lookup: Callable[[Query], Answer],
    supported: Sequence[Transport] = (Transport.UDP,),
    *,
    rng: RandInt,
    address_types: Sequence[RecordType] = DEFAULT_ADDRESS_TYPES,
) -> Resolution:
    """Run :func:`locate`, answering every question with ``lookup`` (no I/O of its own)."""
    locator = locate(destination, supported, rng=rng, address_types=address_types)
    try:
        queries = next(locator)
        while True:
            queries = locator.send(tuple(lookup(q) for q in queries))
    except StopIteration as stop:
        result: Resolution = stop.value
        return result


class _Chain:
    """The smallest validity of the answers used so far (RFC 3263: min TTL on the chain)."""

    def __init__(self) -> None:
        self.ttl = math.inf

    def use(self, answer: Answer, dest: Destination) -> None:
        """Take ``answer`` into account; a failed NAPTR or SRV query ends the location."""
        if answer.error is not None:
            raise DnsError(
                f"cannot locate a server for {dest}: {answer.query.rtype} lookup of "
                f"{answer.query.name} failed: {answer.error}",
                name=answer.query.name,
                rtype=str(answer.query.rtype),
                cause=answer.error,
            )
        self.ttl = min(self.ttl, answer.valid_for)


def _addresses(
    dest: Destination, hops: list[_Hop], types: tuple[RecordType, ...], chain: _Chain
) -> _Addresses:
    """The targets of ``hops`` (name, port, transport), each name's addresses in turn.

    A name that does not resolve is skipped (RFC 3263 §4.3: try the next
    SRV target); only when none resolves does location fail, naming the
    first name and what its lookup said.
    """
    names = list(dict.fromkeys(name for name, _, _ in hops if ip_literal(name) is None))
    queries = tuple(Query(name, rtype) for name in names for rtype in types)
    answers: dict[Query, Answer] = {}
    if queries:
        replies = yield queries
        _check_answers(queries, replies)
        answers = dict(zip(queries, replies, strict=True))
    targets: list[Target] = []
    problem: tuple[str, str] | None = None
    for name, port, transport in hops:
        literal = ip_literal(name)
        found = [literal] if literal is not None else []
        replies_for_name = [answers[Query(name, rtype)] for rtype in types] if not found else []
        for answer in replies_for_name:
            if answer.error is None:
                chain.use(answer, dest)
            else:
                chain.ttl = 0.0
            found.extend(r.address for r in answer.records if isinstance(r, AddressRecord))
        if not found and problem is None:
            problem = (name, _worst(replies_for_name))
        targets.extend(Target(address, port, transport, name) for address in found)
    seen: dict[tuple[str, int, Transport], Target] = {}
    for target in targets:  # the first of a duplicate keeps its place and its name
        seen.setdefault((target.host, target.port, target.transport), target)
    unique = tuple(seen.values())
    if not unique:
        assert problem is not None
        name, cause = problem
        rtype = "/".join(types)
        raise DnsError(
            f"cannot locate a server for {dest}: {rtype} lookup of {name} gave {cause}",
            name=name,
            rtype=rtype,
            cause=cause,
        )
    return unique


def _worst(answers: list[Answer]) -> str:
    """What to report for a name without addresses: an error beats NXDOMAIN beats NODATA."""
    for answer in answers:
        if answer.error is not None:
            return f"an error: {answer.error}"
    for answer in answers:
        if answer.nxdomain:
            return answer.describe()
    return "no records (NODATA)"


def _check_answers(queries: Sequence[object], answers: tuple[Answer, ...]) -> None:
    if len(answers) != len(queries):
        raise SipdValueError(f"{len(queries)} DNS questions got {len(answers)} answers")


def _check_supported(supported: Sequence[Transport]) -> tuple[Transport, ...]:
    unique = tuple(dict.fromkeys(Transport(t) for t in supported))
    if not unique:
        raise SipdValueError("locating a SIP server needs at least one supported transport")
    return unique


def _check_address_types(types: Sequence[RecordType]) -> tuple[RecordType, ...]:
    unique = tuple(dict.fromkeys(RecordType(t) for t in types))
    if not unique or not set(unique) <= {RecordType.A, RecordType.AAAA}:
        raise SipdValueError(f"address types must be A and/or AAAA, not {list(types)}")
    return unique


def _explicit_transport(dest: Destination, supported: tuple[Transport, ...]) -> Transport | None:
    """The transport the destination names (``transport=``), if we support it."""
    if dest.transport is not None and dest.transport not in supported:
        raise _unsupported(dest, dest.transport, supported)
    return dest.transport


def _default_transport(dest: Destination, supported: tuple[Transport, ...]) -> Transport:
    """RFC 3263 §4.1 without NAPTR help: UDP for sip, TLS (over TCP) for sips.

    A sip URI may fall back on another transport we support; a sips one may not.
    """
    wanted = Transport.TLS if dest.secure else Transport.UDP
    if wanted in supported:
        return wanted
    if not dest.secure:
        return supported[0]
    raise _unsupported(dest, wanted, supported)


def _unsupported(
    dest: Destination, transport: Transport, supported: tuple[Transport, ...]
) -> DnsError:
    have = ", ".join(supported)
    return DnsError(
        f"cannot send to {dest}: it needs transport {transport}, and sipd supports only {have}",
        name=dest.host,
        rtype=None,
        cause=f"transport {transport} not supported",
    )
