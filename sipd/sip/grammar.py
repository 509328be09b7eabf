"""Small lexical helpers shared by the URI and header parsers (RFC 3261 §25).

Kept apart so the ABNF-level rules (quoted strings, parameter lists, escapes)
live in one place and each header parser stays a few lines long. Every
function has a fast path for the common case with no quotes or brackets: the
SIP receive path is hot.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sipd.sip.errors import BadRequest

__all__ = [
    "Params",
    "escape",
    "format_params",
    "get_param",
    "is_token",
    "parse_digits",
    "parse_params",
    "quote",
    "remove_param",
    "set_param",
    "slot_setter",
    "split_list",
    "unescape",
    "unquote",
]

#: Parameters in the order they appeared: ``(name, value)``; value is None for
#: a flag such as ``;lr`` or ``;rport``. Names are lower-cased (they are
#: case-insensitive); values are kept as sent, quotes included, so a re-emitted
#: header says exactly what it said before.
Params = tuple[tuple[str, str | None], ...]

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HEX = "0123456789abcdefABCDEF"


def slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The setter of slot ``name`` of a slotted (frozen) dataclass ``cls``.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, about twice the cost of calling the slot's own
    setter; the parsers build a Via, a CSeq and two addresses per message,
    so they fill fresh instances (``object.__new__``) through these. The
    result is the same object; tests compare it with one built by ``__init__``.
    """
    setter: Callable[[object, object], None] = cls.__dict__[name].__set__
    return setter


def is_token(text: str) -> bool:
    """True if ``text`` is an RFC 3261 ``token``."""
    return bool(_TOKEN_RE.match(text))


def parse_digits(text: str, high: int) -> int | None:
    """``text`` as an int when it is ``1*DIGIT`` and at most ``high``, else None.

    Leading zeros are allowed. Only as many digits as ``high`` has are ever
    converted: Python refuses to convert more than 4,300 digits with a
    ``ValueError``, which must never escape a parser as an internal error.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(high)):
        return None
    value = int(significant or "0")
    return value if value <= high else None


def split_list(value: str, sep: str = ",") -> list[str]:
    """Split a header value on ``sep`` outside quoted strings and ``<...>``.

    Used for comma-separated header lists (``Via: a, b``) and for parameter
    lists (``sep=";"``). Empty elements are dropped.
    """
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(sep) if part.strip()]
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
        i += 1
    if in_quotes:
        raise BadRequest(f"unterminated quoted string in {value!r}")
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts


def unquote(text: str) -> str:
    """Remove the quotes of a ``quoted-string`` and resolve its ``\\`` escapes.

    A value that is not quoted is returned unchanged, so callers can pass any
    ``gen-value``.
    """
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner):
            i += 1
            ch = inner[i]
        out.append(ch)
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    """Make a ``quoted-string`` of ``text``, escaping ``"`` and ``\\``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` (a leading ``;`` is optional)."""
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    if text.isprintable() and " " not in text and '"' not in text and "<" not in text:
        # No blanks, quotes or brackets (the usual case): nothing to strip.
        for item in text.split(";"):
            if item:
                name, eq, value = item.partition("=")
                if not name:
                    raise BadRequest(f"empty parameter name in {text!r}")
                out.append((name.lower(), value if eq else None))
        return tuple(out)
    items = split_list(text, ";") if '"' in text or "<" in text else text.split(";")
    for item in items:
        if not item:
            continue  # the empty element before a leading ';'
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            if eq:
                raise BadRequest(f"empty parameter name in {text!r}")
            continue  # an empty element such as the one before a leading ';'
        out.append((name, value.strip() if eq else None))
    return tuple(out)


def format_params(params: Params) -> str:
    """Serialise parameters back to ``;name=value;flag`` form."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def get_param(params: Params, name: str, default: str | None = None) -> str | None:
    """Value of the first parameter called ``name`` (case-insensitive).

    A flag parameter yields ``""`` so that ``get_param(p, "lr") is not None``
    tells presence; a missing one yields ``default``.
    """
    name = name.lower()
    for n, v in params:
        if n == name:
            return "" if v is None else v
    return default


def set_param(params: Params, name: str, value: str | None) -> Params:
    """Return ``params`` with ``name`` set (replacing the first, else appended)."""
    name = name.lower()
    out = list(params)
    for i, (n, _) in enumerate(out):
        if n == name:
            out[i] = (name, value)
            return tuple(out)
    out.append((name, value))
    return tuple(out)


def remove_param(params: Params, name: str) -> Params:
    """Return ``params`` without any parameter called ``name``."""
    name = name.lower()
    return tuple(p for p in params if p[0] != name)


def unescape(text: str) -> str:
    """Resolve ``%XX`` escapes (RFC 3261 §19.1.2); bad escapes are a 400."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode("utf-8")
    while i < len(raw):
        b = raw[i]
        if b == 0x25:  # '%'
            pair = raw[i + 1 : i + 3].decode("ascii", "replace")
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise BadRequest(f"bad %-escape in {text!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "replace")


def escape(text: str, safe: str) -> str:
    """%-escape every character of ``text`` that is not alphanumeric or in ``safe``."""
    if all(ch.isascii() and (ch.isalnum() or ch in safe) for ch in text):
        return text
    out: list[str] = []
    for ch in text:
        if ch.isascii() and (ch.isalnum() or ch in safe):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)
