"""Requests inside an established dialog: BYE, re-INVITE/UPDATE, REFER, NOTIFY.

:class:`InDialogRequests` is the part of the dialog adapter that handles
mid-call signalling both ways. Requests from the peer are checked against
the dialog (481 for none, 500 for an old CSeq, §12.2.2) and turned into
events; the session answers a re-INVITE or REFER through
:meth:`~InDialogRequests.answer_reinvite` and
:meth:`~InDialogRequests.answer_request`, never by building a response
itself. Requests we send (BYE, re-INVITE, REFER, NOTIFY) go through
:meth:`~sipd.session.dialog_core.DialogCore._send_in_dialog`, which answers
digest challenges, and their outcome comes back as events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from sipd.session import events as ev
from sipd.session.call_leg import CallLeg
from sipd.session.dialog_core import DialogCore
from sipd.session.session_timer import interval_too_small
from sipd.sip.address import parse_name_addr
from sipd.sip.dialog import DialogState
from sipd.sip.errors import SipParseError
from sipd.sip.message import Request, Response
from sipd.sip.transaction import ServerState, ServerTransaction
from sipd.sip.uri import Uri

__all__ = ["InDialogRequests", "refer_replaces", "refer_target", "sipfrag_status"]


class InDialogRequests(DialogCore):
    """Mid-dialog requests, received and sent (mixed into the dialog adapter)."""

    # -- requests from the peer ---------------------------------------------------------
    def _in_dialog(self, request: Request, txn: ServerTransaction, to_tag: str) -> None:
        """A request with a To tag: find its dialog and pass it on by method."""
        leg = self._find_leg(request.call_id, to_tag)
        from_tag = request.from_.tag
        if leg is None or leg.dialog is None or leg.dialog.id.remote_tag != from_tag:
            self._respond(txn, request, 481)
            return
        if not leg.dialog.check_remote_cseq(request):
            self._respond(txn, request, 500, "CSeq Out Of Order")
            return
        method = request.method
        if method == "BYE":
            self._bye_received(leg, request, txn)
        elif method == "NOTIFY":
            self._notify_received(leg, request, txn)
        elif method == "REFER":
            self._refer_received(leg, request, txn)
        else:
            self._target_refresh(leg, request, txn)

    def _bye_received(self, leg: CallLeg, request: Request, txn: ServerTransaction) -> None:
        """BYE ends the dialog at once (§15.1.2): 200, then ``RemoteBye``."""
        assert leg.dialog is not None
        leg.dialog.state = DialogState.TERMINATED
        self._stop_ok(leg)
        self._respond(txn, request, 200, headers=[("User-Agent", self.config.user_agent)])
        self._emit(leg, ev.RemoteBye(request))

    def _refer_received(self, leg: CallLeg, request: Request, txn: ServerTransaction) -> None:
        """REFER (RFC 3515): the session answers it (202 or 603) via ``answer_request``."""
        event = ev.ReferReceived(
            request, txn, target=refer_target(request), replaces=refer_replaces(request)
        )
        if not self._emit(leg, event):
            self._respond(txn, request, 481)

    def _target_refresh(self, leg: CallLeg, request: Request, txn: ServerTransaction) -> None:
        """re-INVITE or UPDATE: refresh the remote target; the session decides on the offer."""
        assert leg.dialog is not None
        contacts = self._contacts_or_400(request, txn)
        if contacts is None:
            return
        if contacts:
            leg.dialog.remote_target = contacts[0].uri
        if interval_too_small(request, self.config.min_se):
            # RFC 4028 §9: a refresh asking for less than our minimum gets 422.
            self._respond(txn, request, 422, headers=[("Min-SE", str(self.config.min_se))])
            return
        if request.method == "UPDATE" and not request.body:
            # A session refresh without an offer (RFC 4028): the session
            # answers it with its interval; nobody taking it still gets 200.
            if not self._emit(leg, ev.RemoteRefresh(request, txn)):
                self._respond(txn, request, 200)
            return
        if not self._emit(leg, ev.RemoteReinvite(request, txn)):
            self._respond(txn, request, 481)

    def _notify_received(self, leg: CallLeg, request: Request, txn: ServerTransaction) -> None:
        """NOTIFY for our REFER (RFC 3515 §2.4.5): answer 200, pass the sipfrag status on."""
        event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != "refer":
            self._respond(txn, request, 489, "Bad Event")
            return
        self._respond(txn, request, 200)
        status = sipfrag_status(request.body)
        state = (request.headers.get("Subscription-State") or "").split(";", 1)[0].strip()
        self._emit(leg, ev.TransferProgress(status, terminated=state.lower() == "terminated"))

    # -- the session's answers -----------------------------------------------------------
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
        ``headers`` go on the response (Warning, Retry-After; Session-Expires on a 2xx).
        """
        request = txn.request
        if status >= 300:
            self._respond(txn, request, status, headers=headers or ())
            return
        response = self._respond(
            txn,
            request,
            200,
            body=sdp,
            content_type="application/sdp",
            headers=[("Contact", self.contact), *self._common_headers(), *(headers or ())],
        )
        if request.method == "INVITE":
            self._start_ok(leg, response.to_bytes(), txn.dest)

    def answer_request(
        self,
        leg: CallLeg,
        txn: ServerTransaction,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer an in-dialog non-INVITE request of ``leg`` (REFER: 202 Accepted, 603 Decline).

        A request already answered (or whose transaction has ended) is left
        alone: a session answering twice must not raise into its machine.
        """
        if txn.state not in (ServerState.TRYING, ServerState.PROCEEDING):
            return
        self._respond(txn, txn.request, status, reason, headers=headers or ())

    # -- requests we send -----------------------------------------------------------------
    def bye(self, leg: CallLeg) -> None:
        """Send BYE in the leg's dialog; ``ByeCompleted`` follows.

        Without a dialog there is nothing to end, and ``ByeCompleted(None)``
        comes at once. The dialog counts as terminated from now on (§15).
        """
        dialog = leg.dialog
        if dialog is None:
            self._emit(leg, ev.ByeCompleted(None))
            return
        request = dialog.create_request("BYE", self.new_via())
        request.headers.add("User-Agent", self.config.user_agent)
        dialog.state = DialogState.TERMINATED

        def done(status: int | None) -> None:
            self._emit(leg, ev.ByeCompleted(status))

        self._send_in_dialog(
            dialog, request, lambda sent, r: done(r.status), lambda status, _: done(status)
        )

    def _one_invite_at_a_time(self, leg: CallLeg, send: Callable[[], None]) -> None:
        """Send an in-dialog INVITE now, or once ours in progress is over (§14.1)."""
        if leg.invites_waiting is not None:
            leg.invites_waiting.append(send)
            return
        leg.invites_waiting = deque()
        send()

    def _invite_over(self, leg: CallLeg) -> None:
        """Our in-dialog INVITE has its final answer: the next waiting one may go."""
        waiting = leg.invites_waiting
        if waiting:
            waiting.popleft()()
        else:
            leg.invites_waiting = None

    def reinvite(
        self, leg: CallLeg, sdp: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Send a re-INVITE with a new offer; ``ReinviteAnswered`` / ``ReinviteFailed`` follow.

        A 491 (glare, §14.1) arrives as ``ReinviteGlare``; a 2xx is ACKed here
        (and again for each retransmission). ``headers`` (Session-Expires)
        go on the request. It waits while another INVITE of ours is out.
        """
        self._one_invite_at_a_time(leg, lambda: self._reinvite(leg, sdp, headers or []))

    def _reinvite(self, leg: CallLeg, sdp: bytes, headers: list[tuple[str, str]]) -> None:
        dialog = leg.dialog
        if dialog is None or leg.ended:
            self._invite_over(leg)
            self._emit(leg, ev.ReinviteFailed(481, "No Dialog"))
            return
        request = dialog.create_request(
            "INVITE", self.new_via(), body=sdp, content_type="application/sdp"
        )
        self._add_common(request.headers)
        for name, value in headers:
            request.headers.add(name, value)
        acked: list[bytes] = []

        def response(sent: Request, r: Response) -> None:
            if r.status < 300:
                # Each 2xx (retransmissions too) gets the same ACK (§13.2.2.4).
                if not acked:
                    ack = dialog.create_request("ACK", self.new_via(), cseq=sent.cseq.number)
                    acked.append(ack.to_bytes())
                    self._send_raw(acked[0], self._next_hop_addr(dialog))
                    self._invite_over(leg)
                    self._emit(leg, ev.ReinviteAnswered(r))
                else:
                    self._send_raw(acked[0], self._next_hop_addr(dialog))
                return
            self._invite_over(leg)
            if r.status == 491:
                self._emit(leg, ev.ReinviteGlare(r.status, r.reason))
            else:
                self._emit(leg, ev.ReinviteFailed(r.status, r.reason))

        def failed(status: int, reason: str) -> None:
            self._invite_over(leg)
            self._emit(leg, ev.ReinviteFailed(status, reason))

        self._send_in_dialog(dialog, request, response, failed)

    def refresh(
        self, leg: CallLeg, method: str, sdp: bytes | None, headers: list[tuple[str, str]]
    ) -> None:
        """Refresh the session (RFC 4028 §7.4): UPDATE without a body, or a
        re-INVITE offering our current SDP again; ``RefreshAnswered`` or
        ``RefreshFailed`` (with the Min-SE of a 422) follow. A 2xx to a
        re-INVITE is ACKed here; a re-INVITE waits for one of ours in progress."""
        if method == "INVITE":
            self._one_invite_at_a_time(leg, lambda: self._refresh(leg, method, sdp, headers))
        else:
            self._refresh(leg, method, sdp, headers)

    def _refresh(
        self, leg: CallLeg, method: str, sdp: bytes | None, headers: list[tuple[str, str]]
    ) -> None:
        invite = method == "INVITE"
        dialog = leg.dialog
        if dialog is None or leg.ended:
            if invite:
                self._invite_over(leg)
            self._emit(leg, ev.RefreshFailed(481, "No Dialog"))
            return
        if invite:
            request = dialog.create_request(
                "INVITE", self.new_via(), body=sdp or b"", content_type="application/sdp"
            )
        else:
            request = dialog.create_request("UPDATE", self.new_via())
        request.headers.add("Contact", self.contact)
        self._add_common(request.headers)
        for name, value in headers:
            request.headers.add(name, value)
        acked: list[bytes] = []

        def response(sent: Request, r: Response) -> None:
            if r.status >= 300:
                if invite:
                    self._invite_over(leg)
                self._emit(leg, ev.RefreshFailed(r.status, r.reason, _min_se(r)))
                return
            if invite:
                if not acked:
                    ack = dialog.create_request("ACK", self.new_via(), cseq=sent.cseq.number)
                    acked.append(ack.to_bytes())
                self._send_raw(acked[0], self._next_hop_addr(dialog))
                if len(acked) > 1:
                    return
                acked.append(b"")  # marks the 2xx as reported
                self._invite_over(leg)
            self._emit(leg, ev.RefreshAnswered(r))

        def failed(status: int, reason: str) -> None:
            if invite:
                self._invite_over(leg)
            self._emit(leg, ev.RefreshFailed(status, reason))

        self._send_in_dialog(dialog, request, response, failed)

    def refer(self, leg: CallLeg, target: str) -> None:
        """Send REFER (RFC 3515) asking the peer to call ``target``.

        ``ReferAccepted`` or ``ReferRejected`` follow, then ``TransferProgress``
        for each NOTIFY the peer sends.
        """
        dialog = leg.dialog
        if dialog is None:
            self._emit(leg, ev.ReferRejected(481, "No Dialog"))
            return
        request = dialog.create_request("REFER", self.new_via())
        h = request.headers
        h.add("Refer-To", f"<{target}>")
        h.add("Referred-By", f"<{self.local_uri()}>")
        if "Contact" not in h:  # the dialog adds its own (one Contact, §8.1.1.8)
            h.add("Contact", self.contact)
        self._add_common(h)

        def response(sent: Request, r: Response) -> None:
            if r.status < 300:
                self._emit(leg, ev.ReferAccepted(r.status))
            else:
                self._emit(leg, ev.ReferRejected(r.status, r.reason))

        def rejected(status: int, reason: str) -> None:
            self._emit(leg, ev.ReferRejected(status, reason))

        self._send_in_dialog(dialog, request, response, rejected)

    def notify_refer(self, leg: CallLeg, status: int, reason: str, *, final: bool) -> None:
        """Tell the transferor how the referred call is going (RFC 3515 §2.4.4).

        Fire and forget: the NOTIFY's own outcome changes nothing for us.
        """
        dialog = leg.dialog
        if dialog is None or leg.ended:
            return
        body = f"SIP/2.0 {status} {reason}\r\n".encode()
        request = dialog.create_request(
            "NOTIFY", self.new_via(), body=body, content_type="message/sipfrag;version=2.0"
        )
        h = request.headers
        h.add("Event", "refer")
        h.add(
            "Subscription-State",
            "terminated;reason=noresource" if final else "active;expires=60",
        )
        if "Contact" not in h:  # the dialog adds its own (one Contact, §8.1.1.8)
            h.add("Contact", self.contact)
        self._layer.send_request(
            request, self._next_hop_addr(dialog), lambda r: None, lambda: None, lambda e: None
        )


def sipfrag_status(body: bytes) -> int | None:
    """The status code of a ``message/sipfrag`` body such as ``SIP/2.0 200 OK``."""
    line = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    parts = line.split()
    if len(parts) >= 2 and parts[0].upper() == "SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return None


def _refer_uri(request: Request) -> Uri | None:
    """The Refer-To URI, or None when the header is missing or does not parse."""
    value = request.headers.get("Refer-To")
    if not value:
        return None
    try:
        return parse_name_addr(value).uri
    except SipParseError:  # what the address and URI parsers raise for bad input
        return None


def refer_target(request: Request) -> str | None:
    """The Refer-To URI without its URI headers: whom to call."""
    uri = _refer_uri(request)
    return str(uri.replace(headers=())) if uri is not None else None


def refer_replaces(request: Request) -> str | None:
    """The Refer-To's ``Replaces`` URI header (attended transfer), unescaped.

    Of the URI headers only this one is copied into the INVITE: the others
    would let the referrer write arbitrary headers into our request.
    """
    uri = _refer_uri(request)
    if uri is None:
        return None
    return next((v for n, v in uri.headers if n.lower() == "replaces"), None)


def _min_se(response: Response) -> int | None:
    """The Min-SE of a 422 (RFC 4028 §7.3), or None."""
    value = (response.headers.get("Min-SE") or "").split(";", 1)[0].strip()
    ok = response.status == 422 and value.isascii() and value.isdigit() and len(value) <= 9
    return int(value) if ok else None
