"""One INVITE usage and the state of its INVITE transaction.

A :class:`CallLeg` is what the dialog adapter keeps per call: the INVITE,
its client or server transaction, the dialog it created, and the bytes and
timers of the 2xx/ACK exchange. Its key (``Call-ID;local-tag``) is the
dialog id the :class:`~sipd.session.registry.SessionRegistry` maps to a
session.

Where the leg's INVITE stands is one :class:`LegState`, not a set of flags:
the flags (provisional seen, cancel asked, cancel sent, final status known,
released) could only be combined in a few meaningful ways, and naming those
ways makes each of the adapter's RFC checks read as a state test.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import Enum

from twisted.internet.interfaces import IDelayedCall

from sipd.errors import CallFailed
from sipd.session.addressing import ip_address_of
from sipd.sip.dialog import Dialog, DialogRole
from sipd.sip.message import Request
from sipd.sip.transaction import Addr, ClientTransaction, ServerTransaction

__all__ = ["CallLeg", "LegState", "resolve_host"]


class LegState(Enum):
    """Where a leg's INVITE transaction stands.

    UAC legs start in ``CALLING``, UAS legs in ``INCOMING``::

        CALLING --1xx--> PROCEEDING --cancel()--> CANCELLING
        CALLING --cancel()--> CANCEL_PENDING --1xx--> CANCELLING
        CALLING, PROCEEDING, CANCEL_PENDING, CANCELLING --2xx--> ANSWERED
        CALLING, PROCEEDING, CANCEL_PENDING, CANCELLING --3xx-6xx, timeout--> COMPLETED
        INCOMING --answer()--> ANSWERED
        INCOMING --reject()--> COMPLETED
        COMPLETED --late 2xx (UAC)--> ANSWERED
        any --release()--> ENDED

    ``ENDED`` is final: a leg once released stays released, so nothing a
    late response does can make it deliver events again.
    """

    #: UAC: the INVITE is sent and nothing came back yet; a CANCEL must wait (§9.1).
    CALLING = "calling"
    #: UAC: a provisional response (100 Trying included) came; a CANCEL may go.
    PROCEEDING = "proceeding"
    #: UAC: the call was cancelled before any provisional; the CANCEL goes with the first one.
    CANCEL_PENDING = "cancel-pending"
    #: UAC: the CANCEL is sent; the INVITE still waits for its final response (487 or 2xx).
    CANCELLING = "cancelling"
    #: UAS: the INVITE arrived and is not answered yet (a CANCEL still applies to it).
    INCOMING = "incoming"
    #: A 2xx was sent (UAS) or received (UAC): the final status is known.
    ANSWERED = "answered"
    #: A 3xx-6xx was sent or received, or the INVITE timed out: the final status is known.
    COMPLETED = "completed"
    #: Released: the leg delivers no more events; late messages are absorbed or get 481.
    ENDED = "ended"

    @property
    def unanswered(self) -> bool:
        """The INVITE has no final response yet (and the leg is not released)."""
        return self in _UNANSWERED

    @property
    def cancel_requested(self) -> bool:
        """Our INVITE is being cancelled: the CANCEL waits or is sent."""
        return self is LegState.CANCEL_PENDING or self is LegState.CANCELLING


_UNANSWERED = frozenset(
    {
        LegState.CALLING,
        LegState.PROCEEDING,
        LegState.CANCEL_PENDING,
        LegState.CANCELLING,
        LegState.INCOMING,
    }
)


class CallLeg:
    """One INVITE usage: the transactions, the dialog and their timers."""

    __slots__ = (
        "ack_bytes",
        "ack_dest",
        "call_id",
        "client_txn",
        "dest",
        "dialog",
        "final_status",
        "invite",
        "invites_waiting",
        "key",
        "local_tag",
        "ok_bytes",
        "ok_deadline",
        "ok_dest",
        "ok_interval",
        "ok_timer",
        "replaces",
        "role",
        "server_txn",
        "source",
        "state",
    )

    def __init__(self, role: DialogRole, call_id: str, local_tag: str, invite: Request) -> None:
        self.role = role
        self.call_id = call_id
        self.local_tag = local_tag
        self.key = f"{call_id};{local_tag}"
        self.invite = invite
        self.state = LegState.CALLING if role is DialogRole.UAC else LegState.INCOMING
        #: Our in-dialog INVITEs waiting for the one in progress (RFC 3261 §14.1
        #: allows one at a time); None while no re-INVITE of ours is out.
        self.invites_waiting: deque[Callable[[], None]] | None = None
        #: The INVITE's final status once known (``state`` says what it means).
        self.final_status: int | None = None
        self.dest: Addr = ("", 0)
        self.source: Addr = ("", 0)
        self.client_txn: ClientTransaction | None = None
        self.server_txn: ServerTransaction | None = None
        self.dialog: Dialog | None = None
        # UAC: the ACK for our 2xx, kept to answer its retransmissions (§13.2.2.4).
        self.ack_bytes: bytes | None = None
        self.ack_dest: Addr = ("", 0)
        # UAS: the 2xx we retransmit until its ACK (§13.3.1.4), and its timers.
        self.ok_bytes: bytes | None = None
        self.ok_timer: IDelayedCall | None = None
        self.ok_deadline: IDelayedCall | None = None
        self.ok_interval = 0.0
        self.ok_dest: Addr | None = None
        #: The confirmed leg a new INVITE's Replaces header names (RFC 3891).
        self.replaces: CallLeg | None = None

    def __repr__(self) -> str:
        return f"<CallLeg {self.role.value} {self.key} {self.state.value}>"

    @property
    def remote_tag(self) -> str | None:
        """The peer's tag, once a dialog exists."""
        return self.dialog.id.remote_tag if self.dialog else None

    @property
    def ended(self) -> bool:
        """The leg was released."""
        return self.state is LegState.ENDED

    def settle(self, status: int) -> None:
        """Record the INVITE's final ``status``: ANSWERED for a 2xx, else COMPLETED.

        A released leg keeps the status but stays ``ENDED``.
        """
        self.final_status = status
        if self.state is not LegState.ENDED:
            self.state = LegState.ANSWERED if 200 <= status < 300 else LegState.COMPLETED


def resolve_host(host: str) -> str:
    """An IP address for ``host``: IP literals as they are, ``localhost`` as 127.0.0.1.

    Never blocks: a host name raises :class:`~sipd.errors.CallFailed`, since
    names are located by RFC 3263 (NAPTR, SRV, A/AAAA) without blocking the
    reactor, through :meth:`sipd.session.dialog_core.DialogCore.resolve`.
    """
    address = ip_address_of(host)
    if address is None:
        raise CallFailed(
            f"cannot resolve host {host!r} here: host names are located by RFC 3263 "
            "(DialogCore.resolve) so that nothing blocks"
        )
    return address
