"""The events a call session reacts to, as data.

Every event of the state table (``sipd/data/state_table.yaml``) is a frozen,
slotted dataclass here whose class name is the table's event name. The
dialog layer (:mod:`sipd.session.dialog_adapter`), the media layer, timers
and the application create them; the session's executor feeds them to its
Automat machine; guards and actions receive them and read typed fields
instead of fishing in a dictionary.

The wire objects some events carry (a :class:`~sipd.sip.message.Request` or
:class:`~sipd.sip.message.Response`, the server transaction a request came
on) are there so that the session can negotiate SDP from the body and hand
the transaction back to its signalling port to answer; they are never
answered by the session itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipd.sip.message import Request, Response

if TYPE_CHECKING:
    from sipd.sip.transaction import ServerTransaction

__all__ = [
    "EVENT_TYPES",
    "Accept",
    "AckReceived",
    "AckTimeout",
    "AnswerRefused",
    "Answered",
    "ByeCompleted",
    "CallEvent",
    "GlareRetry",
    "HangUp",
    "Hold",
    "IncomingCall",
    "InviteTimeout",
    "MakeCall",
    "MediaTimeout",
    "Provisional",
    "ReferAccepted",
    "ReferReceived",
    "ReferRejected",
    "ReferredCallAnswered",
    "ReferredCallFailed",
    "RefreshAnswered",
    "RefreshFailed",
    "ReinviteAnswered",
    "ReinviteFailed",
    "ReinviteGlare",
    "Reject",
    "Rejected",
    "RemoteBye",
    "RemoteCancel",
    "RemoteRefresh",
    "RemoteReinvite",
    "Replaced",
    "ReplacingCall",
    "Resume",
    "RingTimeout",
    "SessionExpired",
    "SessionRefreshDue",
    "Transfer",
    "TransferProgress",
    "TransportFailed",
    "event_type",
]


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Base of every session event; the class name is the state table's event name."""

    @property
    def name(self) -> str:
        """The event's table name (its class name)."""
        return type(self).__name__

    @property
    def data(self) -> dict[str, object]:
        """The fields as a mapping, for listeners written for the old ``Event``."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# -- from the application -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MakeCall(CallEvent):
    """Place the call (UAC)."""


@dataclass(frozen=True, slots=True)
class Accept(CallEvent):
    """Answer the incoming call."""


@dataclass(frozen=True, slots=True)
class Reject(CallEvent):
    """Refuse the incoming call with ``code`` (and ``reason``)."""

    code: int = 486
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HangUp(CallEvent):
    """End the call, whatever state it is in."""


@dataclass(frozen=True, slots=True)
class Hold(CallEvent):
    """Put the call on hold."""


@dataclass(frozen=True, slots=True)
class Resume(CallEvent):
    """Take the call off hold."""


@dataclass(frozen=True, slots=True)
class Transfer(CallEvent):
    """Blind or attended transfer of the peer to ``target`` (a URI, maybe with Replaces)."""

    target: str


# -- from the signalling layer ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IncomingCall(CallEvent):
    """A new INVITE passed the interceptor.

    ``offer`` is False when the handler answers it itself (``invite.accept()``):
    the call is then not offered to the application.
    """

    offer: bool = True


@dataclass(frozen=True, slots=True)
class ReplacingCall(CallEvent):
    """A new INVITE whose Replaces header names one of our confirmed calls (RFC 3891)."""


@dataclass(frozen=True, slots=True)
class Provisional(CallEvent):
    """A 1xx (not 100) to our INVITE."""

    response: Response


@dataclass(frozen=True, slots=True)
class Answered(CallEvent):
    """A 2xx to our INVITE (the ACK is built, not yet sent)."""

    response: Response


@dataclass(frozen=True, slots=True)
class AnswerRefused(CallEvent):
    """The signalling handler's ``on_response`` refused a 2xx to our INVITE."""

    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Rejected(CallEvent):
    """A 3xx-6xx final response to our INVITE."""

    status: int
    reason: str = ""
    response: Response | None = None


@dataclass(frozen=True, slots=True)
class InviteTimeout(CallEvent):
    """Our INVITE got no final response (Timer B) or could not be sent.

    ``transport_error``: the transport failed (TLS verification, a refused or
    lost connection, every DNS target down), not the peer's silence.
    """

    status: int = 408
    reason: str = "Request Timeout"
    transport_error: bool = False


@dataclass(frozen=True, slots=True)
class RemoteCancel(CallEvent):
    """CANCEL for the INVITE we have not answered yet."""

    request: Request | None = None


@dataclass(frozen=True, slots=True)
class AckReceived(CallEvent):
    """The ACK for our 2xx (it may carry the answer to a delayed offer)."""

    request: Request | None = None


@dataclass(frozen=True, slots=True)
class AckTimeout(CallEvent):
    """No ACK for our 2xx within 64*T1."""


@dataclass(frozen=True, slots=True)
class TransportFailed(CallEvent):
    """Our answer to the peer's INVITE (1xx or 2xx) could not be sent at all.

    The address the peer's Via names is unusable (``rport=65536``, an IPv6
    ``maddr`` on an IPv4 socket, a ``received`` that is no address): the
    INVITE server transaction has ended (RFC 3261 §17.2.4), so the call can
    neither ring nor be answered.
    """

    status: int = 503
    reason: str = "Service Unavailable"


@dataclass(frozen=True, slots=True)
class RemoteBye(CallEvent):
    """BYE from the peer (already answered 200)."""

    request: Request | None = None


@dataclass(frozen=True, slots=True)
class ByeCompleted(CallEvent):
    """Our BYE got its final response (``status``), timed out, or needed no sending (None)."""

    status: int | None = None


@dataclass(frozen=True, slots=True)
class ReinviteAnswered(CallEvent):
    """A 2xx to our re-INVITE (ACK already sent)."""

    response: Response


@dataclass(frozen=True, slots=True)
class ReinviteFailed(CallEvent):
    """Our re-INVITE got 3xx-6xx (not 491), timed out, or could not be sent."""

    status: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReinviteGlare(CallEvent):
    """Our re-INVITE got 491 Request Pending (RFC 3261 §14.1)."""

    status: int = 491
    reason: str = "Request Pending"


@dataclass(frozen=True, slots=True)
class RemoteReinvite(CallEvent):
    """A re-INVITE or UPDATE from the peer, answered through the signalling port."""

    request: Request
    txn: ServerTransaction


@dataclass(frozen=True, slots=True)
class ReferAccepted(CallEvent):
    """A 2xx to our REFER."""

    status: int = 202


@dataclass(frozen=True, slots=True)
class ReferRejected(CallEvent):
    """Our REFER got 3xx-6xx, timed out, or could not be sent."""

    status: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TransferProgress(CallEvent):
    """A NOTIFY for our REFER with the referred call's sipfrag status (None: unreadable)."""

    status: int | None
    terminated: bool = False


@dataclass(frozen=True, slots=True)
class ReferReceived(CallEvent):
    """The peer asks us to call ``target`` (REFER, RFC 3515).

    ``target`` is the Refer-To URI without its URI headers (None when the
    header is missing or unreadable), ``replaces`` the Refer-To's Replaces
    header for an attended transfer, and ``allowed`` what the signalling
    handler said about the transfer (asked before the event is made, so the
    table's guard stays a pure function).
    """

    request: Request
    txn: ServerTransaction
    target: str | None
    replaces: str | None = None
    allowed: bool = True


@dataclass(frozen=True, slots=True)
class ReferredCallAnswered(CallEvent):
    """The call we placed for the peer's REFER was answered."""


@dataclass(frozen=True, slots=True)
class ReferredCallFailed(CallEvent):
    """The call we placed for the peer's REFER failed with ``status``."""

    status: int = 500
    reason: str = "Call Failed"


@dataclass(frozen=True, slots=True)
class Replaced(CallEvent):
    """The INVITE with Replaces that takes this call's place was answered."""

    session: Any


@dataclass(frozen=True, slots=True)
class RefreshAnswered(CallEvent):
    """A 2xx to our session refresh (UPDATE or re-INVITE, RFC 4028 §7.4)."""

    response: Response


@dataclass(frozen=True, slots=True)
class RefreshFailed(CallEvent):
    """Our session refresh got 3xx-6xx, timed out, or could not be sent.

    ``min_se`` is the Min-SE of a 422 Session Interval Too Small.
    """

    status: int
    reason: str = ""
    min_se: int | None = None


@dataclass(frozen=True, slots=True)
class RemoteRefresh(CallEvent):
    """An UPDATE without an offer from the peer: a session refresh (RFC 4028)."""

    request: Request
    txn: ServerTransaction


# -- from timers (started and cancelled by the states that own them) -------------------
@dataclass(frozen=True, slots=True)
class RingTimeout(CallEvent):
    """Nobody answered (UAC) or accepted (UAS) within ``ring_timeout``."""


@dataclass(frozen=True, slots=True)
class GlareRetry(CallEvent):
    """The RFC 3261 §14.1 wait after a 491 is over: send the re-INVITE again."""


@dataclass(frozen=True, slots=True)
class SessionRefreshDue(CallEvent):
    """Half the session interval has passed and we are the refresher (RFC 4028 §7.4)."""


@dataclass(frozen=True, slots=True)
class SessionExpired(CallEvent):
    """The session interval passed unrefreshed (RFC 4028 §10)."""


@dataclass(frozen=True, slots=True)
class MediaTimeout(CallEvent):
    """No RTP or RTCP arrived from the peer for ``media_timeout`` seconds."""


#: Every event class by its table name.
EVENT_TYPES: dict[str, type[CallEvent]] = {
    cls.__name__: cls
    for cls in (
        MakeCall,
        Accept,
        Reject,
        HangUp,
        Hold,
        Resume,
        Transfer,
        IncomingCall,
        ReplacingCall,
        Provisional,
        Answered,
        AnswerRefused,
        Rejected,
        InviteTimeout,
        RemoteCancel,
        AckReceived,
        AckTimeout,
        TransportFailed,
        RemoteBye,
        ByeCompleted,
        ReinviteAnswered,
        ReinviteFailed,
        ReinviteGlare,
        RemoteReinvite,
        ReferAccepted,
        ReferRejected,
        TransferProgress,
        ReferReceived,
        ReferredCallAnswered,
        ReferredCallFailed,
        Replaced,
        RingTimeout,
        GlareRetry,
        RefreshAnswered,
        RefreshFailed,
        RemoteRefresh,
        SessionRefreshDue,
        SessionExpired,
        MediaTimeout,
    )
}


def event_type(name: str) -> type[CallEvent]:
    """The event class for a table event name (KeyError for an unknown one)."""
    return EVENT_TYPES[name]
