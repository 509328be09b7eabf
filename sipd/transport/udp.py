"""SIP over UDP: the one place where datagrams meet the sans-I/O core.

:class:`SipDatagramProtocol` drops keep-alives and hands every other
datagram to its :class:`~sipd.transport.receive.Receiver`, which parses it,
stamps ``received`` and ``rport`` on requests (RFC 3261 §18.2.1, RFC 3581
§4) and hands the message to the transaction layer, exactly as TCP and TLS
do with a framed message. Nothing a remote party sends may raise into the
reactor: a request that does not parse gets the error response its
:class:`~sipd.sip.errors.SipParseError` names, when one can be formed (sent
to the packet's source); everything else is dropped, counted and logged at
a bounded rate. ``stamp_received`` and ``check_headers`` live in
:mod:`sipd.transport.receive` and are re-exported here.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.send_errors import SEND_ERRORS, send_error
from sipd.sip.errors import SipParseError
from sipd.transport.ratelimit import RateLimitedLog
from sipd.transport.receive import (
    Addr,
    MessageHandler,
    Receiver,
    Screen,
    check_headers,
    stamp_received,
)
from sipd.transport.salvage import salvage_response

__all__ = [
    "Addr",
    "SipDatagramProtocol",
    "check_headers",
    "error_response_bytes",
    "stamp_received",
]

_log = Logger()


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
        self.metrics = metrics or Metrics()
        self._bad_input = RateLimitedLog(_log, clock)
        #: Parses, screens, checks and hands up each datagram (shared with TCP/TLS).
        self.receiver = Receiver(self.metrics, self._bad_input, _log)
        self._max_datagram = max_datagram

    @property
    def screen(self) -> Screen | None:
        """Sees each parsed message first; True: answered or absorbed there.

        Overload control's stateless 503 (:mod:`sipd.session.overload`).
        """
        return self.receiver.screen

    @screen.setter
    def screen(self, screen: Screen | None) -> None:
        self.receiver.screen = screen

    def set_handler(self, handler: MessageHandler) -> None:
        """Route parsed messages to ``handler`` (the transaction layer's receive)."""
        self.receiver.handler = handler

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
        tap = self.receiver.tap
        if tap is not None:
            tap(True, data, addr, None)
        # Counted from the start line's bytes: no parsing on the way out.
        if data.startswith(b"SIP/2.0 "):
            self.metrics.inc(
                "sipd_sip_responses_sent_total", status=data[8:11].decode("ascii", "replace")
            )
        else:
            method = data[: data.find(b" ", 0, 20)].decode("ascii", "replace")
            self.metrics.inc("sipd_sip_requests_sent_total", method=method)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 4 or data.strip(b"\r\n\x00 ") == b"":
            return  # keep-alive (RFC 5626 CRLF) or empty datagram
        self.receiver.deliver(data, (addr[0], addr[1]), self.send)


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
