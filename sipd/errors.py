"""The one error hierarchy of sipd.

Every exception sipd raises on purpose derives from :class:`SipdError`, so a
program can catch everything sipd-specific in one place. Messages are written
for the person reading the log: they say what happened and what to do.
"""

from __future__ import annotations

__all__ = [
    "ActionFailed",
    "AuthenticationError",
    "CallCancelled",
    "CallError",
    "CallFailed",
    "CallRejected",
    "CallStateError",
    "CallTimeout",
    "CallTransportError",
    "ConfigError",
    "MediaValueError",
    "RegistrationError",
    "RtpParseError",
    "SdpError",
    "SdpNegotiationError",
    "SipdError",
    "SipdValueError",
    "StateTableError",
    "TransactionError",
    "TransportError",
    "UnhandledEvent",
    "WavFormatError",
]


class SipdError(Exception):
    """Base class of every error sipd raises deliberately."""


class ConfigError(SipdError):
    """A configuration file or value is wrong; the message names file, line and key."""


class RtpParseError(SipdError):
    """An RTP or RTCP datagram is malformed; the message says which field and why."""


class WavFormatError(SipdError):
    """A WAV file cannot be read; the message names the file and what is wrong with it."""


class StateTableError(SipdError):
    """A state table is invalid; each problem names file, line, row and key.

    All problems found in one load are reported together, so a table author
    fixes them in one pass; ``problems`` holds them one per line.
    """

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class UnhandledEvent(SipdError):
    """A session received an event its state table has no row for in its current state.

    ``event`` is the event object that found no row.
    """

    def __init__(self, message: str, *, event: object = None) -> None:
        super().__init__(message)
        self.event = event


class ActionFailed(SipdError):
    """A state-table action raised; the transition was still taken (see ``__cause__``)."""


class SdpError(SipdError):
    """An SDP body is malformed; the message names the line number and the line.

    ``status`` is the SIP response a UAS should send for it (h11-style status hint).
    """

    status: int = 400


class SdpNegotiationError(SdpError):
    """Offer/answer found nothing both sides can use (RFC 3264), e.g. no common codec.

    The SIP answer to such an offer is 488 Not Acceptable Here (RFC 3261 §21.4.26).
    """

    status: int = 488


class SipdValueError(SipdError, ValueError):
    """An argument that cannot be right (a status out of range, a bad digit...)."""


class MediaValueError(SipdValueError):
    """A media value (samples, codec name, packet field) is out of range or of the wrong kind."""


class TransactionError(SipdError):
    """A SIP transaction was used in a way RFC 3261 §17 does not allow.

    For example a second final response on a server transaction, or a request
    whose top Via has no RFC 3261 branch handed to a client transaction; the
    message names the method, the status and the state.
    """


class TransportError(SipdError, OSError):
    """A SIP message could not be carried over TCP or TLS; the message names the peer and why.

    For example "TLS to 127.0.0.1:5061 failed: certificate verify failed
    (self-signed certificate)" or "TCP connection to 127.0.0.1:5060 was
    lost: closed by the peer". It is an ``OSError`` too, so the transaction
    layer's transport-error path (RFC 3261 §17.1.4, §17.2.4), which takes
    ``OSError`` from every transport, fails the transaction at once instead
    of waiting for a timeout. ``peer`` is the (host, port) concerned, or None.
    """

    def __init__(self, message: str, *, peer: tuple[str, int] | None = None) -> None:
        super().__init__(message)
        self.peer = peer


class CallError(SipdError):
    """A call did not do what was asked; ``status`` is the SIP status, if any."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.reason = reason


class CallRejected(CallError):
    """The callee (or a proxy) answered with a final 3xx-6xx status."""


class CallCancelled(CallError):
    """The call was cancelled before it was answered (by us or by the caller)."""

    status = 487


class CallTimeout(CallError):
    """Nobody answered in time, or the peer never responded at all."""

    status = 408


class CallFailed(CallError):
    """The call broke for another reason (no common codec, missing ACK, transport)."""


class CallTransportError(CallFailed, TransportError):
    """The call failed because SIP could not be carried to the peer: a TLS certificate
    that is not trusted or names another host, a refused or lost connection, every
    DNS target down. Both a :class:`CallFailed` and a :class:`TransportError`; the
    message names the peer and the reason."""


class CallStateError(CallError):
    """An operation that the call's current state does not allow (answering twice...)."""


class AuthenticationError(SipdError):
    """A registrar, proxy or server refused our digest credentials (RFC 3261 §22).

    Raised instead of retrying forever: the message names the server, the
    user and the realm, and says what to check (usually the username and the
    password, sometimes an algorithm sipd cannot answer). ``status`` is the
    401 or 407 that ended the attempt.
    """

    def __init__(
        self, message: str, *, status: int | None = None, username: str = "", realm: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.username = username
        self.realm = realm


class RegistrationError(SipdError):
    """A registrar refused or did not answer a REGISTER; ``status`` says which."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
