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
    unquote,
)
from sipd.sip.uri import Uri, parse_uri

__all__ = ["NameAddr", "parse_name_addr"]

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
        return get_param(self.params, "tag")

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


def parse_name_addr(value: str) -> NameAddr:
    """Parse a ``name-addr`` or ``addr-spec`` with header parameters."""
    text = value.strip()
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
    else:
        uri_text, _, ptext = text.partition(";")
        if " " in uri_text.strip():
            raise BadRequest(f"malformed address {value!r}")
        uri = parse_uri(uri_text.strip(), require_supported=False)
        params = parse_params(ptext)
    return NameAddr(uri=uri, display_name=display, params=params)
