"""What every part of the dialog adapter shares.

:class:`DialogCore` holds the adapter's plumbing: the transaction layer and
the event sink it is attached to, our addresses (Via, Contact, local URI),
the table of legs, sending and resolving, the single place responses are
built, in-dialog requests with digest retries, and the retransmission of a
2xx until its ACK. :mod:`sipd.session.in_dialog` and
:mod:`sipd.session.dialog_adapter` build on it; it imports neither.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterable
from functools import partial
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from sipd.config import TRANSPORTS, SipdConfig
from sipd.dns.records import Transport
from sipd.dns.resolver import Rfc3263Resolver
from sipd.errors import CallFailed
from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.send_errors import SEND_ERRORS, is_transient
from sipd.session.addressing import ip_address_of
from sipd.session.call_leg import CallLeg
from sipd.session.events import AckTimeout, CallEvent
from sipd.session.request_checks import SUPPORTED_OPTIONS
from sipd.session.target_set import TargetSet
from sipd.sip.address import NameAddr
from sipd.sip.auth import DigestClient
from sipd.sip.dialog import Dialog
from sipd.sip.errors import SipParseError
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response, make_response
from sipd.sip.transaction import (
    Addr,
    Flow,
    Route,
    ServerTransaction,
    TransactionLayer,
    new_branch,
    transport_of,
)
from sipd.sip.uri import Uri
from sipd.transport.ratelimit import RateLimitedLog

__all__ = ["ALLOW", "ALLOWED_METHODS", "DialogCore", "DialogEventSink", "new_tag"]

_log = Logger()

#: Methods this UA implements, sent in Allow.
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "REFER", "NOTIFY")
#: Option tags we support (Replaces: RFC 3891; session timers: RFC 4028).
SUPPORTED = ", ".join(sorted(SUPPORTED_OPTIONS))
#: The Allow header value.
ALLOW = ", ".join(ALLOWED_METHODS)


def new_tag() -> str:
    """A To tag for a response that creates no dialog (errors, OPTIONS)."""
    return secrets.token_hex(4)


class DialogEventSink(Protocol):
    """Where the adapter delivers what it learns (the coordinator)."""

    def new_invite(self, leg: CallLeg, request: Request, source: Addr) -> None:
        """An INVITE outside any dialog: a new call offered to us."""

    def dialog_event(self, leg: CallLeg, event: CallEvent) -> bool:
        """Deliver ``event`` to ``leg``'s session; False if no session took it."""

    def invite_cancelled(self, leg: CallLeg) -> None:
        """A CANCEL for an INVITE no session owns yet (the handler is still deciding).

        The adapter has answered the INVITE 487 already; the sink drops its
        pending state and releases the leg.
        """


class DialogCore:
    """Plumbing shared by the INVITE, in-dialog and routing parts of the adapter."""

    def __init__(
        self,
        config: SipdConfig,
        clock: IReactorTime,
        send: Callable[[bytes, Addr], None],
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.clock = clock
        self._send = send
        self.metrics = metrics
        self.layer: TransactionLayer | None = None
        self.sink: DialogEventSink | None = None
        self.local_port = config.port
        #: Every live leg by its key, ``Call-ID;local-tag``.
        self.legs: dict[str, CallLeg] = {}
        #: Credentials for requests challenged with 401/407 (set by register()).
        self.auth: DigestClient | None = None
        #: Send failures are remote input (a peer's bad address): bounded logging.
        self._send_warnings = RateLimitedLog(_log, clock)
        #: Locates host names (RFC 3263); set by the coordinator. Without one a
        #: name is sent to as it is, which fails like any unusable address.
        self.resolver: Rfc3263Resolver | None = None
        #: The port each transport listens on (the coordinator's Transports.port_for).
        self.port_for: Callable[[str], int | None] | None = None

    # -- plumbing ---------------------------------------------------------------
    def attach(self, layer: TransactionLayer, sink: DialogEventSink, local_port: int) -> None:
        """Connect to the transaction layer and the coordinator (after binding)."""
        self.layer = layer
        self.sink = sink
        self.local_port = local_port
        # Each request's Via and Contact name the transport it really takes.
        layer.retransport = self._retransport

    @property
    def _layer(self) -> TransactionLayer:
        assert self.layer is not None, "DialogAdapter used before attach()"
        return self.layer

    @property
    def _sink(self) -> DialogEventSink:
        assert self.sink is not None, "DialogAdapter used before attach()"
        return self.sink

    def _emit(self, leg: CallLeg, event: CallEvent) -> bool:
        """Hand ``event`` to ``leg``'s session; False when the leg is released or unowned."""
        if leg.ended or self.sink is None:
            return False
        return self.sink.dialog_event(leg, event)

    def _find_leg(self, call_id: str, local_tag: str | None) -> CallLeg | None:
        if local_tag is None:
            return None
        return self.legs.get(f"{call_id};{local_tag}")

    # -- our addresses -------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.config.contact_host

    @property
    def hostport(self) -> str:
        """``host:port`` for our Via and Contact."""
        return self._hostport

    @property
    def _hostport(self) -> str:
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.advertised_port}"

    @property
    def advertised_port(self) -> int:
        """The port in our Contact and Via: the bound one unless NAT says otherwise."""
        return self.config.advertised_port or self.local_port

    def local_uri(self, user: str | None = None) -> Uri:
        """Our own URI: ``sip:<name>@host:port``."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        uri = Uri(scheme="sip", host=host, user=user or self.config.name, port=self.advertised_port)
        transport = self.config.transport
        # Requests to us come back over the transport we speak (RFC 3261 §19.1.1).
        return uri if transport == "udp" else uri.with_param("transport", transport)

    @property
    def contact(self) -> str:
        """The Contact header value for our requests and responses."""
        return f"<{self.local_uri()}>"

    def resolve(self, uri: Uri, default: str | None = None) -> Addr:
        """Where to send a request for ``uri``: its maddr or host, port and transport.

        An IP literal (or ``localhost``) is an address at once: a plain
        tuple for default UDP, a :class:`~sipd.sip.transaction.Flow` when
        the transport is TCP, TLS or named by the URI (:meth:`transport_for`).
        A host name gives a :class:`~sipd.session.target_set.TargetSet` that
        locates it by RFC 3263 without blocking; the transaction layer waits
        for it and fails over between its targets. Raises
        :class:`~sipd.errors.CallFailed` for what looks like an IP address
        but is none, or a transport sipd does not speak.
        """
        host = uri.param("maddr") or uri.host
        transport = self.transport_for(uri, default)
        address = ip_address_of(host)
        if address is None:
            return self._route(uri)
        port = uri.port or (5061 if transport == "tls" else 5060)
        return self._over(uri, (address, port), transport)

    def _route(self, uri: Uri) -> Addr:
        resolver = self.resolver
        if resolver is None:
            return (uri.param("maddr") or uri.host, uri.default_port)
        return TargetSet(uri, resolver, supported=self.supported_transports(uri))

    def supported_transports(self, uri: Uri) -> tuple[Transport, ...]:
        """What RFC 3263 may pick for ``uri``: our transport first, TLS only with settings."""
        if uri.scheme == "sips":
            return (Transport.TLS,)
        order = [self.config.transport, "udp", "tcp"]
        if self.config.tls is not None:
            order.append("tls")
        return tuple(Transport(t) for t in dict.fromkeys(order))

    def _over(self, uri: Uri, addr: Addr, transport: str) -> Addr:
        """``addr`` as ``transport`` carries it (see :meth:`resolve`)."""
        if transport == "udp" and uri.param("transport") is None:
            return addr  # default UDP: §18.1.1 may still move a large request to TCP
        return Flow(addr[0], addr[1], transport)

    def transport_for(self, uri: Uri, default: str | None = None) -> str:
        """The transport a request to ``uri`` takes when its host is an address.

        ``sips:`` means TLS (RFC 3261 §26.2.1), a ``;transport=`` parameter
        names it, and otherwise ``default`` (an in-dialog request: the transport
        the dialog was set up over) or the UA's configured transport is used. A
        host name leaves the choice to RFC 3263 (NAPTR, SRV), within these.
        """
        if uri.scheme == "sips":
            return "tls"
        param = uri.param("transport")
        if param is None:
            return default or self.config.transport
        transport = param.lower()
        if transport not in TRANSPORTS:
            raise CallFailed(
                f"cannot send to {uri}: transport={param} is not supported; use udp, tcp or tls"
            )
        return transport

    def _next_hop_addr(self, dialog: Dialog) -> Addr:
        """Where an in-dialog request goes: the first route, else the remote target.

        Its transport follows that URI (a peer's Contact with ``;transport=tcp``
        means TCP) and a host name is located like any other (RFC 3263, first
        target, failing over). Never raises: the peer wrote this address, and
        one that is unusable (``999.999.999.999``) is returned as it is, so
        sending to it fails like any unusable address, through the
        transport-error path that ends that one request (a BYE then
        completes with 503 at once).
        """
        hop = dialog.next_hop()
        try:
            return self.resolve(hop, default=dialog.transport)
        except CallFailed:
            return (hop.param("maddr") or hop.host, hop.default_port)

    def _port_of(self, transport: str) -> int:
        """Our port for ``transport``: the advertised one for the UA's own transport."""
        if transport != self.config.transport and self.port_for is not None:
            port = self.port_for(transport)
            if port is not None:
                return port
        return self.advertised_port

    def contact_for(self, transport: str, *, secure: bool = False) -> str:
        """Our Contact for a request sent over ``transport`` (``secure``: to a sips URI).

        A sips request gets a ``sips:`` Contact (RFC 3261 §8.1.1.8; RFC 5630
        rather than ``transport=tls``); otherwise the transport is a parameter
        unless it is UDP.
        """
        if transport == self.config.transport and not secure:
            return self.contact
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme = "sips" if secure else "sip"
        uri = Uri(scheme=scheme, host=host, user=self.config.name, port=self._port_of(transport))
        if not secure and transport != "udp":
            uri = uri.with_param("transport", transport)
        return f"<{uri}>"

    def _retransport(self, request: Request, transport: str, contact: bool) -> Request:
        """``request`` as sent over ``transport``: its top Via and (if ``contact``) our Contact.

        The transaction layer calls this when a request's transport is not the
        one its Via names: a per-call ``;transport=``/``sips:``, what RFC 3263
        picked, or TCP for a request too large for UDP (RFC 3261 §18.1.1,
        where only the Via changes and the dialog keeps its Contact).
        """
        via = request.top_via
        sent = dataclasses.replace(via, transport=transport.upper(), port=self._port_of(transport))
        headers = request.headers.copy()
        headers.pop_first_value("Via")
        headers.prepend("Via", str(sent))
        mine = self.contact
        if contact and mine in headers.get_all("Contact"):
            # Only our own Contact changes (a REGISTER may carry an old one with expires=0).
            ours = self.contact_for(transport, secure=request.uri.scheme == "sips")
            headers = Headers(
                [(n, ours if n == "Contact" and v == mine else v) for n, v in headers]
            )
        return Request(request.method, request.uri, headers, request.body)

    def new_via(self) -> str:
        """A top Via for a new request of ours: our transport, host:port, a fresh branch."""
        token = self.config.transport.upper()
        return f"SIP/2.0/{token} {self._hostport};branch={new_branch()};rport"

    def _common_headers(self) -> list[tuple[str, str]]:
        """Allow, Supported and User-Agent: what our INVITEs and their 2xx advertise."""
        return [
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
            ("User-Agent", self.config.user_agent),
        ]

    def _add_common(self, h: Headers) -> None:
        for name, value in self._common_headers():
            h.add(name, value)

    # -- sending -------------------------------------------------------------------
    def _send_raw(self, data: bytes, dest: Addr) -> Exception | None:
        """Send bytes outside any transaction (ACK for a 2xx, 2xx retransmissions).

        Returns what the send raised (logged at a bounded rate), None once sent.
        """
        try:
            self._send(self._ack_via(data, dest), dest)
        except SEND_ERRORS as exc:
            self._send_warnings.warn("could not send to {dest}: {error}", dest=dest, error=exc)
            return exc.with_traceback(None)  # no cycle through this frame
        return None

    def _ack_via(self, data: bytes, dest: Addr) -> bytes:
        """An ACK for a 2xx whose Via names our transport, as ``dest``'s transport carries it."""
        if isinstance(dest, Route):
            dest = dest.target or dest
        transport = transport_of(dest)
        if transport == self.config.transport or not data.startswith(b"ACK "):
            return data
        ours = f"Via: SIP/2.0/{self.config.transport.upper()} ".encode()
        wanted = f"Via: SIP/2.0/{transport.upper()} ".encode()
        return data.replace(ours, wanted, 1)

    def _response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Every response the adapter sends is built here (RFC 3261 §8.2.6).

        ``to_tag`` is added only when the request's To has no tag; ``headers``
        follow the copied ones (and Content-Type) in order.
        """
        response = make_response(
            request, status, reason, to_tag=to_tag, body=body, content_type=content_type
        )
        for name, value in headers:
            response.headers.add(name, value)
        return response

    def _respond(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Answer ``request`` on ``txn``; returns the response sent."""
        response = self._response(
            request,
            status,
            reason,
            to_tag=to_tag,
            headers=headers,
            body=body,
            content_type=content_type,
        )
        txn.respond(response)
        return response

    def _contacts_or_400(self, request: Request, txn: ServerTransaction) -> list[NameAddr] | None:
        """The Contact addresses, or None after answering 400 naming the bad Contact.

        Answered here rather than raised: a remote's malformed Contact is
        not an internal failure worth a logged traceback per datagram.
        """
        try:
            return request.contacts
        except SipParseError as exc:
            reason = f"Bad Contact header: {exc.reason}"
            self._respond(txn, request, 400, reason, to_tag=new_tag())
            return None

    # -- in-dialog requests we send ------------------------------------------------
    def _send_in_dialog(
        self,
        dialog: Dialog,
        request: Request,
        on_response: Callable[[Request, Response], None],
        on_failure: Callable[[int, str], None],
    ) -> None:
        """Send an in-dialog request; 401/407 are answered with our credentials.

        ``on_response`` sees every other non-1xx response (with the request it
        answers, which may be the authorised retry); ``on_failure`` a timeout
        (408) or a transport error (503).
        """
        _InDialogSender(self, dialog, on_response, on_failure).send(request)

    def _authorized_retry(self, request: Request, response: Response) -> Request | None:
        """The request again with credentials for a 401/407, or None to give up."""
        if self.auth is None or response.status not in (401, 407):
            return None
        retry = self.auth.authorize(request, response, branch=new_branch())
        if retry is not None:
            self.metrics.inc("sipd_sip_auth_retries_total", method=request.method)
        return retry

    # -- our 2xx to an INVITE, until its ACK (§13.3.1.4) ----------------------------
    def _start_ok(self, leg: CallLeg, data: bytes, dest: Addr) -> None:
        """Retransmit the 2xx ``data`` (T1 doubling up to T2) until the ACK or 64*T1.

        The transaction layer hands a 2xx to the TU (RFC 6026), so the TU
        keeps it alive; without an ACK by Timer B the session gets ``AckTimeout``.
        """
        self._stop_ok(leg)
        leg.ok_bytes = data
        leg.ok_dest = dest
        timers = self._layer.timers
        leg.ok_interval = timers.t1
        leg.ok_timer = self.clock.callLater(leg.ok_interval, self._retransmit_ok, leg)
        leg.ok_deadline = self.clock.callLater(timers.b, self._ok_timeout, leg)

    def _retransmit_ok(self, leg: CallLeg) -> None:
        leg.ok_timer = None
        dest = leg.ok_dest or (leg.server_txn.dest if leg.server_txn is not None else None)
        if leg.ok_bytes is None or dest is None:
            return
        self.metrics.inc("sipd_sip_2xx_retransmissions_total")
        error = self._send_raw(leg.ok_bytes, dest)
        if error is not None and not is_transient(error):
            # The address cannot be sent to (the 2xx to a re-INVITE whose Via
            # is unusable, say): no ACK can come, so the session learns at once.
            self._stop_ok(leg)
            self._emit(leg, AckTimeout())
            return
        leg.ok_interval = min(leg.ok_interval * 2, self._layer.timers.t2)
        leg.ok_timer = self.clock.callLater(leg.ok_interval, self._retransmit_ok, leg)

    def _stop_ok(self, leg: CallLeg) -> None:
        leg.ok_bytes = None
        for timer in (leg.ok_timer, leg.ok_deadline):
            if timer is not None and timer.active():
                timer.cancel()
        leg.ok_timer = leg.ok_deadline = None

    def _ok_timeout(self, leg: CallLeg) -> None:
        leg.ok_deadline = None
        self._stop_ok(leg)
        self._emit(leg, AckTimeout())


class _InDialogSender:
    """One in-dialog request of ours and its authorised retry (see ``_send_in_dialog``).

    An object rather than two closures that call each other: such closures
    form a reference cycle that outlives the transaction, which would keep
    the dialog and its leg alive until a full garbage collection.
    """

    __slots__ = ("_core", "_dest", "_dialog", "_on_failure", "_on_response")

    def __init__(
        self,
        core: DialogCore,
        dialog: Dialog,
        on_response: Callable[[Request, Response], None],
        on_failure: Callable[[int, str], None],
    ) -> None:
        self._core = core
        self._dialog = dialog
        self._dest = core._next_hop_addr(dialog)
        self._on_response = on_response
        self._on_failure = on_failure

    def send(self, request: Request) -> None:
        dialog = self._dialog
        # The retry carries a new CSeq; later requests must go above it.
        dialog.local_seq = max(dialog.local_seq, request.cseq.number)
        layer = self._core._layer
        layer.send_request(
            request,
            self._dest,
            partial(self._response, request),
            self._timed_out,
            self._transport_failed,
            # A re-INVITE asks no human: a peer that sends a provisional
            # and then nothing must not hold the transaction for ever.
            proceeding_limit=layer.timers.b if request.method == "INVITE" else None,
        )

    def _response(self, sent: Request, response: Response) -> None:
        if response.status < 200:
            return
        retry = self._core._authorized_retry(sent, response)
        if retry is not None:
            self.send(retry)
        else:
            self._on_response(sent, response)

    def _timed_out(self) -> None:
        self._on_failure(408, "Request Timeout")

    def _transport_failed(self, error: Exception) -> None:
        self._on_failure(503, f"Transport Error: {error}")
