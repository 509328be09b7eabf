"""The header block of a SIP message and the small typed headers (CSeq).

Header values are stored as the text that arrived and parsed only when asked
for: most of a message's headers are never looked at by a UA, so lazy parsing
keeps the receive path cheap. Names are matched case-insensitively and compact
forms (RFC 3261 §7.3.3, §20; RFC 3265, 3515, 4028) are expanded on the way in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sipd.sip.errors import BadRequest
from sipd.sip.grammar import parse_digits, slot_setter, split_list

__all__ = [
    "COMPACT_FORMS",
    "CSeq",
    "Headers",
    "canonical_name",
    "parse_cseq",
]

_KNOWN = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]

#: Compact header names and the full names they stand for.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN}
_CANONICAL.update(COMPACT_FORMS)

# Keys for lookups: the lower-cased full name, so "v", "VIA" and "Via" meet.
_KEY: dict[str, str] = {k: v.lower() for k, v in _CANONICAL.items()}


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; unknown names are kept as given."""
    return _CANONICAL.get(name.lower(), name)


# The spellings lookups use in practice (canonical, lower-case, compact), so
# the hot path skips lower-casing the name on every call.
_EXACT_KEY: dict[str, str] = {**_KEY, **{name: _KEY[name.lower()] for name in _CANONICAL.values()}}


def _key(name: str) -> str:
    key = _EXACT_KEY.get(name)
    if key is not None:
        return key
    low = name.lower()
    return _KEY.get(low, low)


class Headers:
    """An ordered, case-insensitive, multi-valued header block.

    Each entry is one header line: ``(name, value)`` with the name in canonical
    spelling and the value as received (folded lines joined by one space).
    :attr:`version` increases with every change, which lets a message tell
    cheaply whether it can re-emit the bytes it was parsed from.

    A parsed block also carries an index of each name's first value and a
    memo of typed values parsed from it (the message's CSeq, From, To, top
    Via): a UA reads those several times per message, and every change
    drops both, so a typed view never outlives the text it came from.
    """

    __slots__ = ("_index", "_items", "_memo", "version")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = [
            (_key(n), canonical_name(n), v) for n, v in items
        ]
        self.version = 0
        #: key -> first value, for blocks built by the parser; None otherwise.
        self._index: dict[str, str] | None = None
        #: Typed values parsed from this block, cleared on every change.
        self._memo: dict[str, Any] | None = None

    @classmethod
    def _from_parsed(
        cls, items: list[tuple[str, str, str]], index: dict[str, str] | None = None
    ) -> Headers:
        """Wrap parser output; ``index`` maps each key to its first value."""
        h = cls.__new__(cls)
        h._items = items
        h.version = 0
        h._index = index
        h._memo = None
        return h

    def parsed_views(self) -> dict[str, Any]:
        """Typed values parsed from this block (created on first use; cleared on any change)."""
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        return memo

    def _changed(self) -> None:
        self.version += 1
        self._index = None
        self._memo = None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        if self._index is not None:
            return key in self._index
        return any(k == key for k, _, _ in self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        """An independent copy."""
        # The index is never changed in place, so the copy may share it.
        return Headers._from_parsed(list(self._items), self._index)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first ``name`` header line, or ``default``."""
        key = _EXACT_KEY.get(name) or _key(name)
        if self._index is not None:
            return self._index.get(key, default)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """The values of every ``name`` header line, in order (not comma-split)."""
        key = _key(name)
        return [v for k, _, v in self._items if k == key]

    def values(self, name: str) -> list[str]:
        """Every element of a list header (``Via``, ``Route``, ``Allow``...).

        Comma-separated values and repeated header lines are equivalent
        (RFC 3261 §7.3.1); this flattens both into one list.
        """
        out: list[str] = []
        for v in self.get_all(name):
            out.extend(split_list(v))
        return out

    def first_value(self, name: str) -> str | None:
        """The first element of a list header (the top ``Via``, say)."""
        key = _EXACT_KEY.get(name) or _key(name)
        v = self._index.get(key) if self._index is not None else self.get(name)
        if v is None:
            return None
        if "," not in v:
            return v.strip()
        parts = split_list(v)
        return parts[0] if parts else None

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one line at the first one's place."""
        key = _key(name)
        entry = (key, canonical_name(name), value)
        out: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    out.append(entry)
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append(entry)
        self._items = out
        self._changed()

    def add(self, name: str, value: str) -> None:
        """Append a ``name`` line after every other header."""
        self._items.append((_key(name), canonical_name(name), value))
        self._changed()

    def prepend(self, name: str, value: str) -> None:
        """Insert a ``name`` line before the first existing ``name`` line.

        This is how a Via or a Record-Route is pushed on top of the others.
        """
        key = _key(name)
        for i, item in enumerate(self._items):
            if item[0] == key:
                self._items.insert(i, (key, canonical_name(name), value))
                break
        else:
            self._items.insert(0, (key, canonical_name(name), value))
        self._changed()

    def remove(self, name: str) -> int:
        """Remove every ``name`` line; returns how many were removed."""
        key = _key(name)
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != key]
        removed = before - len(self._items)
        if removed:
            self._changed()
        return removed

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first element of a list header (a Via, a Route)."""
        key = _key(name)
        for i, (k, n, v) in enumerate(self._items):
            if k == key:
                parts = split_list(v)
                if len(parts) <= 1:
                    del self._items[i]
                else:
                    self._items[i] = (k, n, ", ".join(parts[1:]))
                self._changed()
                return parts[0] if parts else None
        return None


@dataclass(frozen=True, slots=True)
class CSeq:
    """The ``CSeq`` header: a sequence number and the method it counts."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# Built per message: see grammar.slot_setter for why not CSeq(...).
_new = object.__new__
_set_number = slot_setter(CSeq, "number")
_set_method = slot_setter(CSeq, "method")


def parse_cseq(value: str) -> CSeq:
    """Parse ``CSeq: 4711 INVITE`` (RFC 3261 §20.16: number below 2**31)."""
    parts = value.split()
    if len(parts) == 2:
        number_text = parts[0]
        # Nine digits or fewer always fit below 2**31: no range check needed.
        if len(number_text) < 10 and number_text.isdigit() and number_text.isascii():
            cseq: CSeq = _new(CSeq)
            _set_number(cseq, int(number_text))
            _set_method(cseq, parts[1])
            return cseq
    if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()):
        raise BadRequest(f"malformed CSeq {value!r}")
    number = parse_digits(parts[0], 2**31 - 1)
    if number is None:
        raise BadRequest(f"CSeq number too large in {value[:60]!r}")
    return CSeq(number, parts[1])
