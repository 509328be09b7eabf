"""SIP over UDP: the one place where datagrams meet the sans-I/O core.

:class:`SipDatagramProtocol` parses each datagram, stamps ``received`` and
``rport`` on requests (RFC 3261 §18.2.1, RFC 3581 §4), and hands the message
to the transaction layer. Nothing a remote party sends may raise into the
reactor: a request that does not parse gets the error response its
:class:`~sipd.sip.errors.SipParseError` names, when one can be formed;
everything else is dropped, counted and logged at a bounded rate.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.send_errors import SEND_ERRORS, send_error
from sipd.sip.errors import BadRequest, SipParseError
from sipd.sip.message import Request, Response, make_response, parse_message
from sipd.sip.validate import check_syntax
from sipd.transport.ratelimit import RateLimitedLog
from sipd.transport.salvage import salvage_response

__all__ = [
    "Addr",
    "SipDatagramProtocol",
    "check_headers",
    "error_response_bytes",
    "stamp_received",
]

Addr = tuple[str, int]
MessageHandler = Callable[[Request | Response, Addr], None]

_log = Logger()


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
    wrong, and logged with a traceback per datagram instead of at a bounded
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


def error_response_bytes(
    data: bytes, error: SipParseError, source: Addr | None = None
) -> tuple[bytes, Addr | None] | None:
    """Salvage enough of a bad request to answer it, or None.

    See :func:`sipd.transport.salvage.salvage_response`: only values that
    can be echoed validly are copied, the response is parsed and checked
    again, and it goes to the packet's ``source`` (its port when ``rport``
    was asked for, else the sent-by port), never to a host the Via names.
    The address is None only without a ``source``.
    """
    return salvage_response(data, error, source)


class SipDatagramProtocol(DatagramProtocol):
    """A UDP socket carrying SIP for one UA or one daemon."""

    def __init__(
        self,
        clock: IReactorTime,
        metrics: Metrics | None = None,
        max_datagram: int = 65507,
    ) -> None:
        self._handler: MessageHandler | None = None
        #: Sees each parsed message first; True: answered or absorbed there
        #: (overload control's stateless 503, :mod:`sipd.session.overload`).
        self.screen: Callable[[Request | Response, Addr], bool] | None = None
        self.metrics = metrics or Metrics()
        self._bad_input = RateLimitedLog(_log, clock)
        self._max_datagram = max_datagram

    def set_handler(self, handler: MessageHandler) -> None:
        """Route parsed messages to ``handler`` (the transaction layer's receive)."""
        self._handler = handler

    @property
    def local_address(self) -> Addr:
        """The bound host and port."""
        assert self.transport is not None
        addr = self.transport.getHost()
        return addr.host, addr.port

    def send(self, data: bytes, addr: Addr) -> None:
        """Send one datagram; every failure is raised as an ``OSError``.

        Whatever the socket refuses (a port above 65535, a NUL or a name in
        the host, the other address family, an oversized datagram) comes out
        as an ``OSError`` (a :class:`~sipd.send_errors.SendError` for what was
        not one), so the transaction layer's transport-error path sees one
        exception type and nothing else can reach the reactor.
        """
        if self.transport is None:
            raise OSError("SIP transport is not listening")
        try:
            self.transport.write(data, _normalise(addr))
        except SEND_ERRORS as exc:
            self.metrics.inc("sipd_sip_send_errors_total", kind=type(exc).__name__)
            raise send_error(addr, exc) from exc
        # Counted from the start line's bytes: no parsing on the way out.
        if data.startswith(b"SIP/2.0 "):
            self.metrics.inc(
                "sipd_sip_responses_sent_total", status=data[8:11].decode("ascii", "replace")
            )
        else:
            method = data[: data.find(b" ", 0, 20)].decode("ascii", "replace")
            self.metrics.inc("sipd_sip_requests_sent_total", method=method)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        source: Addr = (addr[0], addr[1])
        if len(data) < 4 or data.strip(b"\r\n\x00 ") == b"":
            return  # keep-alive (RFC 5626 CRLF) or empty datagram
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._reject(data, exc, source)
            return
        except Exception as exc:  # a parser bug must not take the reactor down
            self.metrics.inc("sipd_sip_parse_errors_total", kind="internal")
            self._bad_input.warn(
                "SIP parser failed on datagram from {source}: {exc!r}", source=source, exc=exc
            )
            return
        if self._handler is None:
            return
        try:
            if self.screen is not None and self.screen(message, source):
                return
            check_headers(message)
            if isinstance(message, Request):
                self.metrics.inc("sipd_sip_requests_received_total", method=message.method)
                stamp_received(message, source)
            else:
                self.metrics.inc("sipd_sip_responses_received_total", status=str(message.status))
            self._handler(message, source)
        except SipParseError as exc:
            # A header parsed lazily by a higher layer turned out malformed.
            if isinstance(message, Request) and message.method != "ACK":
                self._reject(data, exc, source)
            else:
                self._count_bad(exc, source)
        except Exception:
            self.metrics.inc("sipd_internal_errors_total")
            _log.failure("error handling SIP message from {source}", source=source)
            if isinstance(message, Request) and message.method != "ACK":
                with contextlib.suppress(Exception):
                    self.send(make_response(message, 500).to_bytes(), source)

    def _count_bad(self, exc: SipParseError, source: Addr) -> None:
        self.metrics.inc("sipd_sip_parse_errors_total", kind=str(exc.status))
        self._bad_input.warn(
            "bad SIP message from {source}: {reason}", source=source, reason=exc.reason
        )

    def _reject(self, data: bytes, exc: SipParseError, source: Addr) -> None:
        self._count_bad(exc, source)
        salvaged = error_response_bytes(data, exc, source)
        if salvaged is None:
            return
        raw, via_addr = salvaged
        with contextlib.suppress(OSError, ValueError):
            self.send(raw, via_addr or source)


def _normalise(addr: Addr) -> Addr:
    host = addr[0]
    if host.startswith("["):
        host = host[1:-1]
    return host, addr[1]


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 address or a (possibly bracketed) IPv6 address."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
