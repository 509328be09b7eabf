"""What the lazy parser leaves unchecked, checked before anything is echoed.

:func:`~sipd.sip.message.parse_message` keeps header values as text and
parses them when asked, so a request can carry values that parse well
enough for a UA yet are not valid SIP: a NUL or a bare CR in a header, a
Call-ID with a space, two Call-IDs, a lower Via that is garbage, a Via
parameter with a blank in its value. Every response copies Via, From, To,
Call-ID and CSeq from its request (RFC 3261 §8.2.6.2), and a BYE copies the
dialog's values, so whatever such a request carried would come back out in
sipd's own messages. :func:`check_syntax` refuses these requests at the
door (400, RFC 3261 §7.3.1, §25; RFC 4475 §3.1.2, §3.3.8, §3.3.9); the
helpers below also serve the transport's salvage of requests that do not
parse at all (:mod:`sipd.transport.salvage`).
"""

from __future__ import annotations

import re

from sipd.sip.errors import BadRequest, SipParseError
from sipd.sip.grammar import is_token, quote, split_list
from sipd.sip.message import Message, Request
from sipd.sip.via import Via, parse_via

__all__ = [
    "SINGLE_VALUED",
    "call_id_problem",
    "check_syntax",
    "check_via",
    "control_character",
    "empty_element",
    "quoted_text",
    "strict_via",
]

#: Headers a message may carry only once (RFC 3261 §7.3.1; RFC 4475 §3.3.8-3.3.9).
SINGLE_VALUED = frozenset({"Call-ID", "CSeq", "From", "To", "Content-Length", "Max-Forwards"})

# RFC 3261 §25.1: CTL is %x00-1F / %x7F; only HTAB may appear (as LWS).
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BLANK_RE = re.compile(r"\s")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9\-.]+")
_IPV6_REF_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# A parameter value that is an IPv6 address: ``received`` has no brackets (§20.42).
_IPV6_VALUE_RE = re.compile(r"[0-9A-Fa-f:.]+|\[[0-9A-Fa-f:.]+\]")
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
# Two separators with only blanks between them, or one at either end: the
# cheap test that lets :func:`empty_element` skip its walk for almost every value.
_MAYBE_EMPTY_RE = re.compile(r"[;,][ \t]*(?:[;,]|\Z)")
_TAG_RE = re.compile(r";[ \t]*tag[ \t]*=([^;]*)", re.I)
# The everyday Via: ``SIP/2.0/UDP host:port`` and token parameters.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_PLAIN_VIA_RE = re.compile(
    rf"SIP/2\.0/[A-Za-z]+ [A-Za-z0-9\-.]+(?::([0-9]{{1,5}}))?(?:;{_TOKEN}(?:={_TOKEN})?)*"
)


def control_character(value: str) -> bool:
    """True when ``value`` holds a control character other than HTAB."""
    return _CTL_RE.search(value) is not None


def quoted_text(text: str, limit: int = 200) -> str:
    """``text`` as a ``quoted-string`` any header can carry (a Warning's warn-text).

    Control characters become spaces and quotes and backslashes are escaped
    (RFC 3261 §25.1), so text quoting a peer's input (an SDP line) stays valid.
    """
    return quote(_CTL_RE.sub(" ", text[:limit]))


def call_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a Call-ID (RFC 3261 §25.1 ``word ["@" word]``), or None.

    Only what would make an echo of it invalid is refused: an empty value,
    blanks and control characters. Odd but printable characters are left
    alone, since real peers use them and an echo of them stays one token.
    """
    if not value:
        return "empty Call-ID"
    if _BLANK_RE.search(value) or control_character(value):
        return f"Call-ID {value[:40]!r} contains blanks or control characters"
    return None


def empty_element(value: str) -> bool:
    """True when a list or parameter element of ``value`` is empty (``;;``, ``,,``).

    ``Via: SIP/2.0/UDP h;;,;,,`` and ``Contact: <sip:a@h>;;;;`` (RFC 4475
    §3.1.2.1) are not valid: ``split_list`` and ``parse_params`` would quietly
    drop the empty elements, so this looks at the text itself, outside quoted
    strings and ``<...>``.
    """
    if _MAYBE_EMPTY_RE.search(value) is None and value.lstrip(" \t")[:1] not in (";", ","):
        return False  # quotes and <...> only hide separators, so none is empty
    segment = False  # something other than blanks since the last separator
    in_quotes = in_angle = escaped = False
    for ch in value:
        if in_quotes:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
            continue
        if in_angle:
            if ch == ">":
                in_angle = False
            continue
        if ch in ";,":
            if not segment:
                return True
            segment = False
        elif ch == '"':
            in_quotes = segment = True
        elif ch == "<":
            in_angle = segment = True
        elif ch not in " \t":
            segment = True
    return not segment


def _param_value_ok(value: str | None) -> bool:
    return (
        value is None
        or is_token(value)
        or _IPV6_VALUE_RE.fullmatch(value) is not None
        or _QUOTED_RE.fullmatch(value) is not None
    )


def strict_via(value: str) -> Via:
    """Parse one Via value and check what the parser lets through (RFC 3261 §20.42, §25.1).

    The sent-by host must be a host name, IPv4 address or IPv6 reference,
    the protocol and transport tokens, every parameter a token with a token,
    host or quoted-string value, ``rport`` a port and ``ttl`` 0-255. Raises
    :class:`BadRequest` naming the fault.
    """
    if control_character(value):
        raise BadRequest(f"control character in Via {value[:60]!r}")
    via = parse_via(value)
    name, _, version = via.protocol.partition("/")
    if not (is_token(name) and is_token(version) and is_token(via.transport)):
        raise BadRequest(f"malformed Via protocol in {value[:60]!r}")
    if _HOSTNAME_RE.fullmatch(via.host) is None and _IPV6_REF_RE.fullmatch(via.host) is None:
        raise BadRequest(f"malformed Via host {via.host[:40]!r}")
    for param, param_value in via.params:
        if not is_token(param) or not _param_value_ok(param_value):
            raise BadRequest(f"malformed Via parameter {param[:20]!r} in {value[:60]!r}")
    via.rport  # noqa: B018 - raises for a value that is not a port
    via.ttl  # noqa: B018
    return via


def check_via(value: str) -> None:
    """:func:`strict_via` without building the Via, for the receive path.

    The everyday shape (``SIP/2.0/UDP host:port`` with token parameters) is
    checked with one pattern; only a port out of range, an ``rport`` or
    ``ttl`` value, or any other shape takes the full parse.
    """
    plain = _PLAIN_VIA_RE.fullmatch(value)
    if plain is not None and "rport=" not in value and "ttl=" not in value:
        port = plain.group(1)
        if port is None or 0 < int(port) < 65536:
            return
    strict_via(value)


def check_syntax(message: Message) -> None:
    """Refuse what an echo would turn into an invalid message; the error names the header.

    For every message: no control character in any header value, each of
    :data:`SINGLE_VALUED` at most once, a Call-ID without blanks, a CSeq
    method that is a token. For requests also: every Via valid
    (:func:`strict_via`), no empty element in Via or Contact, and From and
    To tags that are tokens. Raises :class:`BadRequest` (400).
    """
    # One pass over the header block; the headers parse_message requires are there.
    items = dict(reversed(list(message.headers)))  # name -> first value (the one read)
    values = [value for _, value in message.headers]
    if len(items) < len(values):
        names = [name for name, _ in message.headers]
        for name in SINGLE_VALUED:
            if names.count(name) > 1:
                raise BadRequest(f"more than one {name} header")
    if _CTL_RE.search(" ".join(values)) is not None:
        name = next(name for name, value in message.headers if control_character(value))
        raise BadRequest(f"control character in {name} header")
    problem = call_id_problem(items.get("Call-ID", ""))
    if problem is not None:
        raise BadRequest(f"bad Call-ID header: {problem}")
    cseq = items.get("CSeq", "").split()  # parse_message checked its shape
    if not cseq or not is_token(cseq[-1]):
        raise BadRequest("bad CSeq header: the method is not a token")
    if isinstance(message, Request):
        _check_request_headers(message)


def _check_request_headers(request: Request) -> None:
    """Every Via valid and without empty elements, Contact too, From/To tags tokens."""
    for name, value in request.headers:
        if name != "Via" and name != "Contact":
            continue
        if empty_element(value):
            raise BadRequest(f"bad {name} header: empty parameter or list element")
        if name == "Via":
            try:
                for element in split_list(value):
                    check_via(element)
            except SipParseError as exc:
                raise BadRequest(f"bad Via header: {exc}") from None
    for name in ("From", "To"):
        tag = _tag_text(request.headers.get(name) or "")
        if tag is not None and not is_token(tag):
            raise BadRequest(f"bad {name} header: tag {tag[:40]!r} is not a token")


def _tag_text(value: str) -> str | None:
    """The text of a From/To ``tag`` parameter (after the URI's ``>``), or None.

    Read from the text rather than parsed: the transport has parsed the
    address already, and only the tag's characters matter here.
    """
    if ";" not in value:
        return None
    params = value[value.rfind(">") + 1 :] if "<" in value else value
    found = _TAG_RE.search(params)
    return None if found is None else found.group(1).strip()
