"""RFC 3263 server location with canned records: selection, SRV order, cursor, cache, adapter.

The pure :func:`~sipd.dns.select.locate` runs through ``locate_sync``
against a dict of answers that records every question asked, so each test
checks both the targets and which DNS queries the RFC step made. The
Twisted adapter runs against a fake ``IResolver`` whose Deferreds the test
fires by hand, and the cache against ``task.Clock``: nothing here touches
the network or waits.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.python.failure import Failure

from sipd.dns import (
    AddressRecord,
    Answer,
    Destination,
    DnsCache,
    DnsError,
    NaptrRecord,
    Query,
    RecordType,
    Resolution,
    Rfc3263Resolver,
    SrvRecord,
    Target,
    TargetCursor,
    Transport,
    locate_sync,
    order_srv,
    parse_nameserver,
    usable_naptr,
)
from sipd.dns.resolver import answer_from_failure, answer_from_result
from sipd.errors import CallFailed, ConfigError, SipdValueError
from sipd.sip.uri import parse_uri

UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS
NAPTR, SRV, A, AAAA = RecordType.NAPTR, RecordType.SRV, RecordType.A, RecordType.AAAA
ALL = (UDP, TCP, TLS)


# -- canned DNS --------------------------------------------------------------------------
class Zone:
    """Canned answers by (name, type); anything else is NXDOMAIN. Logs every question."""

    def __init__(self) -> None:
        self.answers: dict[Query, Answer] = {}
        self.asked: list[Query] = []

    def add(self, name: str, *records: Any, ttl: float | None = None) -> Zone:
        rtype = {NaptrRecord: NAPTR, SrvRecord: SRV}.get(type(records[0]))
        if rtype is None:
            rtype = AAAA if ":" in records[0].address else A
        query = Query(name, rtype)
        self.answers[query] = Answer(query, tuple(records), ttl=ttl)
        return self

    def fail(self, name: str, rtype: RecordType, error: str) -> Zone:
        query = Query(name, rtype)
        self.answers[query] = Answer(query, error=error)
        return self

    def empty(self, name: str, rtype: RecordType, ttl: float = 30.0) -> Zone:
        query = Query(name, rtype)
        self.answers[query] = Answer(query, ttl=ttl)
        return self

    def __call__(self, query: Query) -> Answer:
        self.asked.append(query)
        return self.answers.get(query, Answer(query, ttl=30.0, nxdomain=True))


def naptr(order: int, pref: int, service: str, replacement: str, **kw: Any) -> NaptrRecord:
    fields: dict[str, Any] = {"flags": "s", "regexp": "", "ttl": 300, **kw}
    return NaptrRecord(order, pref, service=service, replacement=replacement, **fields)


def srv(priority: int, weight: int, port: int, target: str, ttl: int = 300) -> SrvRecord:
    return SrvRecord(priority, weight, port, target, ttl)


def addr(address: str, ttl: int = 300) -> AddressRecord:
    return AddressRecord(address, ttl)


class NoDns:
    """A lookup that must not be called: the step needs no DNS."""

    def __call__(self, query: Query) -> Answer:
        raise AssertionError(f"no DNS query expected, got {query}")


def run(
    uri: str | Destination,
    zone: Any,
    supported: Sequence[Transport] = (UDP,),
    rng: Any = None,
    types: Sequence[RecordType] = (A, AAAA),
) -> Resolution:
    dest = parse_uri(uri) if isinstance(uri, str) else uri
    return locate_sync(dest, zone, supported, rng=rng or random.Random(7), address_types=types)


def hops(resolution: Resolution) -> list[tuple[str, int, str]]:
    return [(t.host, t.port, t.transport.value) for t in resolution.targets]


# -- IP literals, localhost, maddr ------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:bob@192.0.2.7", ("192.0.2.7", 5060, "udp")),
        ("sip:bob@192.0.2.7:5070", ("192.0.2.7", 5070, "udp")),
        ("sips:bob@192.0.2.7", ("192.0.2.7", 5061, "tls")),
        ("sip:bob@192.0.2.7;transport=tcp", ("192.0.2.7", 5060, "tcp")),
        ("sip:bob@192.0.2.7;transport=TLS", ("192.0.2.7", 5061, "tls")),
        ("sips:[2001:db8::1]:5999;transport=tcp", ("2001:db8::1", 5999, "tls")),
        ("sip:bob@example.test;maddr=198.51.100.9", ("198.51.100.9", 5060, "udp")),
    ],
)
def test_an_ip_literal_is_used_as_it_is_without_dns(
    uri: str, expected: tuple[str, int, str]
) -> None:
    result = run(uri, NoDns(), supported=ALL)
    assert hops(result) == [expected]
    assert result.ttl == math.inf


def test_localhost_never_goes_to_the_dns() -> None:
    """RFC 6761: localhost is the loopback, per address type asked for."""
    assert hops(run("sip:localhost:5080", NoDns())) == [
        ("127.0.0.1", 5080, "udp"),
        ("::1", 5080, "udp"),
    ]
    assert hops(run("sip:a.localhost", NoDns(), types=(A,))) == [("127.0.0.1", 5060, "udp")]


# -- explicit port: A/AAAA only ---------------------------------------------------------------
def test_an_explicit_port_asks_only_for_addresses() -> None:
    zone = Zone().add("pbx.example.test", addr("192.0.2.1"), addr("192.0.2.2"))
    zone.add("pbx.example.test", addr("2001:db8::5"))
    result = run("sip:bob@PBX.example.test:5080", zone)
    assert zone.asked == [Query("pbx.example.test", A), Query("pbx.example.test", AAAA)]
    assert hops(result) == [
        ("192.0.2.1", 5080, "udp"),
        ("192.0.2.2", 5080, "udp"),
        ("2001:db8::5", 5080, "udp"),
    ]
    assert result.targets[0].hostname == "pbx.example.test"


def test_an_explicit_port_on_a_sips_uri_uses_tls_and_the_address_order_given() -> None:
    zone = Zone().add("pbx.example.test", addr("192.0.2.1"))
    zone.add("pbx.example.test", addr("2001:db8::5"))
    result = run("sips:pbx.example.test:6000", zone, supported=ALL, types=(AAAA, A))
    assert hops(result) == [("2001:db8::5", 6000, "tls"), ("192.0.2.1", 6000, "tls")]


def test_an_explicit_port_with_no_address_fails_naming_the_name_and_type() -> None:
    with pytest.raises(DnsError) as info:
        run("sip:nope.example.test:5080", Zone())
    err = info.value
    assert (err.name, err.rtype) == ("nope.example.test", "A/AAAA")
    assert "NXDOMAIN" in str(err) and "nope.example.test" in str(err)
    assert isinstance(err, CallFailed)


# -- transport parameter: SRV for that transport ------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "srv_name", "transport", "default_port"),
    [
        ("sip:example.test;transport=tcp", "_sip._tcp.example.test", "tcp", 5060),
        ("sip:example.test;transport=udp", "_sip._udp.example.test", "udp", 5060),
        ("sip:example.test;transport=tls", "_sips._tcp.example.test", "tls", 5061),
        ("sips:example.test;transport=tcp", "_sips._tcp.example.test", "tls", 5061),
    ],
)
def test_a_transport_parameter_asks_srv_for_that_transport_only(
    uri: str, srv_name: str, transport: str, default_port: int
) -> None:
    zone = Zone().add(srv_name, srv(10, 0, 5999, "sip1.example.test"))
    zone.add("sip1.example.test", addr("192.0.2.10"))
    result = run(uri, zone, supported=ALL)
    assert zone.asked[0] == Query(srv_name, SRV)
    assert Query("example.test", NAPTR) not in zone.asked
    assert hops(result) == [("192.0.2.10", 5999, transport)]
    # Without the SRV record: the host's addresses at the transport's default port.
    bare = Zone().add("example.test", addr("192.0.2.20"))
    assert hops(run(uri, bare, supported=ALL)) == [("192.0.2.20", default_port, transport)]


@pytest.mark.parametrize(
    ("uri", "supported", "words"),
    [
        ("sip:example.test;transport=tcp", (UDP,), "transport tcp"),
        ("sips:example.test;transport=udp", ALL, "transport=udp"),
        ("sip:example.test;transport=sctp", ALL, "transport=sctp"),
        ("sips:example.test", (UDP, TCP), "transport tls"),
        ("sips:192.0.2.1", (UDP,), "transport tls"),
        ("tel:+15551234", ALL, "tel"),
    ],
)
def test_a_transport_we_cannot_use_fails_before_any_query(
    uri: str, supported: tuple[Transport, ...], words: str
) -> None:
    with pytest.raises(DnsError, match=words) as info:
        run(uri, NoDns(), supported=supported)
    assert info.value.rtype is None


# -- NAPTR ---------------------------------------------------------------------------
def napr_zone() -> Zone:
    zone = Zone()
    zone.add(
        "example.test",
        naptr(20, 10, "SIP+D2U", "_sip._udp.example.test"),
        naptr(10, 50, "SIP+D2T", "_sip._tcp.example.test"),
        naptr(10, 10, "SIPS+D2T", "_sips._tcp.example.test"),
    )
    zone.add("_sip._udp.example.test", srv(10, 0, 5070, "u.example.test"))
    zone.add("_sip._tcp.example.test", srv(10, 0, 5080, "t.example.test"))
    zone.add("_sips._tcp.example.test", srv(10, 0, 5081, "s.example.test"))
    zone.add("u.example.test", addr("192.0.2.1"))
    zone.add("t.example.test", addr("192.0.2.2"))
    zone.add("s.example.test", addr("192.0.2.3"))
    return zone


def test_naptr_records_are_followed_by_order_then_preference() -> None:
    zone = napr_zone()
    result = run("sip:bob@example.test", zone, supported=ALL)
    assert hops(result) == [
        ("192.0.2.3", 5081, "tls"),
        ("192.0.2.2", 5080, "tcp"),
        ("192.0.2.1", 5070, "udp"),
    ]
    assert zone.asked[:4] == [
        Query("example.test", NAPTR),
        Query("_sips._tcp.example.test", SRV),
        Query("_sip._tcp.example.test", SRV),
        Query("_sip._udp.example.test", SRV),
    ]
    assert [t.hostname for t in result.targets] == [
        "s.example.test",
        "t.example.test",
        "u.example.test",
    ]


def test_naptr_services_we_do_not_support_are_skipped() -> None:
    assert hops(run("sip:example.test", napr_zone(), supported=(UDP,))) == [
        ("192.0.2.1", 5070, "udp")
    ]
    assert hops(run("sip:example.test", napr_zone(), supported=(UDP, TCP))) == [
        ("192.0.2.2", 5080, "tcp"),
        ("192.0.2.1", 5070, "udp"),
    ]
    # A sips URI discards every non-TLS service.
    assert hops(run("sips:example.test", napr_zone(), supported=ALL)) == [
        ("192.0.2.3", 5081, "tls")
    ]


def test_usable_naptr_skips_foreign_services_flags_regexps_and_empty_replacements() -> None:
    records = [
        naptr(1, 1, "SIP+D2S", "_sip._sctp.example.test"),  # SCTP: not ours
        naptr(1, 2, "E2U+sip", "x.example.test"),  # ENUM, not RFC 3263
        naptr(1, 3, "SIP+D2U", "_sip._udp.a.test", flags="u"),  # not "s": no SRV step
        naptr(1, 4, "SIP+D2U", "", regexp="!^.*$!sip:x@y!"),  # a regexp: not SIP's
        naptr(1, 5, "SIP+D2U", "."),  # no replacement
        naptr(2, 9, "sip+d2u", "_SIP._UDP.B.test."),  # case and dot do not matter
        naptr(2, 9, "SIP+D2U", "_sip._udp.b.test"),  # a duplicate route counts once
        naptr(2, 1, "SIP+D2T", "_sip._tcp.b.test"),
    ]
    assert usable_naptr(records, [UDP, TCP], secure=False) == [
        (TCP, "_sip._tcp.b.test"),
        (UDP, "_sip._udp.b.test"),
    ]
    assert usable_naptr(records, [UDP, TCP], secure=True) == []


def test_naptr_with_nothing_usable_falls_back_to_srv_in_our_preference_order() -> None:
    zone = Zone().add("example.test", naptr(10, 10, "SIP+D2S", "_sip._sctp.example.test"))
    zone.add("_sip._udp.example.test", srv(10, 0, 5070, "u.example.test"))
    zone.add("_sip._tcp.example.test", srv(10, 0, 5080, "t.example.test"))
    zone.add("u.example.test", addr("192.0.2.1")).add("t.example.test", addr("192.0.2.2"))
    result = run("sip:example.test", zone, supported=(TCP, UDP))
    srv_queries = [q for q in zone.asked if q.rtype is SRV]
    assert srv_queries == [
        Query("_sip._tcp.example.test", SRV),
        Query("_sip._udp.example.test", SRV),
    ]
    assert hops(result) == [("192.0.2.2", 5080, "tcp"), ("192.0.2.1", 5070, "udp")]


def test_naptr_pointing_at_a_missing_srv_falls_back_to_addresses_with_its_transport() -> None:
    zone = Zone().add("example.test", naptr(10, 10, "SIP+D2T", "_sip._tcp.example.test"))
    zone.add("example.test", addr("192.0.2.44"))
    assert hops(run("sip:example.test", zone, supported=ALL)) == [("192.0.2.44", 5060, "tcp")]


def test_a_failing_naptr_query_fails_with_its_name_and_type() -> None:
    zone = Zone().fail("example.test", NAPTR, "server failure (SERVFAIL)")
    with pytest.raises(DnsError) as info:
        run("sip:example.test", zone)
    assert (info.value.name, info.value.rtype) == ("example.test", "NAPTR")
    assert "NAPTR lookup of example.test failed: server failure (SERVFAIL)" in str(info.value)


# -- no NAPTR: SRV per transport, then A/AAAA -------------------------------------------------
def test_without_naptr_srv_is_asked_for_each_supported_transport() -> None:
    zone = Zone().empty("example.test", NAPTR)
    zone.add("_sip._udp.example.test", srv(10, 0, 5070, "u.example.test"))
    zone.add("u.example.test", addr("192.0.2.1"))
    result = run("sip:example.test", zone, supported=ALL)
    assert [q for q in zone.asked if q.rtype is SRV] == [
        Query("_sip._udp.example.test", SRV),
        Query("_sip._tcp.example.test", SRV),
        Query("_sips._tcp.example.test", SRV),
    ]
    assert hops(result) == [("192.0.2.1", 5070, "udp")]


def test_without_naptr_a_sips_uri_asks_only_sips_srv() -> None:
    zone = Zone()
    zone.add("_sips._tcp.example.test", srv(10, 0, 5999, "s.example.test"))
    zone.add("s.example.test", addr("192.0.2.3"))
    assert hops(run("sips:example.test", zone, supported=ALL)) == [("192.0.2.3", 5999, "tls")]
    assert [q for q in zone.asked if q.rtype is SRV] == [Query("_sips._tcp.example.test", SRV)]


@pytest.mark.parametrize(
    ("uri", "supported", "expected"),
    [
        ("sip:example.test", ALL, ("192.0.2.9", 5060, "udp")),
        ("sip:example.test", (TCP,), ("192.0.2.9", 5060, "tcp")),
        ("sips:example.test", ALL, ("192.0.2.9", 5061, "tls")),
    ],
)
def test_without_naptr_or_srv_the_host_addresses_are_used_at_the_default_port(
    uri: str, supported: tuple[Transport, ...], expected: tuple[str, int, str]
) -> None:
    zone = Zone().add("example.test", addr("192.0.2.9"))
    assert hops(run(uri, zone, supported=supported)) == [expected]


def test_nxdomain_everywhere_fails_naming_the_host_and_address_types() -> None:
    zone = Zone()
    with pytest.raises(DnsError) as info:
        run("sip:bob@nope.example.test", zone)
    assert (info.value.name, info.value.rtype) == ("nope.example.test", "A/AAAA")
    assert info.value.cause == "no such domain (NXDOMAIN)"
    assert "sip:nope.example.test" in str(info.value)
    # Fell through every step first: NAPTR, SRV, then A and AAAA.
    assert [q.rtype for q in zone.asked] == [NAPTR, SRV, A, AAAA]


def test_a_failing_srv_query_fails_rather_than_guess_another_route() -> None:
    zone = Zone().fail("_sip._udp.example.test", SRV, "timed out (no answer)")
    zone.add("example.test", addr("192.0.2.9"))
    with pytest.raises(DnsError) as info:
        run("sip:example.test", zone)
    assert "SRV lookup of _sip._udp.example.test failed: timed out" in str(info.value)


def test_an_srv_target_of_dot_says_there_is_no_service() -> None:
    zone = Zone().add("_sip._udp.example.test", srv(0, 0, 0, "."))
    zone.add("example.test", addr("192.0.2.9"))
    with pytest.raises(DnsError, match="no SIP service") as info:
        run("sip:example.test", zone)
    assert info.value.rtype == "SRV"


def test_an_srv_target_that_does_not_resolve_is_skipped() -> None:
    zone = Zone().add(
        "_sip._udp.example.test",
        srv(10, 0, 5070, "gone.example.test"),
        srv(20, 0, 5071, "ok.example.test"),
    )
    zone.add("ok.example.test", addr("192.0.2.5"))
    assert hops(run("sip:example.test", zone)) == [("192.0.2.5", 5071, "udp")]
    # When none resolves, the error names the first one.
    zone = Zone().add("_sip._udp.example.test", srv(10, 0, 5070, "gone.example.test"))
    zone.fail("gone.example.test", A, "server failure (SERVFAIL)")
    with pytest.raises(DnsError) as info:
        run("sip:example.test", zone)
    assert "gone.example.test gave an error: server failure (SERVFAIL)" in str(info.value)


def test_an_srv_target_that_is_an_ip_literal_is_used_without_a_query() -> None:
    zone = Zone().add("_sip._udp.example.test", srv(10, 0, 5070, "192.0.2.77"))
    assert hops(run("sip:example.test", zone)) == [("192.0.2.77", 5070, "udp")]
    assert [q.rtype for q in zone.asked] == [NAPTR, SRV]


def test_duplicate_targets_are_tried_once() -> None:
    zone = Zone().add(
        "_sip._udp.example.test",
        srv(10, 0, 5070, "a.example.test"),
        srv(20, 0, 5070, "b.example.test"),
    )
    zone.add("a.example.test", addr("192.0.2.5"), addr("192.0.2.6"))
    zone.add("b.example.test", addr("192.0.2.5"))
    result = run("sip:example.test", zone)
    assert hops(result) == [("192.0.2.5", 5070, "udp"), ("192.0.2.6", 5070, "udp")]
    assert result.first.hostname == "a.example.test"


def test_the_resolution_ttl_is_the_smallest_on_the_chain() -> None:
    zone = Zone().add("example.test", naptr(10, 10, "SIP+D2U", "_sip._udp.example.test"))
    zone.add("_sip._udp.example.test", srv(10, 0, 5070, "u.example.test", ttl=120))
    zone.add("u.example.test", addr("192.0.2.1", ttl=45))
    zone.empty("u.example.test", AAAA, ttl=20)
    assert run("sip:example.test", zone).ttl == 20
    assert run("sip:example.test", zone, types=(A,)).ttl == 45


# -- SRV order (RFC 2782) -------------------------------------------------------------------
class ScriptedRand:
    """Returns the given draws in turn and records each randint range asked for."""

    def __init__(self, draws: Iterable[int]) -> None:
        self.draws = list(draws)
        self.ranges: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.ranges.append((a, b))
        return self.draws.pop(0)


def names(records: list[SrvRecord]) -> list[str]:
    return [r.target.split(".")[0] for r in records]


def test_srv_priority_comes_before_weight() -> None:
    records = [srv(20, 100, 1, "c.t"), srv(10, 1, 1, "a.t"), srv(30, 0, 1, "d.t")]
    assert names(order_srv(records, random.Random(3))) == ["a", "c", "d"]


def test_srv_weighted_selection_follows_rfc_2782_running_sums() -> None:
    b, zero, c = srv(10, 10, 1, "b.t"), srv(10, 0, 1, "zero.t"), srv(10, 20, 1, "c.t")
    # Weight 0 goes first in the list, and is taken only on a draw of 0.
    rng = ScriptedRand([0, 11, 5])
    assert names(order_srv([b, zero, c], rng)) == ["zero", "c", "b"]
    assert rng.ranges == [(0, 30), (0, 30), (0, 10)]
    rng = ScriptedRand([1, 0, 0])
    assert names(order_srv([b, zero, c], rng)) == ["b", "zero", "c"]
    assert rng.ranges == [(0, 30), (0, 20), (0, 20)]


def test_srv_records_all_of_weight_zero_keep_their_order() -> None:
    records = [srv(10, 0, 1, "x.t"), srv(10, 0, 1, "y.t"), srv(10, 0, 1, "z.t")]
    assert names(order_srv(records, ScriptedRand([0, 0, 0]))) == ["x", "y", "z"]


def test_srv_weights_share_the_first_place_in_proportion() -> None:
    """With a seeded random source, weights 60:40 lead about 60% : 40% of the time."""
    rng = random.Random(1234)
    records = [srv(10, 60, 1, "big.t"), srv(10, 40, 1, "small.t"), srv(10, 0, 1, "zero.t")]
    firsts = [names(order_srv(records, rng))[0] for _ in range(4000)]
    assert 0.56 < firsts.count("big") / 4000 < 0.64
    assert 0.36 < firsts.count("small") / 4000 < 0.44
    # Weight 0 leads only on a draw of 0 out of 0..100: about 1%.
    assert firsts.count("zero") / 4000 < 0.03


def test_a_random_source_out_of_range_is_refused() -> None:
    with pytest.raises(SipdValueError):
        order_srv([srv(10, 5, 1, "a.t")], ScriptedRand([99]))


def test_the_srv_order_reaches_the_targets() -> None:
    zone = Zone().add(
        "_sip._udp.example.test",
        srv(10, 60, 5070, "a.example.test"),
        srv(10, 40, 5071, "b.example.test"),
        srv(5, 0, 5072, "c.example.test"),
    )
    for name, ip in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")):
        zone.add(f"{name}.example.test", addr(ip))
    result = run("sip:example.test", zone, rng=ScriptedRand([0, 61, 0]), types=(A,))
    assert hops(result) == [
        ("192.0.2.3", 5072, "udp"),
        ("192.0.2.2", 5071, "udp"),
        ("192.0.2.1", 5070, "udp"),
    ]


# -- the cursor ---------------------------------------------------------------------------
T1 = Target("192.0.2.1", 5060, UDP, "a.example.test")
T2 = Target("192.0.2.2", 5070, UDP, "b.example.test")
T3 = Target("2001:db8::3", 5080, TCP, "c.example.test")


def test_the_cursor_hands_out_targets_in_turn_and_records_failures() -> None:
    cursor = Resolution(Destination("example.test"), (T1, T2, T3)).cursor()
    assert cursor.current is None and cursor.remaining == 3
    assert cursor.next() is T1 and cursor.current is T1
    assert cursor.fail("timeout") is T2
    assert cursor.fail("503 Service Unavailable") is T3
    assert cursor.remaining == 0 and not cursor.exhausted
    assert cursor.fail("transport error") is None
    assert cursor.exhausted and cursor.next() is None and cursor.current is None
    assert [reason for _, reason in cursor.failures] == [
        "timeout",
        "503 Service Unavailable",
        "transport error",
    ]
    assert cursor.summary() == (
        "192.0.2.1:5060/UDP (a.example.test): timeout; "
        "192.0.2.2:5070/UDP (b.example.test): 503 Service Unavailable; "
        "[2001:db8::3]:5080/TCP (c.example.test): transport error"
    )


def test_the_cursor_refuses_a_failure_before_any_target_and_iterates_the_rest() -> None:
    cursor = TargetCursor([T1, T2])
    with pytest.raises(SipdValueError):
        cursor.fail("nothing tried yet")
    assert cursor.summary() == "no target failed"
    assert list(cursor) == [T1, T2]
    assert cursor.exhausted


def test_a_resolution_needs_a_target() -> None:
    with pytest.raises(SipdValueError):
        Resolution(Destination("example.test"), ())


# -- the cache ------------------------------------------------------------------------------
Q = Query("_sip._udp.example.test", SRV)


def positive(ttl: int, query: Query = Q) -> Answer:
    return Answer(query, (srv(10, 0, 5060, "a.example.test", ttl=ttl),))


def test_the_cache_keeps_an_answer_for_its_ttl_on_the_injected_clock() -> None:
    clock = task.Clock()
    cache = DnsCache(clock)
    cache.put(positive(60))
    clock.advance(59.5)
    hit = cache.get(Q)
    assert hit is not None and hit.ttl == pytest.approx(0.5)
    clock.advance(0.5)
    assert cache.get(Q) is None and len(cache) == 0


def test_the_cache_takes_a_plain_callable_clock_and_caps_ttls() -> None:
    now = [100.0]
    cache = DnsCache(lambda: now[0], max_ttl=10)
    assert cache.put(positive(3600)).ttl == 10
    now[0] += 10
    assert Q not in cache


def test_the_cache_keeps_negative_answers_briefly() -> None:
    clock = task.Clock()
    cache = DnsCache(clock, negative_ttl=30)
    nodata = cache.put(Answer(Q))
    assert nodata.ttl == 30  # no SOA: the default, which the chain TTL then sees
    soa_short = Answer(Query("a.test", A), ttl=5, nxdomain=True)
    soa_long = Answer(Query("b.test", A), ttl=3600, nxdomain=True)
    assert cache.put(soa_short).ttl == 5
    assert cache.put(soa_long).ttl == 30  # capped: a new record shows up soon
    clock.advance(29)
    assert Q in cache and Query("a.test", A) not in cache
    hit = cache.get(Query("b.test", A))
    assert hit is not None and hit.nxdomain
    clock.advance(1)
    assert Q not in cache


def test_the_cache_does_not_keep_failures_or_ttl_zero() -> None:
    cache = DnsCache(task.Clock())
    cache.put(positive(60))
    cache.put(Answer(Q, error="timed out"))  # also drops the older answer
    assert Q not in cache
    cache.put(positive(0))
    assert len(cache) == 0


def test_the_cache_is_bounded_dropping_expired_then_least_recently_used() -> None:
    clock = task.Clock()
    cache = DnsCache(clock, max_entries=3)
    qs = [Query(f"h{i}.test", A) for i in range(5)]
    cache.put(Answer(qs[0], (addr("192.0.2.1", 5),)))
    cache.put(Answer(qs[1], (addr("192.0.2.1", 100),)))
    cache.put(Answer(qs[2], (addr("192.0.2.1", 100),)))
    clock.advance(6)  # qs[0] expired
    cache.get(qs[1])  # qs[1] used: qs[2] is now the least recently used
    cache.put(Answer(qs[3], (addr("192.0.2.1", 100),)))
    assert len(cache) == 3 and qs[0] not in cache
    cache.put(Answer(qs[4], (addr("192.0.2.1", 100),)))
    assert len(cache) == 3
    assert [q in cache for q in qs] == [False, True, False, True, True]


def test_the_cache_refuses_nonsense_settings() -> None:
    with pytest.raises(SipdValueError):
        DnsCache(task.Clock(), max_entries=0)
    with pytest.raises(SipdValueError):
        DnsCache(task.Clock(), negative_ttl=-1)
    with pytest.raises(SipdValueError):
        DnsCache(object())  # type: ignore[arg-type]


# -- the Twisted adapter, on a fake IResolver ------------------------------------------------------
def rr(name: str, payload: Any, ttl: int = 300) -> dns.RRHeader:
    return dns.RRHeader(name=name.encode(), type=payload.TYPE, ttl=ttl, payload=payload)


class FakeBackend:
    """An IResolver whose answers come from ``zone`` (RRHeaders or an exception).

    With ``hold`` set, every lookup waits in ``pending`` for the test to fire it.
    """

    def __init__(self, zone: dict[tuple[str, str], Any], hold: bool = False) -> None:
        self.zone = zone
        self.hold = hold
        self.calls: list[tuple[str, str]] = []
        self.pending: list[tuple[tuple[str, str], defer.Deferred[Any]]] = []

    def _lookup(self, kind: str, name: str) -> defer.Deferred[Any]:
        key = (kind, name)
        self.calls.append(key)
        d: defer.Deferred[Any] = defer.Deferred()
        if self.hold:
            self.pending.append((key, d))
        else:
            self.fire(key, d)
        return d

    def fire(self, key: tuple[str, str], d: defer.Deferred[Any]) -> None:
        found = self.zone.get(key, dns_error.DNSNameError(dns.Message()))
        if isinstance(found, Exception):
            d.errback(Failure(found))
        else:
            d.callback((found, [], []))

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for key, d in pending:
            self.fire(key, d)

    def lookupNamingAuthorityPointer(self, name: str) -> defer.Deferred[Any]:
        return self._lookup("NAPTR", name)

    def lookupService(self, name: str) -> defer.Deferred[Any]:
        return self._lookup("SRV", name)

    def lookupAddress(self, name: str) -> defer.Deferred[Any]:
        return self._lookup("A", name)

    def lookupIPV6Address(self, name: str) -> defer.Deferred[Any]:
        return self._lookup("AAAA", name)


def chain_zone() -> dict[tuple[str, str], Any]:
    return {
        ("NAPTR", "example.test"): [
            rr(
                "example.test",
                dns.Record_NAPTR(10, 10, b"s", b"SIP+D2U", b"", b"_sip._udp.example.test"),
                ttl=300,
            )
        ],
        ("SRV", "_sip._udp.example.test"): [
            rr("_sip._udp.example.test", dns.Record_SRV(10, 0, 5070, b"sip1.example.test"), 120)
        ],
        ("A", "sip1.example.test"): [rr("sip1.example.test", dns.Record_A("192.0.2.1"), 60)],
        ("AAAA", "sip1.example.test"): [
            rr("sip1.example.test", dns.Record_AAAA("2001:db8::1"), 90)
        ],
    }


def adapter(backend: FakeBackend, clock: task.Clock, **kw: Any) -> Rfc3263Resolver:
    return Rfc3263Resolver(
        [("127.0.0.1", 53)], backend=backend, clock=clock, hosts_file=None, reactor=clock, **kw
    )


def result_of(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def test_the_adapter_follows_the_chain_and_then_answers_from_its_cache() -> None:
    clock = task.Clock()
    backend = FakeBackend(chain_zone())
    resolver = adapter(backend, clock)
    first = result_of(resolver.resolve(parse_uri("sip:bob@example.test")))
    assert hops(first) == [("192.0.2.1", 5070, "udp"), ("2001:db8::1", 5070, "udp")]
    assert first.ttl == 60
    assert backend.calls == [
        ("NAPTR", "example.test"),
        ("SRV", "_sip._udp.example.test"),
        ("A", "sip1.example.test"),
        ("AAAA", "sip1.example.test"),
    ]
    clock.advance(59)
    again = result_of(resolver.resolve(parse_uri("sip:bob@example.test")))
    assert hops(again) == hops(first) and again.ttl == pytest.approx(1)
    assert len(backend.calls) == 4 and resolver.queries_sent == 4
    clock.advance(1)  # the A record expired, the rest did not
    result_of(resolver.resolve(parse_uri("sip:bob@example.test")))
    assert backend.calls[4:] == [("A", "sip1.example.test")]
    assert clock.getDelayedCalls() == []


def test_concurrent_identical_lookups_share_one_query() -> None:
    clock = task.Clock()
    backend = FakeBackend(chain_zone(), hold=True)
    resolver = adapter(backend, clock)
    d1 = resolver.resolve(parse_uri("sip:alice@example.test"))
    d2 = resolver.resolve(parse_uri("sip:bob@example.test;user=phone"))
    assert backend.calls == [("NAPTR", "example.test")]
    while backend.pending:
        backend.release()
    assert hops(result_of(d1)) == hops(result_of(d2))
    assert len(backend.calls) == 4 and resolver.queries_sent == 4


def test_an_ip_literal_needs_no_backend_and_fires_at_once() -> None:
    resolver = Rfc3263Resolver([("127.0.0.1", 53)], clock=task.Clock(), hosts_file=None)
    d = resolver.resolve(parse_uri("sip:bob@192.0.2.1:5080"))
    assert hops(result_of(d)) == [("192.0.2.1", 5080, "udp")]
    assert resolver._backend is None and resolver.queries_sent == 0
    resolver.close()


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (dns_error.DNSServerError(dns.Message()), "SERVFAIL"),
        (dns_error.DNSQueryRefusedError(dns.Message()), "REFUSED"),
        (dns_error.DNSQueryTimeoutError(None), "timed out (no answer from 127.0.0.1:53)"),
        (OSError("no route"), "OSError: no route"),
    ],
)
def test_a_failed_naptr_query_becomes_a_dns_error_naming_it(failure: Exception, words: str) -> None:
    clock = task.Clock()
    resolver = adapter(FakeBackend({("NAPTR", "example.test"): failure}), clock)
    with pytest.raises(DnsError) as info:
        result_of(resolver.resolve(parse_uri("sip:example.test")))
    assert (info.value.name, info.value.rtype) == ("example.test", "NAPTR")
    assert words in str(info.value)
    assert len(resolver.cache) == 0  # failures are not cached


def test_nxdomain_falls_through_and_is_cached_negatively() -> None:
    clock = task.Clock()
    zone = {("A", "pbx.example.test"): [rr("pbx.example.test", dns.Record_A("192.0.2.8"))]}
    backend = FakeBackend(zone)
    resolver = adapter(backend, clock, address_types=(A,))
    result = result_of(resolver.resolve(parse_uri("sip:pbx.example.test")))
    assert hops(result) == [("192.0.2.8", 5060, "udp")]
    assert result.ttl == 30  # the negative NAPTR/SRV answers are kept 30 s
    result_of(resolver.resolve(parse_uri("sip:pbx.example.test")))
    assert len(backend.calls) == 3
    clock.advance(30)
    result_of(resolver.resolve(parse_uri("sip:pbx.example.test")))
    assert [k for k, _ in backend.calls[3:]] == ["NAPTR", "SRV"]


def soa(ttl: int, minimum: int) -> dns.RRHeader:
    record = dns.Record_SOA(b"ns.test", b"admin.test", 1, 60, 60, 60, minimum, ttl=ttl)
    return dns.RRHeader(name=b"example.test", type=dns.SOA, ttl=ttl, payload=record)


def test_results_and_failures_are_translated_with_ttls() -> None:
    query = Query("example.test", NAPTR)
    cname = dns.RRHeader(
        name=b"example.test", type=dns.CNAME, ttl=7, payload=dns.Record_CNAME(b"x.test")
    )
    naptr_rr = rr("x.test", dns.Record_NAPTR(1, 2, b"S", b"SIPS+D2T", b"", b"_sips._tcp.x.test"))
    answer = answer_from_result(query, ([cname, naptr_rr], [], []))
    assert answer.records == (NaptrRecord(1, 2, "S", "SIPS+D2T", "", "_sips._tcp.x.test", 300),)
    assert answer.ttl == 7  # the CNAME's TTL counts for the chain
    nodata = answer_from_result(query, ([], [soa(600, 45)], []))
    assert nodata.negative and nodata.ttl == 45 and not nodata.nxdomain
    message = dns.Message()
    message.authority = [soa(20, 900)]
    nx = answer_from_failure(query, dns_error.DNSNameError(message))
    assert nx.nxdomain and nx.ttl == 20
    assert answer_from_failure(query, dns_error.DNSNotImplementedError()).error is not None


def test_the_hosts_file_answers_addresses_before_the_dns(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n192.0.2.50 pbx pbx.lan  # trailing\n2001:db8::50 PBX\n")
    clock = task.Clock()
    backend = FakeBackend({})
    resolver = Rfc3263Resolver(
        [("127.0.0.1", 53)], backend=backend, clock=clock, hosts_file=str(hosts)
    )
    result = result_of(resolver.resolve(parse_uri("sip:bob@pbx:5060")))
    assert hops(result) == [("192.0.2.50", 5060, "udp"), ("2001:db8::50", 5060, "udp")]
    assert backend.calls == [] and result.ttl == 0


def test_nameservers_and_timeouts_are_checked() -> None:
    assert parse_nameserver("10.0.0.53") == ("10.0.0.53", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("::1") == ("::1", 53)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    for bad in ("dns.example.test", "10.0.0.53:0", "10.0.0.53:x", "[::1]x", "[::1]:99999"):
        with pytest.raises(ConfigError):
            parse_nameserver(bad)
    resolver = Rfc3263Resolver(["127.0.0.1:5353", ("::1", 53)], timeout=2, clock=task.Clock())
    assert resolver.nameservers == [("127.0.0.1", 5353), ("::1", 53)]
    assert resolver.timeout == (2.0,)
    with pytest.raises(ConfigError):
        Rfc3263Resolver([], clock=task.Clock())
    with pytest.raises(ConfigError):
        Rfc3263Resolver(None, timeout=(1, 0), clock=task.Clock())


def test_close_stops_the_resolv_conf_timer(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\n")
    clock = task.Clock()
    resolver = Rfc3263Resolver(None, resolv_conf=str(conf), reactor=clock, hosts_file=None)
    assert resolver._backend is None
    resolver.backend  # noqa: B018 - made on first use
    assert len(clock.getDelayedCalls()) == 1  # twisted.names re-reads the file every minute
    resolver.close()
    assert clock.getDelayedCalls() == []
