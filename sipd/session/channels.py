"""The port implementations that bind one session to the dialog and media adapters.

The coordinator gives each new session a :class:`SignallingChannel` and a
:class:`MediaChannel`. They hold what the session must not: the dialog
adapter's :class:`~sipd.session.call_leg.CallLeg`, the media adapter, and the
:class:`~sipd.session.registry.SessionRegistry` entries that route events
back to the session. A command that cannot reach the wire (a BYE with no
dialog, a re-INVITE before there is one) is answered with the event the
wire would have produced, posted to the session's queue.
"""

from __future__ import annotations

from collections.abc import Callable

from sipd.media.fanout import AudioSubscription
from sipd.sdp import NegotiationResult
from sipd.session import events as ev
from sipd.session.call_leg import CallLeg
from sipd.session.dialog_adapter import DialogAdapter
from sipd.session.media_adapter import MediaAdapter, MediaSession
from sipd.session.ports import Headers
from sipd.session.registry import SessionRegistry
from sipd.sip.message import Request
from sipd.sip.transaction import ServerTransaction
from sipd.sip.uri import Uri

__all__ = ["MediaChannel", "SignallingChannel"]


def _nowhere(event: ev.CallEvent) -> bool:
    return False


def _at_once(effect: Callable[[], object]) -> None:
    effect()


def _nothing() -> None:
    pass


class SignallingChannel:
    """A session's :class:`~sipd.session.ports.SignallingPort` over the dialog adapter."""

    __slots__ = ("_dialogs", "_registry", "leg", "post", "session_id")

    def __init__(
        self,
        dialogs: DialogAdapter,
        registry: SessionRegistry,
        session_id: str,
        leg: CallLeg | None = None,
    ) -> None:
        self._dialogs = dialogs
        self._registry = registry
        self.session_id = session_id
        self.leg = leg
        #: The session's queue, for the events a command produces itself.
        self.post: Callable[[ev.CallEvent], object] = _nowhere

    def detach(self) -> None:
        """Forget the session's queue (it has ended), breaking the session's cycle."""
        self.post = _nowhere

    # -- what the session may read ----------------------------------------------------------
    @property
    def invite_request(self) -> Request | None:
        return self.leg.invite if self.leg is not None else None

    @property
    def call_id(self) -> str | None:
        return self.leg.call_id if self.leg is not None else None

    @property
    def dialog_ids(self) -> tuple[str, str, str] | None:
        leg = self.leg
        if leg is None or leg.dialog is None:
            return None
        return leg.call_id, leg.local_tag, leg.dialog.id.remote_tag or ""

    @property
    def remote_target(self) -> Uri | None:
        leg = self.leg
        return leg.dialog.remote_target if leg is not None and leg.dialog is not None else None

    # -- commands ---------------------------------------------------------------------
    def invite(self, target: Uri, sdp: bytes, headers: Headers, proxy: Uri | None) -> None:
        if self.leg is not None:
            self._dialogs.release(self.leg)  # a redirect: the old INVITE is over
        self.leg = self._dialogs.invite(target, sdp, extra_headers=list(headers), proxy=proxy)
        self._registry.register_dialog(self.session_id, self.leg.key)

    def ack(self) -> None:
        if self.leg is not None:
            self._dialogs.send_ack(self.leg)

    def cancel(self) -> None:
        if self.leg is not None:
            self._dialogs.cancel(self.leg)

    def bye(self) -> None:
        if self.leg is None:
            self.post(ev.ByeCompleted(None))
        else:
            self._dialogs.bye(self.leg)

    def ringing(self) -> None:
        if self.leg is not None:
            self._dialogs.ringing(self.leg)

    def answer(self, sdp: bytes, headers: Headers = ()) -> None:
        assert self.leg is not None, "answer() needs the INVITE's leg"
        self._dialogs.answer(self.leg, sdp, list(headers))

    def reject(self, status: int, reason: str | None = None, headers: Headers = ()) -> None:
        if self.leg is not None:
            self._dialogs.reject(self.leg, status, reason, headers=list(headers))

    def reinvite(self, sdp: bytes, headers: Headers = ()) -> None:
        if self.leg is None:
            self.post(ev.ReinviteFailed(481, "No Dialog"))
        else:
            self._dialogs.reinvite(self.leg, sdp, list(headers))

    def answer_reoffer(
        self, txn: ServerTransaction, status: int, sdp: bytes = b"", headers: Headers = ()
    ) -> None:
        if self.leg is not None:
            self._dialogs.answer_reinvite(self.leg, txn, status, sdp, list(headers))

    def refer(self, target: str) -> None:
        if self.leg is None:
            self.post(ev.ReferRejected(481, "No Dialog"))
        else:
            self._dialogs.refer(self.leg, target)

    def answer_request(self, txn: ServerTransaction, status: int, headers: Headers = ()) -> None:
        if self.leg is not None:
            self._dialogs.answer_request(self.leg, txn, status, headers=list(headers))

    def refresh(self, method: str, sdp: bytes | None, headers: Headers) -> None:
        if self.leg is None:
            self.post(ev.RefreshFailed(481, "No Dialog"))
        else:
            self._dialogs.refresh(self.leg, method, sdp, list(headers))

    def notify_refer(self, status: int, reason: str, *, final: bool) -> None:
        if self.leg is not None:
            self._dialogs.notify_refer(self.leg, status, reason, final=final)

    def release(self) -> None:
        if self.leg is not None:
            self._dialogs.release(self.leg)


class MediaChannel:
    """A session's :class:`~sipd.session.ports.MediaPort` over the media adapter."""

    __slots__ = ("_adapter", "_registry", "later", "media", "on_evidence", "session_id")

    def __init__(
        self,
        adapter: MediaAdapter,
        registry: SessionRegistry,
        session_id: str,
        media: MediaSession | None = None,
    ) -> None:
        self._adapter = adapter
        self._registry = registry
        self.session_id = session_id
        #: Bound before the session exists (the coordinator's), or by open().
        self.media: MediaSession | None = media
        #: Runs an effect once the session has settled (readers learn of the end then).
        self.later: Callable[[Callable[[], object]], None] = _at_once
        #: Makes the session re-read its timers (its machine's ``reschedule``): the
        #: media tells it when ICMP first says the peer is gone.
        self.on_evidence: Callable[[], None] = _nothing

    def detach(self) -> None:
        """Forget the session's queue (it has ended), breaking the session's cycle."""
        self.later = _at_once
        self.on_evidence = _nothing
        if self.media is not None:
            self.media.on_evidence = None

    def open(self) -> MediaSession:
        if self.media is None:
            self.media = self._adapter.allocate()
        self._registry.register_media(self.session_id, self.media.id)
        return self.media

    def start(self, negotiation: NegotiationResult) -> None:
        if self.media is not None:
            self.media.on_evidence = self.on_evidence
            self._adapter.start(self.media, negotiation)

    def stop(self) -> None:
        if self.media is not None:
            self._adapter.stop(self.media, self.later)

    def close(self) -> None:
        if self.media is not None:
            self.media.stop(self.later)
            self._adapter.release(self.media)

    def subscribe(self) -> AudioSubscription:
        """A new stream of received frames (for bridges and readers)."""
        assert self.media is not None
        return self.media.subscribe()
