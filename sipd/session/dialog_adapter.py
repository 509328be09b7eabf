"""Call signalling between the transaction layer and the sessions.

The :class:`DialogAdapter` is the transaction user (RFC 3261 §17): it turns
session actions (send the INVITE, answer, cancel, hang up) into requests and
responses, owns the INVITE dialogs (§12–§15), and turns what arrives into
named events for the session's state machine. It keeps the RFC's mechanics
to itself — the ACK for a 2xx and its retransmissions, the 2xx
retransmission until the ACK, CANCEL waiting for a provisional, 481 for
requests that match no dialog, 482 for merged requests, OPTIONS, 405/501 —
so the state table only sees call-level events.

Each INVITE usage is a :class:`CallLeg` with a string key
(``Call-ID;local-tag``), the dialog id the :class:`SessionRegistry` maps to
a session.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from sipd.config import SipdConfig
from sipd.errors import CallFailed
from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.sip.address import NameAddr
from sipd.sip.auth import DigestClient
from sipd.sip.dialog import Dialog, DialogRole, DialogState
from sipd.sip.errors import BadRequest, SipParseError
from sipd.sip.grammar import get_param, parse_params
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response, make_response
from sipd.sip.transaction import (
    Addr,
    ClientTransaction,
    ServerState,
    ServerTransaction,
    TransactionLayer,
    make_cancel,
    new_branch,
)
from sipd.sip.uri import Uri

if TYPE_CHECKING:
    from sipd.session.registrar import Registrar

__all__ = [
    "ALLOWED_METHODS",
    "CallLeg",
    "DialogAdapter",
    "DialogEventSink",
]

_log = Logger()

#: Methods this UA implements, sent in Allow.
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "REFER", "NOTIFY")
#: Methods handled only inside a dialog (outside one they get 405).
_IN_DIALOG = frozenset({"BYE", "INVITE", "UPDATE", "REFER", "NOTIFY"})
#: Methods we know but do not accept (405 with Allow); anything else gets 501.
_KNOWN_METHODS = frozenset(
    {
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)
_ALLOW = ", ".join(ALLOWED_METHODS)
_ACK_CACHE_SIZE = 4096


class DialogEventSink(Protocol):
    """Where the adapter delivers what it learns (the coordinator)."""

    def new_invite(self, leg: CallLeg, request: Request, source: Addr) -> None:
        """An INVITE outside any dialog: a new call offered to us."""

    def dialog_event(self, leg: CallLeg, event: str, **data: object) -> bool:
        """Deliver an event for ``leg``'s session; False if no session took it."""


class CallLeg:
    """One INVITE usage: the transactions, the dialog and their timers."""

    __slots__ = (
        "ack_bytes",
        "ack_dest",
        "call_id",
        "cancel_requested",
        "cancel_sent",
        "client_txn",
        "dest",
        "dialog",
        "ended",
        "final_status",
        "invite",
        "key",
        "local_tag",
        "ok_bytes",
        "ok_deadline",
        "ok_dest",
        "ok_interval",
        "ok_timer",
        "provisional",
        "reinvite_pending",
        "replaces",
        "role",
        "server_txn",
        "source",
    )

    def __init__(self, role: DialogRole, call_id: str, local_tag: str, invite: Request) -> None:
        self.role = role
        self.call_id = call_id
        self.local_tag = local_tag
        self.key = f"{call_id};{local_tag}"
        self.invite = invite
        self.dest: Addr = ("", 0)
        self.source: Addr = ("", 0)
        self.client_txn: ClientTransaction | None = None
        self.server_txn: ServerTransaction | None = None
        self.dialog: Dialog | None = None
        self.ack_bytes: bytes | None = None
        self.ack_dest: Addr = ("", 0)
        self.ok_bytes: bytes | None = None
        self.ok_timer: IDelayedCall | None = None
        self.ok_deadline: IDelayedCall | None = None
        self.ok_interval = 0.0
        self.ok_dest: Addr | None = None
        self.reinvite_pending = False
        self.provisional = False
        self.cancel_requested = False
        self.cancel_sent = False
        self.final_status: int | None = None
        self.ended = False
        #: The confirmed leg a new INVITE's Replaces header names (RFC 3891).
        self.replaces: CallLeg | None = None

    def __repr__(self) -> str:
        return f"<CallLeg {self.role.value} {self.key}>"

    @property
    def remote_tag(self) -> str | None:
        """The peer's tag, once a dialog exists."""
        return self.dialog.id.remote_tag if self.dialog else None


def resolve_host(host: str) -> str:
    """An IP address for ``host`` (IP literals as is; names via the system resolver).

    Name lookup blocks; sipd is meant for IP-addressed peers and proxies, and
    RFC 3263 (NAPTR/SRV) is not implemented.
    """
    bare = host[1:-1] if host.startswith("[") else host
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if bare == "localhost":
        return "127.0.0.1"
    try:
        return socket.gethostbyname(bare)
    except OSError as exc:
        raise CallFailed(f"cannot resolve host {host!r}: {exc}; use an IP address") from exc


class DialogAdapter:
    """The transaction user for INVITE dialogs, BYE, CANCEL and OPTIONS."""

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
        self.legs: dict[str, CallLeg] = {}
        # INVITE server transaction -> its leg, so a CANCEL finds it in O(1).
        self._uas_legs: dict[ServerTransaction, CallLeg] = {}
        # Merged-request detection (§8.2.2.2): (Call-ID, From tag, CSeq) -> branch.
        self._uas_pending: dict[tuple[str, str, int], str] = {}
        # ACKs for 2xx we have sent, kept after the leg ends so a 2xx
        # retransmitted because our ACK was lost still gets one. Bounded.
        self._ack_cache: OrderedDict[tuple[str, str, str], tuple[bytes, Addr]] = OrderedDict()
        self.accepting = True
        #: Credentials for INVITE/BYE challenged with 401/407 (set by register()).
        self.auth: DigestClient | None = None
        #: Requests outside dialogs go here first (RFC 3261 §8.1.2), when set.
        self.outbound_proxy: Uri | None = None
        #: The daemon's registrar: answers REGISTER (405 without one).
        self.registrar: Registrar | None = None
        #: Challenge new INVITEs with the registrar's digest auth.
        self.authenticate_invites = False

    # -- plumbing ---------------------------------------------------------------
    def attach(self, layer: TransactionLayer, sink: DialogEventSink, local_port: int) -> None:
        """Connect to the transaction layer and the coordinator (after binding)."""
        self.layer = layer
        self.sink = sink
        self.local_port = local_port

    @property
    def _layer(self) -> TransactionLayer:
        assert self.layer is not None, "DialogAdapter used before attach()"
        return self.layer

    @property
    def host(self) -> str:
        return self.config.contact_host

    @property
    def hostport(self) -> str:
        """``host:port`` for our Via and Contact."""
        return self._hostport

    def resolve(self, uri: Uri) -> Addr:
        """Where to send a request for ``uri``: its maddr or host, and port."""
        host = uri.param("maddr") or uri.host
        return resolve_host(host), uri.default_port

    @property
    def _hostport(self) -> str:
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.advertised_port}"

    def local_uri(self, user: str | None = None) -> Uri:
        """Our own URI: ``sip:<name>@host:port``."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return Uri(
            scheme="sip", host=host, user=user or self.config.name, port=self.advertised_port
        )

    @property
    def advertised_port(self) -> int:
        """The port in our Contact and Via: the bound one unless NAT says otherwise."""
        return self.config.advertised_port or self.local_port

    @property
    def contact(self) -> str:
        """The Contact header value for our requests and responses."""
        return f"<{self.local_uri()}>"

    def _via(self) -> str:
        return f"SIP/2.0/UDP {self._hostport};branch={new_branch()};rport"

    def _emit(self, leg: CallLeg, event: str, **data: object) -> bool:
        if leg.ended or self.sink is None:
            return False
        return self.sink.dialog_event(leg, event, **data)

    def _add_common(self, h: Headers) -> None:
        h.add("Allow", _ALLOW)
        h.add("Supported", "replaces")
        h.add("User-Agent", self.config.user_agent)

    # -- UAC -----------------------------------------------------------------------
    def invite(
        self,
        target: Uri,
        sdp: bytes,
        *,
        from_addr: NameAddr | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
        proxy: Uri | None = None,
    ) -> CallLeg:
        """Send an INVITE with ``sdp`` to ``target``; returns the new leg.

        With a ``proxy`` (or a configured outbound proxy) the INVITE goes
        there with a loose-routing Route header; otherwise to the target.
        """
        proxy = proxy or self.outbound_proxy
        dest = self.resolve(proxy if proxy is not None else target)
        call_id = f"{secrets.token_hex(10)}@{self.host}"
        local_tag = secrets.token_hex(6)
        local = from_addr or NameAddr(self.local_uri())
        local = local.with_tag(local_tag)
        h = Headers()
        h.add("Via", self._via())
        h.add("Max-Forwards", "70")
        h.add("From", str(local))
        h.add("To", str(NameAddr(target.replace(params=(), headers=()))))
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{secrets.randbelow(2**16) + 1} INVITE")
        h.add("Contact", self.contact)
        if proxy is not None:
            h.add("Route", f"<{proxy.replace(user=None).with_param('lr')}>")
        self._add_common(h)
        for name, value in extra_headers or ():
            h.add(name, value)
        h.add("Content-Type", "application/sdp")
        request = Request("INVITE", target.replace(headers=()), h, sdp)
        leg = CallLeg(DialogRole.UAC, call_id, local_tag, request)
        leg.dest = dest
        self.legs[leg.key] = leg
        self._send_invite(leg, request)
        return leg

    def _send_invite(self, leg: CallLeg, request: Request) -> None:
        leg.invite = request
        leg.client_txn = self._layer.send_request(
            request,
            leg.dest,
            lambda response: (
                self._invite_response(leg, response) if leg.invite is request else None
            ),
            lambda: self._invite_timeout(leg, 408, "Request Timeout"),
            lambda error: self._invite_timeout(leg, 503, f"Transport Error: {error}"),
        )

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
        dest = self._next_hop_addr(dialog)

        def response(sent: Request, r: Response) -> None:
            if r.status < 200:
                return
            retry = self._authorized_retry(sent, r)
            if retry is not None:
                send(retry)
            else:
                on_response(sent, r)

        def send(req: Request) -> None:
            dialog.local_seq = max(dialog.local_seq, req.cseq.number)
            self._layer.send_request(
                req,
                dest,
                lambda r: response(req, r),
                lambda: on_failure(408, "Request Timeout"),
                lambda e: on_failure(503, f"Transport Error: {e}"),
            )

        send(request)

    def _authorized_retry(self, request: Request, response: Response) -> Request | None:
        """The request again with credentials for a 401/407, or None to give up."""
        if self.auth is None or response.status not in (401, 407):
            return None
        retry = self.auth.authorize(request, response, branch=new_branch())
        if retry is not None:
            self.metrics.inc("sipd_sip_auth_retries_total", method=request.method)
        return retry

    def _invite_response(self, leg: CallLeg, response: Response) -> None:
        status = response.status
        if status < 200:
            if leg.final_status is not None:
                return
            # Any provisional, 100 Trying included, lets a pending CANCEL go (§9.1).
            leg.provisional = True
            if status == 100:
                if leg.cancel_requested and not leg.cancel_sent:
                    self._send_cancel(leg)
                return
            if response.to.tag and leg.dialog is None and response.contacts:
                leg.dialog = Dialog.from_uac(leg.invite, response, self.contact)
            if leg.cancel_requested and not leg.cancel_sent:
                self._send_cancel(leg)
            self._emit(leg, "Provisional", response=response)
            return
        if status < 300:
            self._invite_2xx(leg, response)
            return
        if leg.final_status is None:
            if not leg.cancel_requested:
                retry = self._authorized_retry(leg.invite, response)
                if retry is not None:
                    self._send_invite(leg, retry)
                    return
            leg.final_status = status
            self._emit(leg, "Rejected", response=response, status=status, reason=response.reason)

    def _invite_2xx(self, leg: CallLeg, response: Response) -> None:
        to_tag = response.to.tag or ""
        if leg.ack_bytes is not None:
            if leg.dialog is not None and to_tag == leg.dialog.id.remote_tag:
                self._resend_ack(leg)
            else:
                # A second 2xx from another fork: ACK it and end that dialog.
                self._ack_and_bye_fork(leg, response)
            return
        if leg.dialog is None or leg.dialog.id.remote_tag != to_tag:
            leg.dialog = Dialog.from_uac(leg.invite, response, self.contact)
        else:
            leg.dialog.update_from_uac_response(response)
        leg.dialog.state = DialogState.CONFIRMED
        ack = leg.dialog.create_request("ACK", self._via(), cseq=leg.invite.cseq.number)
        leg.ack_bytes = ack.to_bytes()
        leg.ack_dest = self._next_hop_addr(leg.dialog)
        self._ack_cache[(leg.call_id, leg.local_tag, to_tag)] = (leg.ack_bytes, leg.ack_dest)
        if len(self._ack_cache) > _ACK_CACHE_SIZE:
            self._ack_cache.popitem(last=False)
        leg.final_status = response.status
        if not self._emit(leg, "Answered", response=response):
            # Nobody wants this call any more: complete and end it (§15).
            self.send_ack(leg)
            self.bye(leg)

    def _ack_and_bye_fork(self, leg: CallLeg, response: Response) -> None:
        dialog = Dialog.from_uac(leg.invite, response, self.contact)
        ack = dialog.create_request("ACK", self._via(), cseq=leg.invite.cseq.number)
        dest = self._next_hop_addr(dialog)
        self._send_raw(ack.to_bytes(), dest)
        bye = dialog.create_request("BYE", self._via())
        self._layer.send_request(bye, dest, lambda r: None, lambda: None, lambda e: None)

    def _invite_timeout(self, leg: CallLeg, status: int, reason: str) -> None:
        if leg.final_status is None:
            leg.final_status = status
            self._emit(leg, "InviteTimeout", status=status, reason=reason)

    def _next_hop_addr(self, dialog: Dialog) -> Addr:
        hop = dialog.next_hop()
        maddr = hop.param("maddr")
        host = maddr or hop.host
        return resolve_host(host), hop.default_port

    def _send_raw(self, data: bytes, dest: Addr) -> None:
        try:
            self._send(data, dest)
        except OSError as exc:
            _log.warn("could not send to {dest}: {error}", dest=dest, error=exc)

    def send_ack(self, leg: CallLeg) -> None:
        """Send the ACK for the 2xx (built when the 2xx arrived)."""
        if leg.ack_bytes is not None:
            self._send_raw(leg.ack_bytes, leg.ack_dest)

    def _resend_ack(self, leg: CallLeg) -> None:
        self.metrics.inc("sipd_sip_2xx_retransmissions_total")
        self.send_ack(leg)

    def cancel(self, leg: CallLeg) -> None:
        """Cancel a pending outgoing INVITE (§9.1: only after a provisional)."""
        if leg.final_status is not None or leg.cancel_requested:
            return
        leg.cancel_requested = True
        if leg.provisional:
            self._send_cancel(leg)

    def _send_cancel(self, leg: CallLeg) -> None:
        leg.cancel_sent = True
        cancel = make_cancel(leg.invite)
        self._layer.send_request(cancel, leg.dest, lambda r: None, lambda: None, lambda e: None)

    def bye(self, leg: CallLeg) -> None:
        """Send BYE in the leg's dialog; ``ByeCompleted`` follows."""
        dialog = leg.dialog
        if dialog is None:
            self._emit(leg, "ByeCompleted", status=None)
            return
        request = dialog.create_request("BYE", self._via())
        h = request.headers
        h.add("User-Agent", self.config.user_agent)
        dialog.state = DialogState.TERMINATED

        def done(status: int | None) -> None:
            self._emit(leg, "ByeCompleted", status=status)

        self._send_in_dialog(
            dialog, request, lambda sent, r: done(r.status), lambda status, _: done(status)
        )

    # -- UAS -----------------------------------------------------------------------
    def ringing(self, leg: CallLeg, status: int = 180) -> None:
        """Send a provisional response with our tag."""
        txn = leg.server_txn
        if txn is None or txn.state is not ServerState.PROCEEDING:
            return
        response = make_response(leg.invite, status, to_tag=leg.local_tag)
        response.headers.add("Contact", self.contact)
        txn.respond(response)

    def answer(self, leg: CallLeg, sdp: bytes) -> None:
        """Send 200 OK with our SDP and retransmit it until the ACK (§13.3.1.4)."""
        txn = leg.server_txn
        if txn is None or txn.state is not ServerState.PROCEEDING:
            raise CallFailed(f"call {leg.call_id} can no longer be answered")
        response = make_response(
            leg.invite, 200, to_tag=leg.local_tag, body=sdp, content_type="application/sdp"
        )
        h = response.headers
        h.add("Contact", self.contact)
        for rr in leg.invite.headers.get_all("Record-Route"):
            h.add("Record-Route", rr)
        self._add_common(h)
        leg.dialog = Dialog.from_uas(leg.invite, leg.local_tag, self.contact, confirmed=True)
        leg.final_status = 200
        leg.ok_bytes = response.to_bytes()
        self._forget_pending(leg)
        txn.respond(response)
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
        self._send_raw(leg.ok_bytes, dest)
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
        self._emit(leg, "AckTimeout")

    def reject(
        self,
        leg: CallLeg,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer the INVITE with a final non-2xx status."""
        txn = leg.server_txn
        if txn is None or txn.state is not ServerState.PROCEEDING:
            return
        response = make_response(leg.invite, status, reason, to_tag=leg.local_tag)
        for name, value in headers or ():
            response.headers.add(name, value)
        leg.final_status = status
        self._forget_pending(leg)
        txn.respond(response)

    def _forget_pending(self, leg: CallLeg) -> None:
        try:
            key = (leg.call_id, leg.invite.from_.tag or "", leg.invite.cseq.number)
        except BadRequest:
            return
        self._uas_pending.pop(key, None)

    def release(self, leg: CallLeg) -> None:
        """Forget the leg: stop its timers; late messages get 481 or are absorbed."""
        leg.ended = True
        self._stop_ok(leg)
        self._forget_pending(leg)
        if self.legs.get(leg.key) is leg:
            del self.legs[leg.key]
        if leg.server_txn is not None:
            self._uas_legs.pop(leg.server_txn, None)

    # -- TransactionUser ---------------------------------------------------------
    def request_received(self, request: Request, source: Addr, txn: ServerTransaction) -> None:
        method = request.method
        if request.max_forwards == 0 and method != "OPTIONS":
            txn.respond(make_response(request, 483, to_tag=secrets.token_hex(4)))
            return
        to_tag = request.to.tag
        if method == "INVITE" and to_tag is None:
            self._new_invite(request, source, txn)
        elif method == "OPTIONS":
            txn.respond(self._options_response(request))
        elif method == "REGISTER" and self.registrar is not None:
            self.registrar.handle(request, source, txn)
        elif method in _IN_DIALOG and to_tag is not None:
            self._in_dialog(request, txn, to_tag)
        elif method == "BYE":
            txn.respond(make_response(request, 481))
        elif method in _KNOWN_METHODS:
            response = make_response(request, 405, to_tag=to_tag or secrets.token_hex(4))
            response.headers.add("Allow", _ALLOW)
            txn.respond(response)
        else:
            response = make_response(request, 501, to_tag=to_tag or secrets.token_hex(4))
            response.headers.add("Allow", _ALLOW)
            txn.respond(response)

    def _options_response(self, request: Request) -> Response:
        response = make_response(request, 200, to_tag=request.to.tag or secrets.token_hex(4))
        h = response.headers
        h.add("Allow", _ALLOW)
        h.add("Accept", "application/sdp")
        h.add("Supported", "replaces")
        h.add("Server", self.config.user_agent)
        if not self.accepting:
            response.status, response.reason = 503, "Service Unavailable"
        return response

    def _new_invite(self, request: Request, source: Addr, txn: ServerTransaction) -> None:
        from_tag = request.from_.tag or ""
        cseq = request.cseq.number
        branch = request.top_via.branch or ""
        merge_key = (request.call_id, from_tag, cseq)
        pending_branch = self._uas_pending.get(merge_key)
        if pending_branch is not None and pending_branch != branch:
            txn.respond(make_response(request, 482, to_tag=secrets.token_hex(4)))
            return
        if not self.accepting:
            response = make_response(request, 503, to_tag=secrets.token_hex(4))
            response.headers.add("Retry-After", "30")
            txn.respond(response)
            return
        registrar = self.registrar if self.authenticate_invites else None
        if registrar is not None and registrar.authenticate(request, txn) is None:
            return  # challenged (401); the caller retries with credentials
        contacts = self._contacts_or_400(request, txn)
        if contacts is None:
            return
        if not contacts:
            txn.respond(make_response(request, 400, "Missing Contact", to_tag=secrets.token_hex(4)))
            return
        replaced: CallLeg | None = None
        if "Replaces" in request.headers:
            replaced = self._replaced_leg(request, txn)
            if replaced is None:
                return
        leg = CallLeg(DialogRole.UAS, request.call_id, secrets.token_hex(6), request)
        leg.replaces = replaced
        leg.server_txn = txn
        self._uas_legs[txn] = leg
        leg.source = source
        self.legs[leg.key] = leg
        self._uas_pending[merge_key] = branch
        assert self.sink is not None
        self.sink.new_invite(leg, request, source)

    def _replaced_leg(self, request: Request, txn: ServerTransaction) -> CallLeg | None:
        """The confirmed leg the INVITE's Replaces header names, or None after
        answering the INVITE (RFC 3891 §3).

        ``Replaces: call-id;to-tag=X;from-tag=Y`` is written from our side:
        X is our tag, Y the peer's. No such confirmed dialog (early ones
        included, which are not replaced here): 481; one that has ended (BYE
        sent or received): 603; ``early-only`` naming a confirmed dialog: 486.
        """
        value = request.headers.get("Replaces") or ""
        call_id, _, rest = value.partition(";")
        try:
            params = parse_params(rest)
        except BadRequest:
            params = ()
        to_tag, from_tag = get_param(params, "to-tag"), get_param(params, "from-tag")
        status, reason = 0, ""
        if not call_id.strip() or not to_tag or not from_tag:
            status, reason = 400, "Bad Replaces Header"
        else:
            leg = self._find_leg(call_id.strip(), to_tag)
            dialog = leg.dialog if leg is not None else None
            if leg is None or dialog is None or dialog.id.remote_tag != from_tag:
                status = 481
            elif dialog.state is DialogState.TERMINATED or leg.ended:
                status = 603
            elif dialog.state is not DialogState.CONFIRMED:
                status = 481
            elif get_param(params, "early-only") is not None:
                status = 486
            else:
                return leg
        txn.respond(make_response(request, status, reason or None, to_tag=secrets.token_hex(4)))
        return None

    def _contacts_or_400(self, request: Request, txn: ServerTransaction) -> list[NameAddr] | None:
        """The Contact addresses, or None after answering 400 naming the bad Contact.

        Answered here rather than raised: a remote's malformed Contact is
        not an internal failure worth a logged traceback per datagram.
        """
        try:
            return request.contacts
        except SipParseError as exc:
            reason = f"Bad Contact header: {exc.reason}"
            txn.respond(make_response(request, 400, reason, to_tag=secrets.token_hex(4)))
            return None

    def _find_leg(self, call_id: str, local_tag: str | None) -> CallLeg | None:
        if local_tag is None:
            return None
        return self.legs.get(f"{call_id};{local_tag}")

    def _in_dialog(self, request: Request, txn: ServerTransaction, to_tag: str | None) -> None:
        leg = self._find_leg(request.call_id, to_tag)
        from_tag = request.from_.tag
        if leg is None or leg.dialog is None or leg.dialog.id.remote_tag != from_tag:
            txn.respond(make_response(request, 481))
            return
        dialog = leg.dialog
        if not dialog.check_remote_cseq(request):
            txn.respond(make_response(request, 500, "CSeq Out Of Order"))
            return
        if request.method == "BYE":
            dialog.state = DialogState.TERMINATED
            self._stop_ok(leg)
            response = make_response(request, 200)
            response.headers.add("User-Agent", self.config.user_agent)
            txn.respond(response)
            self._emit(leg, "RemoteBye", request=request)
            return
        method = request.method
        if method == "NOTIFY":
            self._notify_received(leg, request, txn)
            return
        if method == "REFER":
            if not self._emit(leg, "ReferReceived", request=request, txn=txn):
                txn.respond(make_response(request, 481))
            return
        # re-INVITE or UPDATE: a target refresh; the session decides on the offer.
        contacts = self._contacts_or_400(request, txn)
        if contacts is None:
            return
        if contacts:
            dialog.remote_target = contacts[0].uri
        if method == "UPDATE" and not request.body:
            # A session-timer refresh without an offer: nothing changes.
            txn.respond(make_response(request, 200))
            return
        if not self._emit(leg, "RemoteReinvite", request=request, txn=txn):
            txn.respond(make_response(request, 481))

    def _notify_received(self, leg: CallLeg, request: Request, txn: ServerTransaction) -> None:
        """NOTIFY for our REFER (RFC 3515 §2.4.5): answer 200, pass the sipfrag status on."""
        event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != "refer":
            txn.respond(make_response(request, 489, "Bad Event"))
            return
        txn.respond(make_response(request, 200))
        status = _sipfrag_status(request.body)
        state = (request.headers.get("Subscription-State") or "").split(";", 1)[0].strip()
        self._emit(
            leg,
            "TransferProgress",
            status=status,
            terminated=state.lower() == "terminated",
            request=request,
        )

    def answer_reinvite(
        self,
        leg: CallLeg,
        txn: ServerTransaction,
        status: int,
        sdp: bytes,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer a re-INVITE or UPDATE (200 with our SDP, or an error status).

        A 2xx to a re-INVITE is retransmitted until its ACK, as for the
        initial INVITE (§13.3.1.4); UPDATE is a plain non-INVITE request.
        """
        request = txn.request
        if status >= 300:
            response = make_response(request, status)
            for name, value in headers or ():
                response.headers.add(name, value)
            txn.respond(response)
            return
        response = make_response(request, 200, body=sdp, content_type="application/sdp")
        response.headers.add("Contact", self.contact)
        self._add_common(response.headers)
        txn.respond(response)
        if request.method == "INVITE":
            self._stop_ok(leg)
            leg.ok_bytes = response.to_bytes()
            leg.ok_dest = txn.dest
            timers = self._layer.timers
            leg.ok_interval = timers.t1
            leg.ok_timer = self.clock.callLater(leg.ok_interval, self._retransmit_ok, leg)
            leg.ok_deadline = self.clock.callLater(timers.b, self._ok_timeout, leg)

    # -- mid-call requests we send ---------------------------------------------------
    def reinvite(self, leg: CallLeg, sdp: bytes) -> None:
        """Send a re-INVITE with a new offer; ``ReinviteAnswered`` / ``ReinviteFailed`` follow.

        A 491 (glare, §14.1) arrives as ``ReinviteGlare``; a 2xx is ACKed here
        (and again for each retransmission).
        """
        dialog = leg.dialog
        if dialog is None:
            self._emit(leg, "ReinviteFailed", status=481, reason="No Dialog")
            return
        request = dialog.create_request(
            "INVITE", self._via(), body=sdp, content_type="application/sdp"
        )
        self._add_common(request.headers)
        leg.reinvite_pending = True
        acked: list[bytes] = []

        def response(sent: Request, r: Response) -> None:
            if r.status < 300:
                # Each 2xx (retransmissions too) gets the same ACK (§13.2.2.4).
                if not acked:
                    ack = dialog.create_request("ACK", self._via(), cseq=sent.cseq.number)
                    acked.append(ack.to_bytes())
                    leg.reinvite_pending = False
                    self._send_raw(acked[0], self._next_hop_addr(dialog))
                    self._emit(leg, "ReinviteAnswered", response=r)
                else:
                    self._send_raw(acked[0], self._next_hop_addr(dialog))
                return
            leg.reinvite_pending = False
            event = "ReinviteGlare" if r.status == 491 else "ReinviteFailed"
            self._emit(leg, event, status=r.status, reason=r.reason, response=r)

        def failed(status: int, reason: str) -> None:
            leg.reinvite_pending = False
            self._emit(leg, "ReinviteFailed", status=status, reason=reason)

        self._send_in_dialog(dialog, request, response, failed)

    def refer(self, leg: CallLeg, target: str) -> None:
        """Send REFER (RFC 3515) asking the peer to call ``target``.

        ``ReferAccepted`` or ``ReferRejected`` follow, then ``TransferProgress``
        for each NOTIFY the peer sends.
        """
        dialog = leg.dialog
        if dialog is None:
            self._emit(leg, "ReferRejected", status=481, reason="No Dialog")
            return
        request = dialog.create_request("REFER", self._via())
        h = request.headers
        h.add("Refer-To", f"<{target}>")
        h.add("Referred-By", f"<{self.local_uri()}>")
        h.add("Contact", self.contact)
        self._add_common(h)

        def response(sent: Request, r: Response) -> None:
            if r.status < 300:
                self._emit(leg, "ReferAccepted", status=r.status)
            else:
                self._emit(leg, "ReferRejected", status=r.status, reason=r.reason)

        def rejected(status: int, reason: str) -> None:
            self._emit(leg, "ReferRejected", status=status, reason=reason)

        self._send_in_dialog(dialog, request, response, rejected)

    def notify_refer(self, leg: CallLeg, status: int, reason: str, *, final: bool) -> None:
        """Tell the transferor how the referred call is going (RFC 3515 §2.4.4)."""
        dialog = leg.dialog
        if dialog is None or leg.ended:
            return
        body = f"SIP/2.0 {status} {reason}\r\n".encode()
        request = dialog.create_request(
            "NOTIFY", self._via(), body=body, content_type="message/sipfrag;version=2.0"
        )
        h = request.headers
        h.add("Event", "refer")
        h.add(
            "Subscription-State",
            "terminated;reason=noresource" if final else "active;expires=60",
        )
        h.add("Contact", self.contact)
        self._layer.send_request(
            request, self._next_hop_addr(dialog), lambda r: None, lambda: None, lambda e: None
        )

    def ack_received(self, request: Request, source: Addr) -> None:
        leg = self._find_leg(request.call_id, request.to.tag)
        if leg is None:
            return
        if leg.ok_bytes is not None:
            self._stop_ok(leg)
            self._emit(leg, "AckReceived", request=request)

    def cancel_received(
        self,
        cancel: Request,
        source: Addr,
        cancel_txn: ServerTransaction,
        invite_txn: ServerTransaction | None,
    ) -> None:
        if invite_txn is None:
            cancel_txn.respond(make_response(cancel, 481))
            return
        cancel_txn.respond(make_response(cancel, 200, to_tag=cancel.to.tag or None))
        leg = self._uas_legs.get(invite_txn)
        if leg is None or leg.final_status is not None:
            return
        if not self._emit(leg, "RemoteCancel", request=cancel):
            # No session yet (the handler has not decided): end it here.
            self.reject(leg, 487)
            assert self.sink is not None
            self.sink.dialog_event(leg, "PendingCancelled")

    def stray_response_received(self, response: Response, source: Addr) -> None:
        if response.is_success and response.cseq.method == "INVITE":
            key = (response.call_id, response.from_.tag or "", response.to.tag or "")
            cached = self._ack_cache.get(key)
            if cached is not None:
                self._send_raw(*cached)

    def server_transaction_timeout(self, txn: ServerTransaction) -> None:
        self.metrics.inc("sipd_sip_transaction_timeouts_total", kind="server")

    def server_transport_error(self, txn: ServerTransaction, error: OSError) -> None:
        _log.warn("could not send response to {dest}: {error}", dest=txn.dest, error=error)

    def close(self) -> None:
        """Stop every leg's timers (the coordinator is shutting down)."""
        for leg in list(self.legs.values()):
            self.release(leg)
        self._uas_pending.clear()


def _sipfrag_status(body: bytes) -> int | None:
    """The status code of a ``message/sipfrag`` body such as ``SIP/2.0 200 OK``."""
    line = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    parts = line.split()
    if len(parts) >= 2 and parts[0].upper() == "SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return None
