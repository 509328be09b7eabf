"""``name-addr`` / ``addr-spec`` values: From, To, Contact, Route, Refer-To.

RFC 3261 §20.10: when the URI is not in angle brackets, the parameters after
it belong to the header (``tag``, ``expires``), not to the URI; this parser
follows that rule so ``From: sip:a@b;tag=1`` yields a tag.
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
    is_token,
    parse_params,
    quote,
    remove_param,
    set_param,
    slot_setter,
    unquote,
)
from sipd.sip.uri import Uri, parse_uri

__all__ = ["NameAddr", "clear_cache", "parse_name_addr"]

# A quoted-string at the start of a value: ``\`` escapes the next character.
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """An address with optional display name and header parameters."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    def __str__(self) -> str:
        if self.display_name:
            name = self.display_name
            words = name.split()
            shown = name if words and all(is_token(w) for w in words) else quote(name)
            head = f"{shown} <{self.uri}>"
        else:
            head = f"<{self.uri}>"
        return head + format_params(self.params)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To), or None."""
        for name, value in self.params:  # get_param, inlined: read per message
            if name == "tag":
                return "" if value is None else value
        return None

    def param(self, name: str, default: str | None = None) -> str | None:
        """A header parameter (``""`` for a flag)."""
        return get_param(self.params, name, default)

    def with_tag(self, tag: str) -> NameAddr:
        """A copy carrying ``;tag=tag``."""
        return dataclasses.replace(self, params=set_param(self.params, "tag", tag))

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """A copy with header parameter ``name`` set."""
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    def without_param(self, name: str) -> NameAddr:
        """A copy without header parameter ``name``."""
        return dataclasses.replace(self, params=remove_param(self.params, name))


#: ``display <URI>`` text (up to the first ``>``) -> its display name and
#: Uri. The same few addresses head every From, To and Contact of a peer and
#: only the parameters after them (the tags) change, so the part before is
#: parsed once. Bounded: cleared when full. Failures are not cached.
_HEAD_CACHE: dict[str, tuple[str | None, Uri]] = {}
_HEAD_CACHE_MAX = 2048


# Built per message: see grammar.slot_setter for why not NameAddr(...).
_new = object.__new__
_set_uri = slot_setter(NameAddr, "uri")
_set_display_name = slot_setter(NameAddr, "display_name")
_set_params = slot_setter(NameAddr, "params")


def clear_cache() -> None:
    """Forget cached address parses (see :func:`sipd.sip.uri.clear_cache`)."""
    _HEAD_CACHE.clear()


def parse_name_addr(value: str) -> NameAddr:
    """Parse a ``name-addr`` or ``addr-spec`` with header parameters."""
    text = value.strip()
    gt = text.find(">")
    if gt > 0:
        head = _HEAD_CACHE.get(text[: gt + 1])
        if head is not None:
            # NameAddr(uri, display, parse_params(tail.strip())) for the From
            # and To of every message. A lone plain ``;tag=value`` (no other
            # parameter, nothing to strip or unquote) is what parse_params
            # would make of it.
            tail = text[gt + 1 :]
            addr: NameAddr = _new(NameAddr)
            _set_uri(addr, head[1])
            _set_display_name(addr, head[0])
            if not tail:
                _set_params(addr, ())
            elif (
                tail[:5] == ";tag="
                and ";" not in tail[5:]
                and tail.isprintable()
                and " " not in tail
                and '"' not in tail
                and "<" not in tail
            ):
                _set_params(addr, (("tag", tail[5:]),))
            else:
                _set_params(addr, parse_params(tail.strip()))
            return addr
    addr, params_at = _parse_name_addr(value, text)
    # Only when the address ended at the first ">" does the text before it
    # decide display name and URI alone, whatever parameters follow.
    if params_at == gt + 1 and gt > 0:
        if len(_HEAD_CACHE) >= _HEAD_CACHE_MAX:
            _HEAD_CACHE.clear()
        _HEAD_CACHE[text[:params_at]] = (addr.display_name, addr.uri)
    return addr


def _parse_name_addr(value: str, text: str) -> tuple[NameAddr, int]:
    """The address, and where in ``text`` its parameters start (-1: no ``<>``)."""
    full = len(text)
    if not text:
        raise BadRequest("empty address")
    display: str | None = None
    if text[0] == '"':
        m = _QUOTED_RE.match(text)
        if m is None:
            raise BadRequest(f"unterminated display name in {value!r}")
        display = unquote(m.group())
        text = text[m.end() :].lstrip()
        if not text.startswith("<"):
            raise BadRequest(f"display name without <URI> in {value!r}")
    lt = text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise BadRequest(f"unterminated <URI> in {value!r}")
        if display is None:
            before = text[:lt].strip()
            display = before or None
        uri = parse_uri(text[lt + 1 : gt], require_supported=False)
        params = parse_params(text[gt + 1 :].strip())
        params_at = full - (len(text) - gt - 1)
    else:
        uri_text, _, ptext = text.partition(";")
        if " " in uri_text.strip():
            raise BadRequest(f"malformed address {value!r}")
        uri = parse_uri(uri_text.strip(), require_supported=False)
        params = parse_params(ptext)
        params_at = -1
    return NameAddr(uri=uri, display_name=display, params=params), params_at
