"""The data of RFC 3263 server location: transports, destinations, queries, answers.

Everything here is a frozen, slotted value with no I/O, so the selection
logic (:mod:`sipd.dns.select`) and the cache (:mod:`sipd.dns.cache`) can be
tested with canned records, and the Twisted adapter
(:mod:`sipd.dns.resolver`) only translates ``twisted.names`` results into
these types.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from sipd.dns.errors import DnsError
from sipd.errors import SipdValueError
from sipd.sip.uri import Uri

__all__ = [
    "AddressRecord",
    "Answer",
    "Destination",
    "NaptrRecord",
    "Query",
    "Record",
    "RecordType",
    "SrvRecord",
    "Transport",
    "ip_literal",
]


class Transport(StrEnum):
    """A SIP transport as RFC 3263 names it (SCTP is not supported, so not listed)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def default_port(self) -> int:
        """5061 for TLS, 5060 otherwise (RFC 3261 §19.1.2)."""
        return 5061 if self is Transport.TLS else 5060

    @property
    def srv_prefix(self) -> str:
        """The SRV service and protocol labels (RFC 3263 §4.2): ``_sip._udp``..."""
        return _SRV_PREFIX[self]

    @property
    def naptr_service(self) -> str:
        """The NAPTR service field that names this transport (RFC 3263 §4.1)."""
        return _NAPTR_SERVICE[self]

    @property
    def via_name(self) -> str:
        """The name a Via header uses (``UDP``, ``TCP``, ``TLS``)."""
        return self.value.upper()


_SRV_PREFIX = {Transport.UDP: "_sip._udp", Transport.TCP: "_sip._tcp", Transport.TLS: "_sips._tcp"}
_NAPTR_SERVICE = {Transport.UDP: "SIP+D2U", Transport.TCP: "SIP+D2T", Transport.TLS: "SIPS+D2T"}


class RecordType(StrEnum):
    """The four DNS record types RFC 3263 uses."""

    NAPTR = "NAPTR"
    SRV = "SRV"
    A = "A"
    AAAA = "AAAA"


def _normalise_name(name: str) -> str:
    """DNS names compare case-insensitively; a trailing dot changes nothing here."""
    return name.rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Query:
    """One DNS question: a name and a record type (the cache and share key)."""

    name: str
    rtype: RecordType

    def __post_init__(self) -> None:
        name = _normalise_name(self.name)
        if not name:
            raise SipdValueError(f"empty DNS name in a {self.rtype} query")
        object.__setattr__(self, "name", name)

    def __str__(self) -> str:
        return f"{self.rtype} {self.name}"


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    """A NAPTR record (RFC 3403); for SIP the regexp is empty and flags are ``s``."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """An SRV record (RFC 2782); a target of ``.`` means "no such service here"."""

    priority: int
    weight: int
    port: int
    target: str
    ttl: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _normalise_name(self.target) or ".")


@dataclass(frozen=True, slots=True)
class AddressRecord:
    """An A or AAAA record: one IP address, written without brackets."""

    address: str
    ttl: int = 0


Record = NaptrRecord | SrvRecord | AddressRecord


@dataclass(frozen=True, slots=True)
class Answer:
    """What the DNS said to one :class:`Query`.

    Three shapes, kept apart because RFC 3263 treats them differently:

    * records: a positive answer;
    * no records and no ``error``: a negative answer (NXDOMAIN when
      ``nxdomain``, else NODATA). RFC 3263 falls through on it (no NAPTR →
      SRV, no SRV → A/AAAA), and the cache keeps it briefly (RFC 2308);
    * ``error`` set (timeout, SERVFAIL, REFUSED...): the DNS could not say.
      Location stops with a :class:`DnsError` rather than take another
      route on a guess, and the cache does not keep it.

    ``ttl`` is how long the answer stays valid, in seconds: for a positive
    answer the smallest TTL of its records (and of any CNAME on the way)
    when not given; for a negative one the SOA-derived TTL, or None to let
    the cache apply its default.
    """

    query: Query
    records: tuple[Record, ...] = ()
    ttl: float | None = None
    nxdomain: bool = False
    error: str | None = None

    @property
    def negative(self) -> bool:
        """No records and no error: the name or the type does not exist."""
        return not self.records and self.error is None

    @property
    def valid_for(self) -> float:
        """Seconds this answer may be used for (0 when unknown or an error)."""
        if self.error is not None:
            return 0.0
        if self.ttl is not None:
            return max(0.0, self.ttl)
        if self.records:
            return float(min(r.ttl for r in self.records))
        return 0.0

    def describe(self) -> str:
        """Why this answer gives nothing, for an error message."""
        if self.error is not None:
            return self.error
        if self.nxdomain:
            return "no such domain (NXDOMAIN)"
        if not self.records:
            return "no records (NODATA)"
        return f"{len(self.records)} record(s)"


def ip_literal(host: str) -> str | None:
    """``host`` as a bare IP address if it is one (IPv6 brackets removed), else None."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Destination:
    """What RFC 3263 locates: a host, maybe a port and a transport, sip or sips.

    Built from a URI with :meth:`from_uri`, or directly for a configured
    proxy given as host and port. ``transport`` None means "not specified":
    RFC 3263 then consults NAPTR (no port) or picks UDP/TLS (with a port).
    """

    host: str
    port: int | None = None
    transport: Transport | None = None
    secure: bool = False

    def __post_init__(self) -> None:
        if not self.host:
            raise SipdValueError("a destination needs a host")
        if self.port is not None and not 0 < self.port < 65536:
            raise SipdValueError(f"port {self.port} out of range in destination {self.host!r}")
        if self.secure and self.transport not in (None, Transport.TLS):
            raise SipdValueError(
                f"a sips destination ({self.host!r}) cannot use transport {self.transport}"
            )

    @classmethod
    def from_uri(cls, uri: Uri) -> Destination:
        """The destination of a sip/sips URI: ``maddr`` or host, port, ``transport=``.

        Raises :class:`DnsError` for a URI that cannot be located: a tel URI,
        or a ``transport=`` that names no transport RFC 3263 knows (sctp,
        or udp on a sips URI, which has no TLS over UDP).
        """
        if uri.scheme not in ("sip", "sips"):
            raise DnsError(
                f"cannot locate a server for {uri}: only sip and sips URIs have a host",
                name=str(uri),
                rtype=None,
                cause=f"{uri.scheme} URI",
            )
        secure = uri.scheme == "sips"
        host = uri.param("maddr") or uri.host
        text = (uri.param("transport") or "").lower()
        transport: Transport | None = None
        if text:
            transport = _uri_transport(text, secure)
            if transport is None:
                raise DnsError(
                    f"cannot locate a server for {uri}: transport={text} is not usable "
                    f"for a {uri.scheme} URI (sipd knows udp, tcp and tls; sips needs tcp or tls)",
                    name=host,
                    rtype=None,
                    cause=f"transport {text}",
                )
        return cls(host=host, port=uri.port, transport=transport, secure=secure)

    def __str__(self) -> str:
        scheme = "sips" if self.secure else "sip"
        port = f":{self.port}" if self.port is not None else ""
        transport = f";transport={self.transport}" if self.transport is not None else ""
        return f"{scheme}:{self.host}{port}{transport}"


def _uri_transport(text: str, secure: bool) -> Transport | None:
    """The transport a ``transport=`` value asks for; sips over tcp is TLS (RFC 3261 §26.2)."""
    if secure:
        return Transport.TLS if text in ("tcp", "tls") else None
    try:
        return Transport(text)
    except ValueError:
        return None
