"""SIP server transactions over UDP (RFC 3261 §17.2, amended by RFC 6026).

A :class:`ServerTransaction` is created by the transaction layer for each new
request and handed to the TU, which answers through :meth:`ServerTransaction.respond`.
The transaction absorbs retransmitted requests (re-sending the last response
where the state machine says so), retransmits a non-2xx final INVITE response
on Timer G until the ACK comes, and ends itself on Timer H, I, J or L.

Each response is serialised once, when the TU hands it over; retransmissions
send the same ``bytes`` object again. Like the client side, a transaction owns
at most two ``IDelayedCall``\\ s and cancels them when it terminates.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from sipd.errors import TransactionError
from sipd.send_errors import SEND_ERRORS, send_error
from sipd.sip.message import Request, Response, make_response
from sipd.sip.transaction_base import Addr, TimerConfig, is_reliable

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["ServerState", "ServerTransaction"]


class _ServerUser(Protocol):
    """What a server transaction reports to the transaction user."""

    def ack_received(self, request: Request, source: Addr) -> None: ...

    def server_transaction_timeout(self, txn: ServerTransaction) -> None: ...

    def server_transport_error(self, txn: ServerTransaction, error: OSError) -> None: ...


class _ServerLayer(Protocol):
    """What a server transaction uses of :class:`sipd.sip.transaction.TransactionLayer`."""

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def timers(self) -> TimerConfig: ...

    @property
    def tu(self) -> _ServerUser: ...

    @property
    def _send(self) -> Callable[[bytes, Addr], None]: ...

    def _server_ended(self, txn: ServerTransaction) -> None: ...

    def _add_ack_key(self, txn: ServerTransaction, final: Response) -> None: ...


class ServerState(Enum):
    """States of the server transactions (RFC 3261 Figures 7 and 8, RFC 6026 Figure 7)."""

    TRYING = "Trying"  # non-INVITE only
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"  # INVITE only, RFC 6026 §7.1
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"  # INVITE only
    TERMINATED = "Terminated"


_TRYING = ServerState.TRYING
_PROCEEDING = ServerState.PROCEEDING
_ACCEPTED = ServerState.ACCEPTED
_COMPLETED = ServerState.COMPLETED
_CONFIRMED = ServerState.CONFIRMED
_TERMINATED = ServerState.TERMINATED


class ServerTransaction:
    """One INVITE or non-INVITE server transaction.

    ``request`` is the request that created it, ``source`` the address it came
    from, ``dest`` where responses go (RFC 3261 §18.2.2 with RFC 3581 rport),
    ``key`` its entry in the layer's table and ``state`` a :class:`ServerState`.
    ``last_status`` is the status of the last response sent, or None.
    """

    __slots__ = (
        "_ack_key",
        "_interval",
        "_layer",
        "_legacy",
        "_life",
        "_retx",
        "_wire",
        "dest",
        "is_invite",
        "key",
        "last_status",
        "request",
        "source",
        "state",
    )

    def __init__(
        self,
        layer: _ServerLayer,
        request: Request,
        source: Addr,
        dest: Addr,
        key: tuple[object, ...],
        legacy: bool = False,
    ) -> None:
        self._layer = layer
        self.request = request
        self.source = source
        self.dest = dest
        self.key = key
        self.is_invite = request.method == "INVITE"
        self.state = _PROCEEDING if self.is_invite else _TRYING
        self.last_status: int | None = None
        # Bytes of the last response to re-send on a retransmitted request
        # (Proceeding: the last provisional; Completed: the final).
        self._wire: bytes | None = None
        self._interval = 0.0
        self._retx: IDelayedCall | None = None
        self._life: IDelayedCall | None = None
        # RFC 2543 peers (no magic cookie) are matched on several headers, and
        # their ACK carries the To tag of our final response (§17.2.3): the
        # layer files that extra key under ``_ack_key`` when the final is sent.
        self._legacy = legacy
        self._ack_key: tuple[object, ...] | None = None

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.request.method} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        """The transaction has ended (a response that could not be sent ends it at once)."""
        return self.state is _TERMINATED

    # -- public -------------------------------------------------------------
    def respond(self, response: Response) -> None:
        """Send ``response`` and move the state machine on.

        Raises :class:`TransactionError` for a response the current state does
        not allow: anything after a non-2xx final, a non-2xx after a 2xx, or
        any response once terminated. Additional 2xx to an INVITE are allowed
        in Accepted (RFC 6026 §7.1): the dialog layer retransmits its 2xx
        through here until the ACK arrives.
        """
        status = response.status
        state = self.state
        if state is _TRYING or state is _PROCEEDING:
            data = response.to_bytes()
            self.last_status = status
            layer = self._layer
            if status < 200:
                self.state = _PROCEEDING
                self._wire = data
            elif not self.is_invite:
                self.state = _COMPLETED
                self._wire = data
                self._life = layer.clock.callLater(self._wait(layer.timers.j), self._end)
            elif status < 300:
                self.state = _ACCEPTED
                self._wire = None  # Accepted absorbs retransmitted INVITEs
                self._life = layer.clock.callLater(layer.timers.l, self._end)
                if self._legacy:
                    layer._add_ack_key(self, response)
            else:
                self.state = _COMPLETED
                self._wire = data
                self._interval = layer.timers.t1
                if not is_reliable(self.dest):  # no Timer G on a reliable transport
                    self._retx = layer.clock.callLater(self._interval, self._timer_g)
                self._life = layer.clock.callLater(layer.timers.h, self._timer_h)
                if self._legacy:
                    layer._add_ack_key(self, response)
            if status >= 200:
                # From here on only the matching key and the response bytes
                # matter; the transaction outlives its call by up to 64*T1, so
                # holding the whole request (body, raw bytes, every header)
                # would dominate memory at high call rates.
                self.request = self.request.essentials()
            self._transmit(data)
            return
        if state is _ACCEPTED and 200 <= status < 300:
            self.last_status = status
            self._transmit(response.to_bytes())
            return
        raise TransactionError(
            f"cannot send {status} on the {self.request.method} server transaction "
            f"in state {state.value}"
        )

    def terminate(self) -> None:
        """End the transaction now: cancel its timers, leave the layer's table.

        No callback runs; for shutdown. Calling it again does nothing.
        """
        if self.state is _TERMINATED:
            return
        if self._retx is not None:
            self._retx.cancel()
            self._retx = None
        if self._life is not None:
            self._life.cancel()
            self._life = None
        self.state = _TERMINATED
        self._layer._server_ended(self)

    # -- called by the layer ------------------------------------------------
    def _wait(self, unreliable: float) -> float:
        """Timer I or J: their UDP value, zero on a reliable transport (§17.2.1, §17.2.2)."""
        return 0.0 if is_reliable(self.dest) else unreliable

    def _send_trying(self) -> None:
        """The automatic 100 Trying for an INVITE the TU has not answered (§17.2.1)."""
        self.respond(make_response(self.request, 100))

    def _receive_retransmission(self) -> None:
        """The request again: re-send the last provisional or the final response."""
        data = self._wire
        if data is not None and (self.state is _PROCEEDING or self.state is _COMPLETED):
            self._transmit(data)

    def _receive_ack(self, ack: Request, source: Addr) -> None:
        state = self.state
        if state is _COMPLETED and self.is_invite:
            retx, life = self._retx, self._life
            if retx is not None:
                retx.cancel()
                self._retx = None
            if life is not None:
                life.cancel()
            self.state = _CONFIRMED
            self._life = self._layer.clock.callLater(self._wait(self._layer.timers.i), self._end)
        elif state is _ACCEPTED:
            # RFC 6026 §8.7: the ACK for a 2xx belongs to the TU (the dialog).
            self._layer.tu.ack_received(ack, source)
        # Confirmed absorbs ACK retransmissions; Proceeding has no use for one.

    # -- internals ----------------------------------------------------------
    def _transmit(self, data: bytes) -> None:
        try:
            self._layer._send(data, self.dest)
        except SEND_ERRORS as caught:
            # RFC 3261 §17.2.4: terminate and inform the TU. Any refusal
            # counts (a Via's rport=65536 is an OverflowError, not an OSError).
            self.terminate()
            self._layer.tu.server_transport_error(self, send_error(self.dest, caught))

    def _timer_g(self) -> None:
        """Timer G: re-send the non-2xx final, doubling the interval up to T2."""
        self._retx = None
        data = self._wire
        assert data is not None
        self._interval = min(self._interval * 2, self._layer.timers.t2)
        self._retx = self._layer.clock.callLater(self._interval, self._timer_g)
        self._transmit(data)

    def _timer_h(self) -> None:
        """Timer H: the ACK never came (§17.2.1); the TU learns the call failed."""
        self._life = None
        self.terminate()
        self._layer.tu.server_transaction_timeout(self)

    def _end(self) -> None:
        """Timer I, J or L: stop absorbing retransmissions."""
        self._life = None
        self.terminate()
