"""Receiving one SIP message, the same over UDP, TCP and TLS.

A datagram and a framed stream message are handled alike once their bytes
are in hand: parse, let the screen see it (overload control's stateless 503,
:mod:`sipd.session.overload`), check the headers every layer above reads,
stamp ``received``/``rport`` on a request (RFC 3261 §18.2.1, RFC 3581 §4),
count it and hand it to the transaction layer. Nothing a remote party sends
may raise into the reactor: a request that does not parse gets the error
response its :class:`~sipd.sip.errors.SipParseError` names (400, 416, 505,
when one can be formed); everything else is dropped, counted and logged at
a bounded rate. :class:`Receiver` does exactly that, once, for both
transports, so malformed SIP is answered identically whichever way it came.

What differs between transports is only where an answer goes, so each
delivery names its ``reply(data, addr)``: UDP sends a datagram to ``addr``
(the salvaged Via address or the packet's source); a stream writes on the
connection the message came on (RFC 3261 §18.2.2) whatever ``addr`` says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.sip.errors import BadRequest, SipParseError
from sipd.sip.message import Request, Response, make_response, parse_message
from sipd.sip.validate import check_syntax
from sipd.transport.ratelimit import RateLimitedLog
from sipd.transport.salvage import salvage_response

__all__ = [
    "Addr",
    "MessageHandler",
    "MessageTap",
    "Receiver",
    "Reply",
    "Screen",
    "check_headers",
    "stamp_received",
]

Addr = tuple[str, int]
MessageHandler = Callable[[Request | Response, Addr], None]
#: Sees each parsed message first; True: answered or absorbed there.
Screen = Callable[[Request | Response, Addr], bool]
#: Sends an error response the receiver formed to ``addr``; may raise ``OSError``.
Reply = Callable[[bytes, Addr], None]
#: Sees every SIP message sent and received, for the console and captures:
#: ``(outgoing, raw bytes, remote address, the parsed message or None)``.
MessageTap = Callable[[bool, bytes, Addr, Request | Response | None], None]


def stamp_received(request: Request, source: Addr) -> None:
    """Add ``received`` / fill ``rport`` on the top Via (RFC 3261 §18.2.1, RFC 3581).

    ``received`` is added when the sent-by host differs from the packet's
    source address, and always when the client asked for ``rport``.
    """
    via = request.top_via
    host = via.host[1:-1] if via.host.startswith("[") else via.host
    changed = via
    rport = via.rport
    if rport is True:
        changed = changed.with_param("rport", str(source[1]))
    if host != source[0] or rport is True:
        changed = changed.with_param("received", source[0])
    if changed is not via:
        request.headers.pop_first_value("Via")
        request.headers.prepend("Via", str(changed))


def check_headers(message: Request | Response) -> None:
    """Parse the headers every layer above reads; the error names the header.

    The parser is lazy, so without this a broken From or To would only fail
    deep in the transaction user: answered without saying which header was
    wrong, and logged with a traceback per message instead of at a bounded
    rate. Raises :class:`BadRequest` (or the original status) naming it.
    """
    name = "Via"
    try:
        message.top_via  # noqa: B018 - parsing is the point
        name = "From"
        message.from_  # noqa: B018
        name = "To"
        message.to  # noqa: B018
        if isinstance(message, Request):
            name = "Max-Forwards"
            message.max_forwards  # noqa: B018
    except SipParseError as exc:
        raise BadRequest(f"bad {name} header: {exc}", status=exc.status) from None
    check_syntax(message)  # nothing a reply would echo may be invalid SIP


class Receiver:
    """Parse, screen, check and hand up one message; answer what is broken.

    One per transport object. ``labels`` are added to every counter (the
    streams' ``transport="tcp"``; none for UDP, whose series predate them);
    ``bad_input`` is the transport's rate-limited log, so its budget is
    shared with the transport's other warnings about remote input.
    """

    __slots__ = ("_bad_input", "_labels", "_log", "handler", "metrics", "screen", "tap")

    def __init__(
        self,
        metrics: Metrics,
        bad_input: RateLimitedLog,
        log: Logger,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.metrics = metrics
        #: Where parsed messages go (the transaction layer's receive); None: dropped.
        self.handler: MessageHandler | None = None
        #: Sees each parsed message before anything else (overload control).
        self.screen: Screen | None = None
        #: Records each message sent and received (None, the default: nothing to do).
        self.tap: MessageTap | None = None
        self._bad_input = bad_input
        self._log = log
        self._labels: dict[str, str] = labels or {}

    def deliver(self, data: bytes, source: Addr, reply: Reply) -> None:
        """Take one whole message (a datagram, a framed stream message) from ``source``."""
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.reject(data, exc, source, reply)
            return
        except Exception as exc:  # a parser bug must not take the reactor down
            self.metrics.inc("sipd_sip_parse_errors_total", 1.0, kind="internal", **self._labels)
            self._bad_input.warn(
                "SIP parser failed on a message from {source}: {exc!r}", source=source, exc=exc
            )
            return
        tap = self.tap
        if tap is not None:
            tap(False, data, source, message)
        handler = self.handler
        if handler is None:
            return
        try:
            screen = self.screen
            if screen is not None and screen(message, source):
                return
            check_headers(message)
            if isinstance(message, Request):
                self.metrics.inc(
                    "sipd_sip_requests_received_total", 1.0, method=message.method, **self._labels
                )
                stamp_received(message, source)
            else:
                self.metrics.inc(
                    "sipd_sip_responses_received_total",
                    1.0,
                    status=str(message.status),
                    **self._labels,
                )
            handler(message, source)
        except SipParseError as exc:
            # A header parsed lazily by a higher layer turned out malformed.
            if isinstance(message, Request) and message.method != "ACK":
                self.reject(data, exc, source, reply)
            else:
                self.count_bad(exc, source)
        except Exception:
            self.metrics.inc("sipd_internal_errors_total")
            self._log.failure("error handling SIP message from {source}", source=source)
            if isinstance(message, Request) and message.method != "ACK":
                with contextlib.suppress(Exception):
                    reply(make_response(message, 500).to_bytes(), source)

    def reject(self, data: bytes, error: SipParseError, source: Addr, reply: Reply) -> None:
        """Count a bad message and answer it when enough of it can be salvaged.

        See :func:`sipd.transport.salvage.salvage_response`: only values that
        can be echoed validly are copied, and the address is the source's
        (its port when ``rport`` was asked for, else the sent-by port),
        never a host the Via names.
        """
        self.count_bad(error, source)
        salvaged = salvage_response(data, error, source)
        if salvaged is None:
            return
        raw, via_addr = salvaged
        with contextlib.suppress(OSError, ValueError):
            reply(raw, via_addr or source)

    def count_bad(self, error: SipParseError, source: Addr) -> None:
        """Count and log (at a bounded rate) a message that was not answered."""
        self.metrics.inc("sipd_sip_parse_errors_total", 1.0, kind=str(error.status), **self._labels)
        self._bad_input.warn(
            "bad SIP message from {source}: {reason}", source=source, reason=error.reason
        )
