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
from sipd.sip.errors import BadRequest, SipParseError
from sipd.sip.message import Request, Response, make_response, parse_message
from sipd.sip.via import response_address
from sipd.transport.ratelimit import RateLimitedLog

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


def error_response_bytes(data: bytes, error: SipParseError) -> tuple[bytes, Addr | None] | None:
    """Salvage enough of a bad request to answer it, or None.

    Reads the header lines leniently (no validation beyond what a response
    needs), builds the response, and parses it again: only a response that
    itself parses is ever sent, so a broken request cannot make us emit a
    broken reply. Returns the bytes and the Via-derived address (None means
    "reply to the source").
    """
    try:
        text = data.decode("utf-8", "replace")
        head = text.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
        lines = head.replace("\r\n", "\n").split("\n")
        if not lines or lines[0].startswith("SIP/"):
            return None  # a response: never answer one
        wanted = {
            "via": "Via",
            "v": "Via",
            "from": "From",
            "f": "From",
            "to": "To",
            "t": "To",
            "call-id": "Call-ID",
            "i": "Call-ID",
            "cseq": "CSeq",
        }
        parts = [f"SIP/2.0 {error.status} {error.reason or 'Bad Request'}"]
        seen: set[str] = set()
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            canon = wanted.get(name.strip().lower())
            if colon and canon and (canon == "Via" or canon not in seen):
                seen.add(canon)
                parts.append(f"{canon}: {value.strip()}")
        if not {"Via", "From", "To", "Call-ID", "CSeq"} <= seen:
            return None
        raw = ("\r\n".join(parts) + "\r\nContent-Length: 0\r\n\r\n").encode("utf-8")
        response = parse_message(raw)
        if not isinstance(response, Response):
            return None
        via = response.top_via
        try:
            return raw, response_address(via) if via.rport is not True else None
        except SipParseError:
            return raw, None  # a broken rport: answer where the request came from
    except (SipParseError, ValueError, UnicodeError):
        return None


class SipDatagramProtocol(DatagramProtocol):
    """A UDP socket carrying SIP for one UA or one daemon."""

    def __init__(
        self,
        clock: IReactorTime,
        metrics: Metrics | None = None,
        max_datagram: int = 65507,
    ) -> None:
        self._handler: MessageHandler | None = None
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
        """Send one datagram; OSError propagates to the transaction layer."""
        if self.transport is None:
            raise OSError("SIP transport is not listening")
        self.transport.write(data, _normalise(addr))
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
        salvaged = error_response_bytes(data, exc)
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
