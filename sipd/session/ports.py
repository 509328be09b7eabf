"""The narrow interfaces a call session acts through.

A session is given one :class:`SignallingPort` and one :class:`MediaPort`
when it is created (and an application port, see
:class:`sipd.session.session.CallServices`). It never sees the coordinator,
the dialog adapter or the transaction layer: its actions say *what* to do
(send the INVITE, answer 480, start media) and the port implementations in
:mod:`sipd.session.channels` know how. What comes back arrives later as an
event (:mod:`sipd.session.events`) through the session's one queue.

Tests drive a session with fake ports that record the commands they were
given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sipd.sdp import NegotiationResult
from sipd.session.media_adapter import MediaSession
from sipd.sip.message import Request
from sipd.sip.transaction import ServerTransaction
from sipd.sip.uri import Uri

__all__ = ["Headers", "MediaPort", "SignallingPort"]

#: Extra header (name, value) pairs for a request or response.
Headers = Sequence[tuple[str, str]]


class SignallingPort(Protocol):
    """The SIP commands of one call. Every response the session sends goes through here."""

    def detach(self) -> None:
        """The call has ended: drop every reference back to the session."""

    @property
    def invite_request(self) -> Request | None:
        """The INVITE of this call (ours or the peer's), once there is one."""

    @property
    def call_id(self) -> str | None:
        """The SIP Call-ID, once there is an INVITE."""

    @property
    def dialog_ids(self) -> tuple[str, str, str] | None:
        """(Call-ID, local tag, remote tag) once a dialog exists."""

    @property
    def remote_target(self) -> Uri | None:
        """The peer's Contact (where in-dialog requests go), once a dialog exists."""

    def invite(self, target: Uri, sdp: bytes, headers: Headers, proxy: Uri | None) -> None:
        """Send an INVITE (a new one replaces the previous leg: a redirect).

        Raises :class:`~sipd.errors.CallError` when it cannot be sent at all.
        """

    def ack(self) -> None:
        """ACK the 2xx to our INVITE."""

    def cancel(self) -> None:
        """CANCEL our pending INVITE (sent once a provisional arrived)."""

    def bye(self) -> None:
        """Send BYE; ``ByeCompleted`` follows (at once when there is no dialog)."""

    def ringing(self) -> None:
        """180 Ringing to the peer's INVITE."""

    def answer(self, sdp: bytes, headers: Headers = ()) -> None:
        """200 OK with our SDP (and ``headers``), retransmitted until the ACK."""

    def reject(self, status: int, reason: str | None = None, headers: Headers = ()) -> None:
        """A final 3xx-6xx to the peer's INVITE."""

    def reinvite(self, sdp: bytes, headers: Headers = ()) -> None:
        """A re-INVITE with a new offer; ``ReinviteAnswered``/``Failed``/``Glare`` follow."""

    def answer_reoffer(
        self, txn: ServerTransaction, status: int, sdp: bytes = b"", headers: Headers = ()
    ) -> None:
        """Answer the peer's re-INVITE or UPDATE."""

    def refer(self, target: str) -> None:
        """REFER the peer to ``target``; ``ReferAccepted`` or ``ReferRejected`` follow."""

    def answer_request(self, txn: ServerTransaction, status: int, headers: Headers = ()) -> None:
        """Answer an in-dialog request such as REFER (202, 603) or a refresh UPDATE (200)."""

    def refresh(self, method: str, sdp: bytes | None, headers: Headers) -> None:
        """Refresh the session (UPDATE, or re-INVITE with ``sdp``); ``RefreshAnswered``
        or ``RefreshFailed`` follow."""

    def notify_refer(self, status: int, reason: str, *, final: bool) -> None:
        """NOTIFY the transferor how the referred call goes (sipfrag)."""

    def release(self) -> None:
        """Forget the dialog: stop its timers and routing."""


class MediaPort(Protocol):
    """The media commands of one call."""

    def detach(self) -> None:
        """The call has ended: drop every reference back to the session."""

    @property
    def media(self) -> MediaSession | None:
        """The open media, if any."""

    def open(self) -> MediaSession:
        """Bind an RTP/RTCP port pair (raises :class:`~sipd.media.ports.PortsExhausted`)."""

    def start(self, negotiation: NegotiationResult) -> None:
        """Send and receive with the negotiated codec and address (or update them)."""

    def stop(self) -> None:
        """Stop media; readers learn of the end once the session has settled."""

    def close(self) -> None:
        """Stop and release the ports."""
