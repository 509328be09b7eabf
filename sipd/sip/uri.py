"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966).

A :class:`Uri` is frozen: change one with :meth:`Uri.replace` or the
``with_*`` helpers, which keeps "was this message modified?" a cheap identity
check in :mod:`sipd.sip.message`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from sipd.sip.errors import BadRequest, UnsupportedUriScheme
from sipd.sip.grammar import (
    Params,
    escape,
    format_params,
    get_param,
    parse_digits,
    parse_params,
    remove_param,
    set_param,
    unescape,
)

__all__ = ["SUPPORTED_SCHEMES", "Uri", "parse_uri"]

#: Schemes a Request-URI may carry here; anything else earns a 416.
SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})

# Characters that may stand unescaped in the user part (RFC 3261 §25:
# unreserved / user-unreserved) and in the password.
_USER_SAFE = "-_.!~*'()&=+$,;?/"
_PASSWORD_SAFE = "-_.!~*'()&=+$,"
_HEADER_SAFE = "-_.!~*'()[]/?:+$"


@dataclass(frozen=True, slots=True)
class Uri:
    """A parsed URI.

    For ``tel:`` URIs the number is in :attr:`user` and :attr:`host` is empty.
    :attr:`user` and :attr:`password` hold the unescaped text; :meth:`__str__`
    escapes what must be escaped. IPv6 hosts are kept with their brackets, as
    they appear in the URI.
    """

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{format_params(self.params)}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(escape(self.user, _USER_SAFE))
            if self.password is not None:
                parts.append(":" + escape(self.password, _PASSWORD_SAFE))
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        parts.append(format_params(self.params))
        if self.headers:
            parts.append(
                "?"
                + "&".join(
                    f"{escape(n, _HEADER_SAFE)}={escape(v, _HEADER_SAFE)}" for n, v in self.headers
                )
            )
        return "".join(parts)

    def param(self, name: str, default: str | None = None) -> str | None:
        """The URI parameter ``name`` (``""`` for a flag such as ``lr``)."""
        return get_param(self.params, name, default)

    def with_param(self, name: str, value: str | None = None) -> Uri:
        """A copy with parameter ``name`` set (``None`` makes it a flag)."""
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    def without_param(self, name: str) -> Uri:
        """A copy without parameter ``name``."""
        return dataclasses.replace(self, params=remove_param(self.params, name))

    def replace(self, **changes: object) -> Uri:
        """A copy with the given fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def transport(self) -> str:
        """The ``transport`` parameter, lower-cased, defaulting to ``udp``."""
        return (self.param("transport") or "udp").lower()

    @property
    def host_for_socket(self) -> str:
        """The host without IPv6 brackets, ready for a socket address."""
        if self.host.startswith("["):
            return self.host[1:-1]
        return self.host

    @property
    def default_port(self) -> int:
        """The port to send to: the explicit one, else 5061 for sips, 5060 otherwise."""
        if self.port is not None:
            return self.port
        return 5061 if self.scheme == "sips" else 5060

    @property
    def aor(self) -> str:
        """The address-of-record form ``scheme:user@host`` (no port, params, headers)."""
        if self.scheme == "tel":
            return f"tel:{self.user}"
        user = f"{escape(self.user, _USER_SAFE)}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host.lower()}"


# The everyday shape ``sip:user@host:port;params`` with plain characters, which
# :func:`parse_uri` takes without the general walk. Anything else (escapes,
# passwords, URI headers, IPv6, odd characters) goes the long way, which gives
# the same answer for the inputs this pattern accepts.
_SIMPLE_SIP_RE = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,/]+)@)?([A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?(;[^?\s<>\"@]*)?"
)


def _parse_port(text: str, uri: str) -> int:
    port = parse_digits(text, 65535)
    if not port:
        raise BadRequest(f"bad port {text[:20]!r} in URI {uri[:80]!r}")
    return port


def _parse_tel(rest: str, text: str) -> Uri:
    number, _, params = rest.partition(";")
    if not number:
        raise BadRequest(f"tel URI without a number: {text!r}")
    allowed = set("0123456789+-.()*#ABCDEFabcdefpPwW")
    if not set(number) <= allowed:
        raise BadRequest(f"bad telephone-subscriber in {text!r}")
    return Uri(scheme="tel", host="", user=number, params=parse_params(params))


#: Text -> parsed Uri. The same few URIs (our own address, the peers' AoRs
#: and Contacts) arrive in almost every message, and a Uri is frozen, so one
#: parse can be shared. Bounded: cleared when full. Failures are not cached.
_URI_CACHE: dict[str, Uri] = {}
_URI_CACHE_MAX = 2048


def clear_cache() -> None:
    """Forget cached parses (the UA went quiet; give the memory back)."""
    _URI_CACHE.clear()


def parse_uri(text: str, *, require_supported: bool = True) -> Uri:
    """Parse a SIP, SIPS or tel URI.

    Raises :class:`UnsupportedUriScheme` (416) for another scheme when
    ``require_supported`` is true, :class:`BadRequest` for bad syntax.
    """
    uri = _URI_CACHE.get(text)
    if uri is not None:
        return uri
    uri = _parse_uri(text, require_supported)
    if len(_URI_CACHE) >= _URI_CACHE_MAX:
        _URI_CACHE.clear()
    _URI_CACHE[text] = uri
    return uri


def _parse_uri(text: str, require_supported: bool) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme:
        raise BadRequest(f"not a URI: {text!r}")
    scheme_l = scheme.lower()
    if scheme_l not in SUPPORTED_SCHEMES:
        if require_supported:
            raise UnsupportedUriScheme(f"unsupported URI scheme {scheme!r}")
        raise BadRequest(f"unsupported URI scheme {scheme!r}")
    if scheme_l == "tel":
        return _parse_tel(rest, text)
    m = _SIMPLE_SIP_RE.fullmatch(rest)
    if m is not None:
        simple_user, simple_host, port_text, ptext = m.groups()
        if port_text is None or 0 < int(port_text) < 65536:
            return Uri(
                scheme_l,
                simple_host,
                simple_user,
                None,
                None if port_text is None else int(port_text),
                parse_params(ptext) if ptext else (),
            )

    headers: tuple[tuple[str, str], ...] = ()
    if "?" in rest:
        rest, _, htext = rest.partition("?")
        hlist: list[tuple[str, str]] = []
        for item in htext.split("&"):
            if item:
                hname, _, hvalue = item.partition("=")
                hlist.append((unescape(hname), unescape(hvalue)))
        headers = tuple(hlist)

    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if ":" in userinfo:
            raw_user, _, raw_password = userinfo.partition(":")
            password = unescape(raw_password)
        else:
            raw_user = userinfo
        if not raw_user:
            raise BadRequest(f"empty user part in URI {text!r}")
        user = unescape(raw_user)

    hostport, _, ptext = rest.partition(";")
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise BadRequest(f"unterminated IPv6 reference in URI {text!r}")
        host = hostport[: end + 1]
        tail = hostport[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise BadRequest(f"junk after IPv6 reference in URI {text!r}")
            port = _parse_port(tail[1:], text)
    else:
        host, pcolon, port_text = hostport.partition(":")
        if pcolon:
            port = _parse_port(port_text, text)
    if not host or any(ch in host for ch in ' \t<>"'):
        raise BadRequest(f"bad host in URI {text!r}")
    return Uri(
        scheme=scheme_l,
        host=host,
        user=user,
        password=password,
        port=port,
        params=parse_params(ptext),
        headers=headers,
    )
