"""What sending one datagram can raise, folded into one ``OSError``.

Addresses sipd sends to come from the wire (a Via's ``received``, ``rport``
and ``maddr``, a Contact, an SDP ``c=`` line), and ``socket.sendto`` and
Twisted's ``udp.Port.write`` refuse a bad one in many different ways: a port
above 65535 is an ``OverflowError``, a NUL in the host a ``TypeError``, a
host name or an address of the other family a ``ValueError`` (Twisted's
``InvalidAddressError``) or a ``socket.gaierror``, an oversized datagram
Twisted's ``MessageLengthError``, which is not even an ``OSError``.

Every send point catches :data:`SEND_ERRORS` and fails that one transaction,
call or packet; :func:`send_error` turns what was caught and is not an
``OSError`` into a :class:`SendError`, an ``OSError`` naming the destination, so the layers
above (the transaction layer's transport-error callbacks, RFC 3261 §17.1.4
and §17.2.4) keep a single exception type. Shared by the SIP transport, the
transaction layer and the media stream, so it sits outside all three.
"""

from __future__ import annotations

import errno

from twisted.internet.error import MessageLengthError

__all__ = ["SEND_ERRORS", "SendError", "is_transient", "send_error"]

#: errno values of a momentary refusal (a full buffer): the address itself is fine.
_TRANSIENT = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ENOMEM})

#: Everything a datagram send may raise for an address or a datagram it cannot use.
SEND_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    OverflowError,
    ValueError,
    TypeError,
    MessageLengthError,
)


class SendError(OSError):
    """A datagram could not be sent to ``dest``; ``cause`` is what the socket raised."""

    def __init__(self, dest: tuple[str, int], cause: BaseException) -> None:
        host, port = dest
        detail = str(cause) or type(cause).__name__
        super().__init__(f"cannot send to {host!r} port {port}: {detail}")
        self.dest = dest
        self.cause = cause


def send_error(dest: tuple[str, int], cause: BaseException) -> OSError:
    """``cause`` as an ``OSError``: an ``OSError`` as it is, anything else a :class:`SendError`.

    The traceback is dropped: the error travels to callbacks and may be kept
    (a call's failure), and its frames would hold the sender and the error.
    """
    cause = cause.with_traceback(None)
    if isinstance(cause, OSError):
        return cause
    return SendError(dest, cause)


def is_transient(error: BaseException) -> bool:
    """True for a refusal that may not happen again (a full socket buffer).

    Anything else (a port above 65535, a host that is no address, the other
    address family, a datagram too large) fails the same way every time.
    """
    return isinstance(error, OSError) and error.errno in _TRANSIENT
