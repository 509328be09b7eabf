"""The ``Via`` header (RFC 3261 §20.42, §18.2.1; RFC 3581 rport).

The top Via carries the transaction's branch and tells a server where to send
responses; :func:`response_address` implements that choice.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from sipd.sip.errors import BadRequest
from sipd.sip.grammar import (
    Params,
    format_params,
    get_param,
    parse_digits,
    parse_params,
    set_param,
    slot_setter,
)

__all__ = ["MAGIC_COOKIE", "Via", "parse_via", "response_address"]

#: RFC 3261 §8.1.1.7: branches that start with this were made by a 3261 stack.
MAGIC_COOKIE = "z9hG4bK"

# The everyday ``SIP/2.0/UDP host:port;params`` is taken by plain string
# splits; these are the sent-protocol spellings that path knows.
_COMMON_PROTOCOLS: dict[str, str] = {
    f"SIP/2.0/{t}": t for t in ("UDP", "TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS")
}
_PROTO_RE = re.compile(r"^\s*([^/\s]+)\s*/\s*([^/\s]+)\s*/\s*([^\s]+)\s+(.*)$", re.S)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: transport, sent-by host/port and parameters."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter, or None for an RFC 2543 peer without one."""
        for name, value in self.params:  # get_param, inlined: read per message
            if name == "branch":
                return "" if value is None else value
        return None

    @property
    def received(self) -> str | None:
        """The ``received`` parameter a server added, if any."""
        return get_param(self.params, "received")

    @property
    def rport(self) -> int | bool | None:
        """``None`` if absent, ``True`` when asked for (bare ``;rport``), else the port."""
        value = get_param(self.params, "rport")
        if value is None:
            return None
        if value == "":
            return True
        port = parse_digits(value, 65535)
        if not port:
            raise BadRequest(f"bad rport value {value[:20]!r}")
        return port

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter, if any."""
        return get_param(self.params, "maddr")

    @property
    def ttl(self) -> int | None:
        """The ``ttl`` parameter as an int, if any."""
        value = get_param(self.params, "ttl")
        if value is None:
            return None
        ttl = parse_digits(value, 255)
        if ttl is None:
            raise BadRequest(f"bad ttl value {value[:20]!r}")
        return ttl

    @property
    def sent_by(self) -> tuple[str, int]:
        """The sent-by host and port (5060 when absent)."""
        return self.host, self.port if self.port is not None else 5060

    @property
    def is_rfc3261(self) -> bool:
        """True when the branch carries the RFC 3261 magic cookie."""
        b = self.branch
        return b is not None and b.startswith(MAGIC_COOKIE)

    def with_param(self, name: str, value: str | None) -> Via:
        """A copy with parameter ``name`` set."""
        return dataclasses.replace(self, params=set_param(self.params, name, value))


# Built per message: see grammar.slot_setter for why not Via(...).
_new = object.__new__
_set_transport = slot_setter(Via, "transport")
_set_host = slot_setter(Via, "host")
_set_port = slot_setter(Via, "port")
_set_params = slot_setter(Via, "params")
_set_protocol = slot_setter(Via, "protocol")


def _new_via(transport: str, host: str, port: int | None, params: Params) -> Via:
    """``Via(transport, host, port, params)``, built without the frozen __init__."""
    via: Via = _new(Via)
    _set_transport(via, transport)
    _set_host(via, host)
    _set_port(via, port)
    _set_params(via, params)
    _set_protocol(via, "SIP/2.0")
    return via


#: ``SIP/2.0/UDP host:port`` (the text before the first ``;``) -> transport,
#: host and port. Each peer sends the same sent-by on every message and only
#: the parameters (the branch) change, so that part is checked once. Only
#: the fast path below fills it. Bounded: cleared when full.
_SENT_BY_CACHE: dict[str, tuple[str, str, int | None]] = {}
_SENT_BY_CACHE_MAX = 1024


def clear_cache() -> None:
    """Forget cached sent-by parses (see :func:`sipd.sip.uri.clear_cache`)."""
    _SENT_BY_CACHE.clear()


def parse_via(value: str) -> Via:
    """Parse a single Via value (split a multi-valued header first)."""
    head, _, ptext = value.partition(";")
    known = _SENT_BY_CACHE.get(head)
    if known is not None:
        return _new_via(known[0], known[1], known[2], parse_params(ptext))
    # Fast path: the steps of the general one below for a known protocol and
    # a host with no blanks or brackets and a plain port, so the same answer.
    proto, _, rest = head.partition(" ")
    transport = _COMMON_PROTOCOLS.get(proto)
    if transport is not None:
        host, colon, port_text = rest.partition(":")
        if host and host[0] != "[" and " " not in host and host.isprintable():
            number: int | None = None
            if colon:
                if not (len(port_text) < 6 and port_text.isdigit() and port_text.isascii()):
                    number = 0
                else:
                    number = int(port_text)
                    if number > 65535:
                        number = 0
            if number != 0:
                if len(_SENT_BY_CACHE) >= _SENT_BY_CACHE_MAX:
                    _SENT_BY_CACHE.clear()
                _SENT_BY_CACHE[head] = (transport, host, number)
                return _new_via(transport, host, number, parse_params(ptext))
    m = _PROTO_RE.match(value)
    if m is None:
        raise BadRequest(f"malformed Via {value!r}")
    name, version, transport, rest = m.groups()
    sent_by, _, ptext = rest.partition(";")
    sent_by = sent_by.strip()
    port: int | None = None
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0:
            raise BadRequest(f"malformed Via host in {value!r}")
        host = sent_by[: end + 1]
        tail = sent_by[end + 1 :].strip()
        if tail:
            parsed = parse_digits(tail[1:].strip(), 65535) if tail.startswith(":") else None
            if not parsed:
                raise BadRequest(f"malformed Via port in {value[:80]!r}")
            port = parsed
    else:
        host, colon, port_text = sent_by.partition(":")
        host = host.strip()
        if colon:
            parsed = parse_digits(port_text.strip(), 65535)
            if not parsed:
                raise BadRequest(f"malformed Via port in {value[:80]!r}")
            port = parsed
    if not host or " " in host:
        raise BadRequest(f"malformed Via host in {value!r}")
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=parse_params(ptext),
        protocol=f"{name.upper()}/{version}",
    )


def response_address(via: Via, source: tuple[str, int] | None = None) -> tuple[str, int]:
    """Where a UDP server sends a response (RFC 3261 §18.2.2, RFC 3581 §4).

    ``maddr`` wins; then ``received`` with ``rport`` (or the source port when
    rport was asked for); then the sent-by address.
    """
    if via.maddr:
        return via.maddr, via.port or 5060
    host = via.received or via.host
    if host.startswith("["):
        host = host[1:-1]
    rport = via.rport
    if isinstance(rport, int) and not isinstance(rport, bool):
        return host, rport
    if rport is True and source is not None:
        return host, source[1]
    return host, via.port or 5060
