"""The error response to a request that does not parse (RFC 3261 §8.2.6, §18.2.2).

A request the parser refuses still deserves its 400 (or 416, 505) when one
can be formed, and the only way to form it is to read the request's header
lines leniently. Lenient reading must not turn into echoing garbage: every
value the response copies is checked the way :mod:`sipd.sip.validate`
checks a parsed request, what cannot be echoed validly is either repaired
where the RFC allows it (a CSeq number out of range, a broken ``rport``
that is rewritten anyway) or makes the response impossible, and the
response is parsed and checked again before it is sent. The response goes
where any response goes: the packet's source address, and its source port
when ``rport`` was asked for, else the sent-by port (§18.2.2, RFC 3581 §4),
never to a host the Via merely names.
"""

from __future__ import annotations

import re
import secrets

from sipd.sip.errors import SipParseError
from sipd.sip.grammar import get_param, is_token, parse_digits, split_list
from sipd.sip.headers import parse_cseq
from sipd.sip.message import Response, parse_message
from sipd.sip.validate import call_id_problem, check_syntax, control_character, strict_via
from sipd.sip.via import Via, parse_via

__all__ = ["salvage_response", "sanitised_cseq"]

Addr = tuple[str, int]

_WANTED = {
    "via": "Via",
    "v": "Via",
    "from": "From",
    "f": "From",
    "to": "To",
    "t": "To",
    "call-id": "Call-ID",
    "i": "Call-ID",
    "cseq": "CSeq",
}
_SIGNED_RE = re.compile(r"([-+]?)([0-9]+)")
_MAX_CSEQ = 2**31 - 1


def salvage_response(
    data: bytes, error: SipParseError, source: Addr | None = None
) -> tuple[bytes, Addr | None] | None:
    """The response answering ``error`` and where to send it, or None.

    None for a response (never answered) and for a request whose Via,
    From, To, Call-ID or CSeq cannot be echoed validly. The address is None
    only when ``source`` is not given (then: reply to the source).
    """
    try:
        return _salvage(data, error, source)
    except (SipParseError, ValueError, UnicodeError):
        return None


def sanitised_cseq(value: str, method: str) -> str | None:
    """A CSeq a response can carry for a request's ``value``, or None.

    A CSeq that parses is echoed as it is. One whose number is out of range
    or negative (§8.1.1.5: below 2**31) is clamped into range with the
    request-line method: clients match responses by branch and CSeq method
    (§17.1.3), never by the number, so the error still reaches its
    transaction. Anything else cannot be echoed.
    """
    value = value.strip()
    try:
        cseq = parse_cseq(value)
    except SipParseError:
        pass
    else:
        if is_token(cseq.method):
            return value
    words = value.split()
    match = _SIGNED_RE.fullmatch(words[0]) if words else None
    if match is None or not is_token(method):
        return None
    sign, digits = match.groups()
    number = 0 if sign == "-" else parse_digits(digits, _MAX_CSEQ)
    return f"{_MAX_CSEQ if number is None else number} {method}"


def _header_lines(data: bytes) -> list[str]:
    """The start line and header lines, split and unfolded as the parser does."""
    data = data.lstrip(b"\r\n")
    for blank in (b"\r\n\r\n", b"\n\n"):
        end = data.find(blank)
        if end >= 0:
            data = data[:end]
            break
    # surrogateescape keeps invalid UTF-8 visible, so it is never echoed.
    text = data.decode("utf-8", "surrogateescape")
    sep = "\r\n" if "\r\n" in text else "\n"
    lines: list[str] = []
    for line in text.split(sep):
        if line[:1] in (" ", "\t") and len(lines) > 1:
            lines[-1] = f"{lines[-1]} {line.strip()}"
        elif line:
            lines.append(line)
    return lines


def _echoable(value: str) -> bool:
    if control_character(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeError:  # an unpaired surrogate: the request's bytes were not UTF-8
        return False
    return True


def _salvage(
    data: bytes, error: SipParseError, source: Addr | None
) -> tuple[bytes, Addr | None] | None:
    lines = _header_lines(data)
    if not lines or lines[0].startswith("SIP/"):
        return None  # a response: never answer one
    method = lines[0].split(" ", 1)[0]
    vias: list[str] = []
    found: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        canon = _WANTED.get(name.rstrip(" \t").lower())
        if not colon or canon is None:
            continue
        value = value.strip()
        if canon == "Via":
            vias.append(value)
        else:
            found.setdefault(canon, value)
    if not vias or not {"From", "To", "Call-ID", "CSeq"} <= found.keys():
        return None
    if not all(_echoable(v) for v in (*vias, *found.values())):
        return None
    if call_id_problem(found["Call-ID"]) is not None or not found["From"] or not found["To"]:
        return None
    cseq = sanitised_cseq(found["CSeq"], method)
    if cseq is None:
        return None
    elements = [element for value in vias for element in split_list(value)]
    if not elements:
        return None
    top, address = _stamped_top(parse_via(elements[0]), source)
    echoed = [str(strict_via(str(top)))]
    for element in elements[1:]:
        try:
            echoed.append(str(strict_via(element)))
        except SipParseError:
            continue  # a broken lower Via: nobody can route by it, so it is left out
    to = found["To"]
    if ";tag=" not in to.lower():
        to = f"{to};tag={secrets.token_hex(4)}"  # §8.2.6.2
    reason = error.reason or "Bad Request"
    parts = [
        f"SIP/2.0 {error.status} {reason}",
        *(f"Via: {via}" for via in echoed),
        f"From: {found['From']}",
        f"To: {to}",
        f"Call-ID: {found['Call-ID']}",
        f"CSeq: {cseq}",
        "Content-Length: 0",
    ]
    raw = ("\r\n".join(parts) + "\r\n\r\n").encode("utf-8")
    response = parse_message(raw)
    if not isinstance(response, Response):
        return None
    check_syntax(response)
    response.top_via  # noqa: B018 - it must parse again
    return raw, address


def _stamped_top(via: Via, source: Addr | None) -> tuple[Via, Addr | None]:
    """The top Via with ``received``/``rport`` from the packet, and where to reply.

    Whatever ``rport`` said (a bare flag, or a broken value) is replaced by
    the source port, as §18.2.1 and RFC 3581 §4 stamp any request's Via.
    """
    asked_rport = get_param(via.params, "rport") is not None
    if source is None:
        return (via.with_param("rport", None) if asked_rport else via), None
    host = via.host[1:-1] if via.host.startswith("[") else via.host
    if asked_rport:
        via = via.with_param("rport", str(source[1]))
    if host != source[0] or asked_rport:
        via = via.with_param("received", source[0])
    port = source[1] if asked_rport else (via.port or 5060)
    return via, (source[0], port)
