"""Call signalling between the transaction layer and the sessions.

The :class:`DialogAdapter` is the transaction user (RFC 3261 §17): it turns
session actions (send the INVITE, answer, cancel, hang up) into requests and
responses, owns the INVITE dialogs (§12–§15), and turns what arrives into
typed events (:mod:`sipd.session.events`) for the session's state machine.
It keeps the RFC's mechanics to itself — the ACK for a 2xx and its
retransmissions, the 2xx retransmission until the ACK, CANCEL waiting for a
provisional, 481 for requests that match no dialog, 482 for merged requests,
OPTIONS, 405/501 — so the state table only sees call-level events, and the
session layer never builds a SIP message.

The adapter is split by responsibility:

* :mod:`sipd.session.call_leg`: :class:`CallLeg`, one INVITE usage with its
  :class:`~sipd.session.call_leg.LegState`, keyed ``Call-ID;local-tag`` (the
  dialog id the :class:`SessionRegistry` maps to a session);
* :mod:`sipd.session.dialog_core`: addresses, sending, building responses,
  in-dialog sending with digest retries, 2xx retransmission;
* :mod:`sipd.session.in_dialog`: BYE, re-INVITE/UPDATE, REFER and NOTIFY;
* this module: the initial INVITE as UAC and UAS, CANCEL, ACK, and the
  routing of every request the transaction layer hands up.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from sipd.config import SipdConfig
from sipd.errors import CallFailed
from sipd.logs import Logger
from sipd.metrics import Metrics
from sipd.session import events as ev
from sipd.session.call_leg import CallLeg, LegState, resolve_host
from sipd.session.dialog_core import ALLOW, ALLOWED_METHODS, SUPPORTED, DialogEventSink, new_tag
from sipd.session.in_dialog import InDialogRequests
from sipd.session.overload import OverloadControl
from sipd.session.request_checks import refusal
from sipd.session.session_timer import interval_too_small, retry_for_422
from sipd.sip.address import NameAddr
from sipd.sip.dialog import Dialog, DialogRole, DialogState
from sipd.sip.errors import BadRequest
from sipd.sip.grammar import get_param, parse_params
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response
from sipd.sip.transaction import (
    Addr,
    ServerState,
    ServerTransaction,
    make_cancel,
    transport_of,
)
from sipd.sip.uri import Uri

if TYPE_CHECKING:
    from sipd.session.registrar import Registrar

__all__ = [
    "ALLOWED_METHODS",
    "CallLeg",
    "DialogAdapter",
    "DialogEventSink",
    "LegState",
    "resolve_host",
]

_log = Logger()

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
_ACK_CACHE_SIZE = 4096


class DialogAdapter(InDialogRequests):
    """The transaction user for INVITE dialogs, BYE, CANCEL, REFER, NOTIFY and OPTIONS."""

    def __init__(
        self,
        config: SipdConfig,
        clock: IReactorTime,
        send: Callable[[bytes, Addr], None],
        metrics: Metrics,
    ) -> None:
        super().__init__(config, clock, send, metrics)
        # INVITE server transaction -> its leg, so a CANCEL finds it in O(1).
        self._uas_legs: dict[ServerTransaction, CallLeg] = {}
        # Merged-request detection (§8.2.2.2): (Call-ID, From tag, CSeq) -> branch.
        self._uas_pending: dict[tuple[str, str, int], str] = {}
        # ACKs for 2xx we have sent, kept after the leg ends so a 2xx
        # retransmitted because our ACK was lost still gets one. Bounded.
        self._ack_cache: OrderedDict[tuple[str, str, str], tuple[bytes, Addr]] = OrderedDict()
        #: False while shutting down: new INVITEs get 503, OPTIONS says 503.
        self.accepting = True
        #: Requests outside dialogs go here first (RFC 3261 §8.1.2), when set.
        self.outbound_proxy: Uri | None = None
        #: The daemon's registrar: answers REGISTER (405 without one).
        self.registrar: Registrar | None = None
        #: Challenge new INVITEs with the registrar's digest auth.
        self.authenticate_invites = False
        #: Answers new INVITEs 503 while the UA falls behind (RFC 3261 §21.5.4).
        self.overload = OverloadControl.from_config(config, clock, metrics, send)
        self.overload.pending = self._uas_pending.__len__

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
        h.add("Via", self.new_via())
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
        """Start the INVITE client transaction (again, for a digest retry)."""
        leg.invite = request
        leg.client_txn = self._layer.send_request(
            request,
            leg.dest,
            # Responses to an INVITE replaced by its authorised retry are stale.
            lambda response: (
                self._invite_response(leg, response) if leg.invite is request else None
            ),
            lambda: self._invite_timeout(leg, 408, "Request Timeout"),
            lambda error: self._invite_timeout(leg, 503, f"Transport Error: {error}", True),
        )

    def _invite_response(self, leg: CallLeg, response: Response) -> None:
        status = response.status
        if status < 200:
            self._invite_provisional(leg, response)
        elif status < 300:
            self._invite_2xx(leg, response)
        else:
            self._invite_failed(leg, response)

    def _invite_provisional(self, leg: CallLeg, response: Response) -> None:
        """A 1xx: the INVITE is proceeding, so a pending CANCEL may go (§9.1)."""
        if not leg.state.unanswered:
            return  # final status known, or the leg is released
        # Any provisional, 100 Trying included, lets a pending CANCEL go.
        if leg.state is LegState.CALLING:
            leg.state = LegState.PROCEEDING
        if response.status == 100:
            if leg.state is LegState.CANCEL_PENDING:
                self._send_cancel(leg)
            return
        if response.to.tag and leg.dialog is None and response.contacts:
            leg.dialog = self._uac_dialog(leg, response)
        if leg.state is LegState.CANCEL_PENDING:
            self._send_cancel(leg)
        self._emit(leg, ev.Provisional(response))

    def _invite_2xx(self, leg: CallLeg, response: Response) -> None:
        """A 2xx: confirm the dialog and build its ACK; the session sends it (``send_ack``).

        A 2xx is taken whatever the leg's state (it may cross our CANCEL,
        or follow a timeout); a released leg's 2xx is ACKed and BYEd (§15).
        """
        to_tag = response.to.tag or ""
        if leg.ack_bytes is not None:
            if leg.dialog is not None and to_tag == leg.dialog.id.remote_tag:
                self._resend_ack(leg)
            else:
                # A second 2xx from another fork: ACK it and end that dialog.
                self._ack_and_bye_fork(leg, response)
            return
        if leg.dialog is None or leg.dialog.id.remote_tag != to_tag:
            leg.dialog = self._uac_dialog(leg, response)
        else:
            leg.dialog.update_from_uac_response(response)
        leg.dialog.state = DialogState.CONFIRMED
        ack = leg.dialog.create_request("ACK", self.new_via(), cseq=leg.invite.cseq.number)
        leg.ack_bytes = ack.to_bytes()
        leg.ack_dest = self._next_hop_addr(leg.dialog)
        self._ack_cache[(leg.call_id, leg.local_tag, to_tag)] = (leg.ack_bytes, leg.ack_dest)
        if len(self._ack_cache) > _ACK_CACHE_SIZE:
            self._ack_cache.popitem(last=False)
        leg.settle(response.status)
        if not self._emit(leg, ev.Answered(response)):
            # Nobody wants this call any more: complete and end it (§15).
            self.send_ack(leg)
            self.bye(leg)

    def _invite_failed(self, leg: CallLeg, response: Response) -> None:
        """A 3xx-6xx: retry once with credentials for 401/407, else ``Rejected``.

        A cancelled INVITE is not retried: its 401/407 ends the call.
        """
        if not leg.state.unanswered:
            return
        if not leg.state.cancel_requested:
            retry = self._authorized_retry(leg.invite, response) or retry_for_422(
                leg.invite, response
            )
            if retry is not None:
                self._send_invite(leg, retry)
                return
        leg.settle(response.status)
        self._emit(leg, ev.Rejected(response.status, response.reason, response))

    def _uac_dialog(self, leg: CallLeg, response: Response) -> Dialog:
        """The dialog ``response`` creates, set up over the transport our INVITE took."""
        dialog = Dialog.from_uac(leg.invite, response, self.contact)
        if leg.client_txn is not None:
            dialog.transport = transport_of(leg.client_txn.dest)
        return dialog

    def _uas_contact(self, leg: CallLeg) -> str:
        """Our Contact for answers to ``leg``'s INVITE: for the transport it came over, so
        the caller's ACK and BYE come back over a transport it speaks (RFC 3261 §12.1.1)."""
        return self.contact_for(transport_of(leg.source), secure=leg.invite.uri.scheme == "sips")

    def _ack_and_bye_fork(self, leg: CallLeg, response: Response) -> None:
        dialog = self._uac_dialog(leg, response)
        ack = dialog.create_request("ACK", self.new_via(), cseq=leg.invite.cseq.number)
        dest = self._next_hop_addr(dialog)
        self._send_raw(ack.to_bytes(), dest)
        bye = dialog.create_request("BYE", self.new_via())
        self._layer.send_request(bye, dest, lambda r: None, lambda: None, lambda e: None)

    def _invite_timeout(
        self, leg: CallLeg, status: int, reason: str, transport_error: bool = False
    ) -> None:
        """Timer B fired or the INVITE could not be sent: ``InviteTimeout``."""
        if leg.state.unanswered:
            leg.settle(status)
            self._emit(leg, ev.InviteTimeout(status, reason, transport_error))

    def send_ack(self, leg: CallLeg) -> None:
        """Send the ACK for the 2xx (built when the 2xx arrived)."""
        if leg.ack_bytes is not None:
            self._send_raw(leg.ack_bytes, leg.ack_dest)

    def _resend_ack(self, leg: CallLeg) -> None:
        self.metrics.inc("sipd_sip_2xx_retransmissions_total")
        self.send_ack(leg)

    def cancel(self, leg: CallLeg) -> None:
        """Cancel a pending outgoing INVITE (§9.1: only after a provisional).

        Before any provisional the CANCEL waits for the first one; once the
        final status is known (or for a UAS leg) there is nothing to cancel.
        """
        if leg.state is LegState.CALLING:
            leg.state = LegState.CANCEL_PENDING
        elif leg.state is LegState.PROCEEDING:
            self._send_cancel(leg)

    def _send_cancel(self, leg: CallLeg) -> None:
        leg.state = LegState.CANCELLING
        cancel = make_cancel(leg.invite)
        self._layer.send_request(cancel, leg.dest, lambda r: None, lambda: None, lambda e: None)
        if leg.client_txn is not None:
            # §9.1: no final response 64*T1 after the CANCEL: the INVITE is over
            # (InviteTimeout 408), instead of the call waiting in Cancelling for ever.
            leg.client_txn.limit_proceeding(self._layer.timers.b)

    # -- UAS -----------------------------------------------------------------------
    def ringing(self, leg: CallLeg, status: int = 180) -> None:
        """Send a provisional response with our tag."""
        txn = leg.server_txn
        if txn is None or txn.state is not ServerState.PROCEEDING:
            return
        self._respond(
            txn,
            leg.invite,
            status,
            to_tag=leg.local_tag,
            headers=[("Contact", self._uas_contact(leg))],
        )

    def answer(self, leg: CallLeg, sdp: bytes, extra: list[tuple[str, str]] | None = None) -> None:
        """Send 200 OK with our SDP and retransmit it until the ACK (§13.3.1.4).

        ``extra`` headers (Session-Expires, Require) go on the 200 too.
        """
        txn = leg.server_txn
        if txn is None or txn.state is not ServerState.PROCEEDING:
            raise CallFailed(f"call {leg.call_id} can no longer be answered")
        invite = leg.invite
        contact = self._uas_contact(leg)
        headers = [("Contact", contact), *(extra or ())]
        headers += [("Record-Route", rr) for rr in invite.headers.get_all("Record-Route")]
        headers += self._common_headers()
        response = self._response(
            invite,
            200,
            to_tag=leg.local_tag,
            headers=headers,
            body=sdp,
            content_type="application/sdp",
        )
        leg.dialog = Dialog.from_uas(invite, leg.local_tag, contact, confirmed=True)
        leg.dialog.transport = transport_of(leg.source)
        leg.settle(200)
        self._forget_pending(leg)
        txn.respond(response)
        if txn.terminated:
            return  # the 200 could not be sent: server_transport_error ended the call
        self._start_ok(leg, response.to_bytes(), txn.dest)

    def reject(
        self,
        leg: CallLeg,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer the INVITE with a final non-2xx status (nothing if already answered)."""
        txn = leg.server_txn
        if txn is None or txn.state is not ServerState.PROCEEDING:
            return
        response = self._response(
            leg.invite, status, reason, to_tag=leg.local_tag, headers=headers or ()
        )
        leg.settle(status)
        self._forget_pending(leg)
        txn.respond(response)

    def _forget_pending(self, leg: CallLeg) -> None:
        try:
            key = (leg.call_id, leg.invite.from_.tag or "", leg.invite.cseq.number)
        except BadRequest:
            return
        self._uas_pending.pop(key, None)

    def release(self, leg: CallLeg) -> None:
        """Forget the leg: stop its timers; late messages get 481 or are absorbed.

        The leg is ``ENDED`` for good and delivers no more events; a 2xx
        that still reaches a released UAC leg is ACKed and BYEd.
        """
        leg.state = LegState.ENDED
        self._stop_ok(leg)
        self._forget_pending(leg)
        if self.legs.get(leg.key) is leg:
            del self.legs[leg.key]
        if leg.server_txn is not None:
            self._uas_legs.pop(leg.server_txn, None)

    # -- TransactionUser ---------------------------------------------------------
    def request_received(self, request: Request, source: Addr, txn: ServerTransaction) -> None:
        """Route a new request: new INVITE, OPTIONS, REGISTER, in-dialog, or refuse it."""
        method = request.method
        # §8.2.2.3 420, §8.2.3 415, §21.4.7 406; never 483, which is for proxies (§16.3).
        refused = refusal(request) if method in ALLOWED_METHODS or method == "REGISTER" else None
        if refused is not None:
            status, reason, headers = refused
            self._respond(txn, request, status, reason, to_tag=new_tag(), headers=headers)
            return
        to_tag = request.to.tag
        if method == "INVITE" and to_tag is None:
            self._new_invite(request, source, txn)
        elif method == "OPTIONS":
            self._options(request, txn)
        elif method == "REGISTER" and self.registrar is not None:
            self.registrar.handle(request, source, txn)
        elif method in _IN_DIALOG and to_tag is not None:
            self._in_dialog(request, txn, to_tag)
        elif method == "BYE":
            self._respond(txn, request, 481)
        elif method in _KNOWN_METHODS:
            self._respond(txn, request, 405, to_tag=to_tag or new_tag(), headers=[("Allow", ALLOW)])
        else:
            self._respond(txn, request, 501, to_tag=to_tag or new_tag(), headers=[("Allow", ALLOW)])

    def _options(self, request: Request, txn: ServerTransaction) -> None:
        """OPTIONS (§11.2): what we support, and 503 while shutting down."""
        self._respond(
            txn,
            request,
            200 if self.accepting else 503,
            to_tag=request.to.tag or new_tag(),
            headers=[
                ("Allow", ALLOW),
                ("Accept", "application/sdp"),
                ("Supported", SUPPORTED),
                ("Server", self.config.user_agent),
            ],
        )

    def _new_invite(self, request: Request, source: Addr, txn: ServerTransaction) -> None:
        """An INVITE outside any dialog: check it, make its leg, offer it to the sink."""
        from_tag = request.from_.tag or ""
        cseq = request.cseq.number
        branch = request.top_via.branch or ""
        merge_key = (request.call_id, from_tag, cseq)
        pending_branch = self._uas_pending.get(merge_key)
        if pending_branch is not None and pending_branch != branch:
            self._respond(txn, request, 482, to_tag=new_tag())
            return
        if not self.accepting:
            self._respond(txn, request, 503, to_tag=new_tag(), headers=[("Retry-After", "30")])
            return
        if self.overload.check(source[0], len(self._uas_pending), request) is not None:
            retry = self.overload.retry_after_headers
            self._respond(txn, request, 503, to_tag=new_tag(), headers=retry)
            return
        registrar = self.registrar if self.authenticate_invites else None
        if registrar is not None and registrar.authenticate(request, txn) is None:
            return  # challenged (401); the caller retries with credentials
        contacts = self._contacts_or_400(request, txn)
        if contacts is None:
            return
        if not contacts:
            self._respond(txn, request, 400, "Missing Contact", to_tag=new_tag())
            return
        if interval_too_small(request, self.config.min_se):
            # RFC 4028 §8.1: a session interval below our minimum gets 422.
            min_se = [("Min-SE", str(self.config.min_se))]
            self._respond(txn, request, 422, to_tag=new_tag(), headers=min_se)
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
        self._sink.new_invite(leg, request, source)

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
        self._respond(txn, request, status, reason or None, to_tag=new_tag())
        return None

    def ack_received(self, request: Request, source: Addr) -> None:
        """The ACK for a 2xx we sent: stop retransmitting it, ``AckReceived``."""
        leg = self._find_leg(request.call_id, request.to.tag)
        if leg is None:
            return
        if leg.ok_bytes is not None:
            self._stop_ok(leg)
            self._emit(leg, ev.AckReceived(request))

    def cancel_received(
        self,
        cancel: Request,
        source: Addr,
        cancel_txn: ServerTransaction,
        invite_txn: ServerTransaction | None,
    ) -> None:
        """CANCEL (§9.2): 200 for it; the unanswered INVITE gets 487 from its session.

        An INVITE no session owns yet (the handler is still deciding) is
        answered 487 here, and the sink hears ``invite_cancelled``.
        """
        if invite_txn is None:
            self._respond(cancel_txn, cancel, 481)
            return
        self._respond(cancel_txn, cancel, 200, to_tag=cancel.to.tag or None)
        leg = self._uas_legs.get(invite_txn)
        if leg is None or leg.state is not LegState.INCOMING:
            return
        if not self._emit(leg, ev.RemoteCancel(cancel)):
            self.reject(leg, 487)
            self._sink.invite_cancelled(leg)

    def stray_response_received(self, response: Response, source: Addr) -> None:
        """A 2xx retransmitted after its transaction ended: ACK it again from the cache."""
        if response.is_success and response.cseq.method == "INVITE":
            key = (response.call_id, response.from_.tag or "", response.to.tag or "")
            cached = self._ack_cache.get(key)
            if cached is not None:
                self._send_raw(*cached)

    def server_transaction_timeout(self, txn: ServerTransaction) -> None:
        self.metrics.inc("sipd_sip_transaction_timeouts_total", kind="server")

    def server_transport_error(self, txn: ServerTransaction, error: OSError) -> None:
        """A response could not be sent (§17.2.4); the transaction has ended.

        For a call's INVITE (its 100, 180 or 200) the call cannot go on: its
        session gets ``TransportFailed`` at once instead of waiting in
        Incoming or Answering for an ACK that cannot come. An INVITE no
        session owns yet (the handler is still deciding) is dropped as a
        cancelled one would be.
        """
        leg = self._uas_legs.get(txn)
        sent = txn.last_status
        if (leg is None or leg.ended) and sent is not None and 200 <= sent < 300:
            return  # a 2xx whose call is over already: nothing is lost
        self._send_warnings.warn(
            "could not send response to {dest}: {error}", dest=txn.dest, error=error
        )
        if leg is None or leg.ended:
            return
        self._stop_ok(leg)
        event = ev.TransportFailed(503, f"cannot send our response: {error}")
        if not self._emit(leg, event) and leg.state is LegState.INCOMING:
            self._sink.invite_cancelled(leg)

    def close(self) -> None:
        """Stop every leg's timers (the coordinator is shutting down)."""
        for leg in list(self.legs.values()):
            self.release(leg)
        self._uas_pending.clear()
        self.overload.stop()
