"""Locating SIP servers with DNS: RFC 3263 (NAPTR → SRV → A/AAAA).

Three layers, as in aioquic: the data (:mod:`~sipd.dns.records`,
:mod:`~sipd.dns.targets`), the RFC logic with no I/O
(:mod:`~sipd.dns.select`, :mod:`~sipd.dns.cache`), and the Twisted adapter
(:mod:`~sipd.dns.resolver`). A caller needs only::

    resolver = Rfc3263Resolver(nameservers=[("10.0.0.53", 53)])
    resolution = await resolver.resolve(uri)        # or a Destination
    cursor = resolution.cursor()
    target = cursor.next()                          # then cursor.fail(reason) on failure

See docs/dns.md for the steps, the caching and what is not supported.
"""

from __future__ import annotations

from sipd.dns.cache import Clock, DnsCache
from sipd.dns.errors import DnsError
from sipd.dns.records import (
    AddressRecord,
    Answer,
    Destination,
    NaptrRecord,
    Query,
    RecordType,
    SrvRecord,
    Transport,
)
from sipd.dns.resolver import DEFAULT_TIMEOUT, DnsBackend, Rfc3263Resolver, parse_nameserver
from sipd.dns.select import locate, locate_sync, order_srv, usable_naptr
from sipd.dns.targets import Resolution, Target, TargetCursor

__all__ = [
    "DEFAULT_TIMEOUT",
    "AddressRecord",
    "Answer",
    "Clock",
    "Destination",
    "DnsBackend",
    "DnsCache",
    "DnsError",
    "NaptrRecord",
    "Query",
    "RecordType",
    "Resolution",
    "Rfc3263Resolver",
    "SrvRecord",
    "Target",
    "TargetCursor",
    "Transport",
    "locate",
    "locate_sync",
    "order_srv",
    "parse_nameserver",
    "usable_naptr",
]
