"""Read-only views of SIP messages, for signalling handlers.

Handlers see a :class:`ResponseView`, never the wire class
:class:`sipd.sip.message.Response`: a view has the status, reason, Call-ID,
headers and body of a response and no way to change it, so nothing a handler
does can alter what the transaction and dialog layers hold. This module is the
boundary: it imports :mod:`sipd.sip` and nothing from :mod:`sipd.session`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NoReturn

from sipd.sip.headers import Headers
from sipd.sip.message import Response

__all__ = ["HeadersView", "ResponseView"]


class HeadersView:
    """A read-only header block: ordered, case-insensitive, multi-valued.

    Names match case-insensitively and compact forms stand for their full
    names (``"i"`` is ``Call-ID``, ``"v"`` is ``Via``), as on the wire.
    Iteration gives ``(name, value)`` pairs, names in canonical spelling.
    """

    __slots__ = ("_headers",)

    _headers: Headers

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        object.__setattr__(self, "_headers", Headers(items))

    @classmethod
    def of(cls, headers: Headers) -> HeadersView:
        """A view of a copy of ``headers`` (later changes to them do not show)."""
        view = cls.__new__(cls)
        object.__setattr__(view, "_headers", headers.copy())
        return view

    def get(self, name: str) -> str | None:
        """The value of the first ``name`` header line, or None."""
        return self._headers.get(name)

    def get_all(self, name: str) -> list[str]:
        """The values of every ``name`` header line, in order (not comma-split)."""
        return self._headers.get_all(name)

    def values(self, name: str) -> list[str]:
        """Every element of a list header: comma-separated values and repeated lines."""
        return self._headers.values(name)

    def __contains__(self, name: object) -> bool:
        return name in self._headers

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeadersView):
            return NotImplemented
        return list(self) == list(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"HeadersView({list(self)!r})"

    def __reduce__(self) -> tuple[type[HeadersView], tuple[list[tuple[str, str]]]]:
        return (HeadersView, (list(self),))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is read-only")


@dataclass(frozen=True)
class ResponseView:
    """A SIP response as a handler sees it: read-only, detached from the wire object."""

    # Slots by hand rather than ``slots=True``: on Python 3.11 a frozen
    # ``slots=True`` dataclass raises TypeError, not AttributeError, when an
    # unknown attribute is set.
    __slots__ = ("body", "call_id", "headers", "reason", "status")

    status: int
    reason: str
    call_id: str
    headers: HeadersView
    body: bytes

    @classmethod
    def of(cls, response: Response) -> ResponseView:
        """The view of ``response`` (a snapshot: its headers are copied)."""
        return cls(
            status=response.status,
            reason=response.reason,
            call_id=response.headers.get("Call-ID") or "",
            headers=HeadersView.of(response.headers),
            body=bytes(response.body),
        )

    def __reduce__(self) -> tuple[type[ResponseView], tuple[int, str, str, HeadersView, bytes]]:
        # Frozen: rebuild through the constructor, not by setting slots one by one.
        return (ResponseView, (self.status, self.reason, self.call_id, self.headers, self.body))

    @property
    def is_provisional(self) -> bool:
        """1xx."""
        return self.status < 200

    @property
    def is_success(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300
