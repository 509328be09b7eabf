"""Message bodies by type: the SDP in a body, and the parts of ``multipart/mixed``.

RFC 3261 §7.4 and §20.15: the body's type is its ``Content-Type``; a UA
that offers and answers with SDP takes ``application/sdp`` and, since
RFC 5621, a ``multipart/mixed`` body one of whose parts is
``application/sdp`` (a signed or annotated offer, RFC 4475 §3.1.1.11).
:func:`sdp_body` is how the session layer reads an offer or an answer, so
a body of another type is never handed to the SDP parser;
:func:`unsupported_body` says why a body cannot be used, for the 415 of
RFC 3261 §8.2.3.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from sipd.sip.errors import SipParseError
from sipd.sip.grammar import get_param, parse_params, unquote
from sipd.sip.message import Message

__all__ = [
    "MULTIPART_MIXED",
    "SDP",
    "BodyPart",
    "multipart_parts",
    "sdp_body",
    "unsupported_body",
]

SDP = "application/sdp"
MULTIPART_MIXED = "multipart/mixed"

# A multipart part's header block ends at its first blank line.
_PART_HEAD_RE = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One part of a multipart body: its media type (lower-case, no parameters) and bytes."""

    content_type: str
    content: bytes


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def multipart_parts(content_type: str, body: bytes) -> list[BodyPart] | None:
    """The parts of a multipart ``body`` (RFC 2046 §5.1), or None when it is malformed.

    ``content_type`` is the whole Content-Type value, whose ``boundary``
    parameter delimits the parts. A part without a Content-Type is
    ``text/plain`` (RFC 2046 §5.1). The preamble and epilogue are ignored.
    """
    _, _, ptext = content_type.partition(";")
    try:
        boundary = unquote(get_param(parse_params(ptext), "boundary") or "")
    except SipParseError:
        return None
    if not boundary or len(boundary) > 70:
        return None
    # The delimiter starts a line: "--boundary", "--" more for the last one.
    delimiter = re.compile(
        rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("utf-8")) + rb"(--)?[ \t]*(?:\r?\n|\Z)"
    )
    matches = list(delimiter.finditer(body))
    if not matches:
        return None
    parts: list[BodyPart] = []
    for here, after in itertools.pairwise(matches):
        if here.group(1):
            return parts  # the close delimiter: what follows is the epilogue
        parts.append(_part(body[here.end() : after.start()]))
    last = matches[-1]
    if not last.group(1):
        parts.append(_part(body[last.end() :]))  # no close delimiter: the rest is a part
    return parts


def _part(data: bytes) -> BodyPart:
    found = _PART_HEAD_RE.search(data)
    if data.startswith((b"\r\n", b"\n")):
        head, content = b"", data[2 if data.startswith(b"\r\n") else 1 :]  # no headers
    elif found is None:
        head, content = data, b""
    else:
        head, content = data[: found.start()], data[found.end() :]
    kind = "text/plain"
    for line in head.decode("utf-8", "replace").splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() in ("content-type", "c"):
            kind = _media_type(value)
    return BodyPart(kind, content)


def _parts_of(message: Message) -> list[BodyPart] | None:
    """The body as parts: one for a simple body, each part of ``multipart/mixed``."""
    value = message.headers.get("Content-Type")
    if value is None:
        # §20.15 wants a Content-Type with every body; peers that leave it
        # out of an INVITE send SDP, and sipd has always read it so.
        return [BodyPart(SDP, message.body)]
    kind = _media_type(value)
    if kind == MULTIPART_MIXED:
        return multipart_parts(value, message.body)
    return [BodyPart(kind, message.body)]


def sdp_body(message: Message) -> bytes | None:
    """The SDP the message carries, or None.

    The whole body for ``application/sdp`` (or a body without
    Content-Type), the first ``application/sdp`` part of a
    ``multipart/mixed`` body; None for an empty body, a body of any other
    type, or a multipart body without an SDP part.
    """
    if not message.body:
        return None
    parts = _parts_of(message)
    for part in parts or ():
        if part.content_type == SDP and part.content:
            return part.content
    return None


def unsupported_body(message: Message, accepted: tuple[str, ...] = (SDP,)) -> str | None:
    """Why the message's body is of no type in ``accepted``, or None when it is usable.

    A ``multipart/mixed`` body is usable when one of its parts is. An empty
    body is always usable (there is nothing to understand).
    """
    if not message.body:
        return None
    parts = _parts_of(message)
    if parts is None:
        return "malformed multipart/mixed body"
    if any(part.content_type in accepted for part in parts):
        return None
    kinds = ", ".join(part.content_type for part in parts) or "an empty multipart/mixed"
    return f"body of type {kinds}"
