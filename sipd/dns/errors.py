"""The error raised when a SIP server cannot be located (RFC 3263).

:class:`DnsError` derives from :class:`~sipd.errors.CallFailed` on purpose.
To the code that asked, "the name does not resolve" is one more way for a
request to fail before anything was sent, exactly like the ``CallFailed``
that :func:`sipd.session.call_leg.resolve_host` raises today: every
``except CallFailed`` (and ``contextlib.suppress(CallFailed)``) around a
send keeps working when RFC 3263 location replaces it. It is not a
:class:`~sipd.errors.ConfigError`: the name in the URI may be right and the
DNS only down for a moment, so the next attempt may well succeed.
"""

from __future__ import annotations

from sipd.errors import CallFailed

__all__ = ["DnsError"]


class DnsError(CallFailed):
    """No usable target for a SIP URI: the message names the DNS name and record type.

    ``name`` is the DNS name (or the URI host) that failed, ``rtype`` the
    record type that was asked for (``"NAPTR"``, ``"SRV"``, ``"A/AAAA"``),
    or None when no query was involved (an unsupported ``transport=``), and
    ``cause`` the short cause: ``NXDOMAIN``, ``no records``, ``timed out``,
    ``SERVFAIL``... (Not ``reason``: :class:`~sipd.errors.CallError` keeps
    the SIP reason phrase there.) ``status`` stays None: no SIP response
    was received.
    """

    def __init__(self, message: str, *, name: str, rtype: str | None, cause: str) -> None:
        super().__init__(message)
        self.name = name
        self.rtype = rtype
        self.cause = cause
