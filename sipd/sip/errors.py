"""Parse errors that know which SIP status answers them.

Following h11's ``error_status_hint``: code deep in the parser raises the most
specific subclass, and the single receive entry point (the transport) turns
it into a response with :attr:`SipParseError.status` and the message as the
reason phrase, or drops the datagram when no response can be formed.
"""

from __future__ import annotations

import re

from sipd.errors import SipdError

#: What a Reason-Phrase may not contain (RFC 3261 §25.1: no CTL but HTAB).
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

__all__ = [
    "BadRequest",
    "SipParseError",
    "UnsupportedUriScheme",
    "VersionNotSupported",
]


class SipParseError(SipdError):
    """Bytes that are not a valid SIP message, or a header that does not parse.

    ``status`` is the response a UAS should send (400 unless a subclass says
    otherwise); ``str(error)`` is short enough to be the reason phrase.
    """

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def reason(self) -> str:
        """The reason phrase for the error response: the message, on one line.

        Control characters (a NUL, a bare CR or LF quoted from the input)
        become spaces, so the phrase is always valid in a status line.
        """
        return _CTL.sub(" ", str(self))[:120]


class BadRequest(SipParseError):
    """Malformed syntax (RFC 3261 §21.4.1: 400 Bad Request)."""

    status = 400


class VersionNotSupported(SipParseError):
    """A SIP version other than 2.0 (RFC 3261 §21.5.7: 505)."""

    status = 505


class UnsupportedUriScheme(SipParseError):
    """A Request-URI whose scheme we do not serve (RFC 3261 §21.4.16: 416)."""

    status = 416
