"""SIP client transactions over UDP (RFC 3261 §17.1, amended by RFC 6026).

A :class:`ClientTransaction` sends one request, retransmits it on Timer A
(INVITE) or Timer E (non-INVITE) until a response arrives, and hands the
responses that matter to its owner's callbacks. It owns at most two
``IDelayedCall``\\ s — the retransmission timer and the one timer that ends the
current state (B, D, F, K or M) — and cancels both on the way out, so a
terminated transaction leaves nothing on the clock.

The request and the ACK for a non-2xx final response are serialised once; every
retransmission sends the very same ``bytes`` object again.

Transactions are created by :meth:`sipd.sip.transaction.TransactionLayer.send_request`,
which also routes responses to them; do not build them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from sipd.send_errors import SEND_ERRORS, send_error
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response
from sipd.sip.transaction_base import Addr, TimerConfig, is_reliable

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["ClientState", "ClientTransaction", "make_ack_for_non2xx", "make_cancel"]


class _ClientLayer(Protocol):
    """What a client transaction uses of :class:`sipd.sip.transaction.TransactionLayer`."""

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def timers(self) -> TimerConfig: ...

    @property
    def _send(self) -> Callable[[bytes, Addr], None]: ...

    def _client_ended(self, txn: ClientTransaction) -> None: ...


class ClientState(Enum):
    """States of the client transactions (RFC 3261 Figures 5 and 6, RFC 6026 Figure 5)."""

    CALLING = "Calling"  # INVITE only
    TRYING = "Trying"  # non-INVITE only
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"  # INVITE only, RFC 6026 §7.2
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


_CALLING = ClientState.CALLING
_TRYING = ClientState.TRYING
_PROCEEDING = ClientState.PROCEEDING
_ACCEPTED = ClientState.ACCEPTED
_COMPLETED = ClientState.COMPLETED
_TERMINATED = ClientState.TERMINATED


class ClientTransaction:
    """One INVITE or non-INVITE client transaction.

    ``on_response`` receives every provisional response, the first final
    response and, for INVITE, every 2xx (each 2xx retransmission needs its own
    ACK from the TU, RFC 6026 §8.4). ``on_timeout`` is Timer B or F firing.
    ``on_transport_error`` gets what ``send`` raised while the request was
    still unanswered (RFC 3261 §17.1.4), as an ``OSError`` (any refusal of the
    address, :data:`~sipd.send_errors.SEND_ERRORS`, counts); without it, a transport
    error is reported through ``on_timeout`` so the TU still learns the request
    failed. Once a final response has been passed up, a failing send (of the
    ACK, say) just terminates the transaction: the TU already has its outcome
    and must not be told twice.
    """

    __slots__ = (
        "_ack",
        "_interval",
        "_layer",
        "_life",
        "_on_response",
        "_on_timeout",
        "_on_transport_error",
        "_retx",
        "_wire",
        "dest",
        "is_invite",
        "key",
        "proceeding_limit",
        "request",
        "state",
    )

    def __init__(
        self,
        layer: _ClientLayer,
        request: Request,
        dest: Addr,
        key: tuple[str, str],
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
        on_transport_error: Callable[[OSError], None] | None,
    ) -> None:
        self._layer = layer
        self.request = request
        self.dest = dest
        self.key = key
        self.is_invite = request.method == "INVITE"
        self.state = _CALLING if self.is_invite else _TRYING
        self._on_response = on_response
        self._on_timeout = on_timeout
        self._on_transport_error = on_transport_error
        self._wire = request.to_bytes()
        self._ack: bytes | None = None
        self._interval = layer.timers.t1
        self._retx: IDelayedCall | None = None
        self._life: IDelayedCall | None = None
        #: INVITE only: give up this long after entering Proceeding without a
        #: final response (None: wait as long as the TU wants; see limit_proceeding).
        self.proceeding_limit: float | None = None

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.request.method} {self.key[0]} {self.state.value}>"

    # -- called by the layer ------------------------------------------------
    def _start(self) -> None:
        """Send the request and arm Timer A + B (INVITE) or E + F (non-INVITE)."""
        timers = self._layer.timers
        clock = self._layer.clock
        # Arm first, so a send failure finds (and cancels) a consistent state.
        # A reliable transport delivers or fails: no Timer A/E (§17.1.1.2, §17.1.2.2).
        if not is_reliable(self.dest):
            self._retx = clock.callLater(self._interval, self._retransmit)
        self._life = clock.callLater(timers.b, self._timer_b_or_f)  # B == F == 64*T1
        self._transmit(self._wire, before_final=True)

    def _receive(self, response: Response) -> None:
        """A response whose branch and CSeq method match this transaction (§17.1.3)."""
        status = response.status
        state = self.state
        if self.is_invite:
            if state is _CALLING or state is _PROCEEDING:
                if status < 200:
                    if state is _CALLING:
                        # Proceeding has no timers (RFC 3261 §17.1.1.2): from now
                        # on the TU decides how long to wait, and CANCELs.
                        self._stop_timers()
                        self.state = _PROCEEDING
                        self._arm_proceeding_limit()
                    self._on_response(response)
                elif status < 300:
                    self._stop_timers()
                    self.state = _ACCEPTED
                    self._life = self._layer.clock.callLater(self._layer.timers.m, self._end)
                    self._shed()
                    self._on_response(response)
                else:
                    self._stop_timers()
                    self.state = _COMPLETED
                    wait_d = self._wait(self._layer.timers.d)
                    self._life = self._layer.clock.callLater(wait_d, self._end)
                    self._ack = make_ack_for_non2xx(self.request, response).to_bytes()
                    self._shed()
                    self._transmit(self._ack, before_final=False)
                    self._on_response(response)
            elif state is _ACCEPTED:
                if 200 <= status < 300:
                    self._on_response(response)
            elif state is _COMPLETED and status >= 300 and self._ack is not None:
                # A retransmitted final: the server did not get our ACK.
                self._transmit(self._ack, before_final=False)
            return
        if state is _TRYING or state is _PROCEEDING:
            if status < 200:
                self.state = _PROCEEDING
                self._on_response(response)
            else:
                self._stop_timers()
                self.state = _COMPLETED
                wait_k = self._wait(self._layer.timers.k)
                self._life = self._layer.clock.callLater(wait_k, self._end)
                self._shed()
                self._on_response(response)
        # Completed absorbs retransmitted finals; Terminated is not in the table.

    def _wait(self, unreliable: float) -> float:
        """Timer D or K: their UDP value, zero on a reliable transport (§17.1.1.2, §17.1.2.2)."""
        return 0.0 if is_reliable(self.dest) else unreliable

    def _shed(self) -> None:
        """After the final response only matching is left: drop the request's bulk."""
        self.request = self.request.essentials()
        self._wire = b""

    # -- public -------------------------------------------------------------
    def limit_proceeding(self, seconds: float) -> None:
        """INVITE: end the transaction ``seconds`` into Proceeding without a final response.

        RFC 3261 leaves Proceeding without timers, so a peer that sends a
        provisional and then nothing would hold the transaction (and its
        call) for ever. The TU sets a limit where the RFC gives one (§9.1:
        64*T1 after a CANCEL) or where no human is asked (a re-INVITE); when
        it passes, the transaction ends and ``on_timeout`` runs, as for
        Timer B. Already in Proceeding, the limit runs from now.
        """
        self.proceeding_limit = seconds
        if self.state is _PROCEEDING:
            self._arm_proceeding_limit()

    def terminate(self) -> None:
        """End the transaction now: cancel its timers, leave the layer's table.

        No callback runs. The TU uses this when it gives up on a transaction
        (at shutdown, or an INVITE left in Proceeding after its CANCEL went
        unanswered). Calling it again does nothing.
        """
        if self.state is _TERMINATED:
            return
        self._stop_timers()
        self.state = _TERMINATED
        self._layer._client_ended(self)

    def transport_failed(self, error: OSError) -> None:
        """The connection this request went over failed or dropped (TCP/TLS).

        Before a final response the transaction fails at once, as a send
        error would (no 64*T1 wait: the request cannot arrive any more);
        afterwards there is nothing left to fail.
        """
        if self.state is _TERMINATED:
            return
        before_final = self.state in (_CALLING, _TRYING, _PROCEEDING)
        self.terminate()
        if before_final:
            if self._on_transport_error is not None:
                self._on_transport_error(error)
            else:
                self._on_timeout()

    # -- internals ----------------------------------------------------------
    def _stop_timers(self) -> None:
        if self._retx is not None:
            self._retx.cancel()
            self._retx = None
        if self._life is not None:
            self._life.cancel()
            self._life = None

    def _transmit(self, data: bytes, *, before_final: bool) -> bool:
        try:
            self._layer._send(data, self.dest)
        except SEND_ERRORS as caught:
            # Whatever the socket refused (not only OSError: a port above
            # 65535 is an OverflowError), this transaction fails, not the reactor.
            error = send_error(self.dest, caught)
            self.terminate()
            if before_final:
                if self._on_transport_error is not None:
                    self._on_transport_error(error)
                else:
                    self._on_timeout()
            return False
        return True

    def _arm_proceeding_limit(self) -> None:
        limit = self.proceeding_limit
        if limit is not None and self.is_invite and self._life is None:
            self._life = self._layer.clock.callLater(limit, self._timer_b_or_f)

    def _retransmit(self) -> None:
        """Timer A or E fired: send the same bytes again and re-arm."""
        self._retx = None
        if not self._transmit(self._wire, before_final=True):
            return
        timers = self._layer.timers
        if self.is_invite:
            # Timer A doubles without limit: RFC 3261 §17.1.1.2 caps only
            # Timer E and G at T2, so INVITE retransmissions go 0.5, 1, 2, 4,
            # 8, 16 s apart with the default T1 until Timer B fires.
            self._interval *= 2
        elif self.state is _PROCEEDING:
            self._interval = timers.t2  # §17.1.2.2: in Proceeding, E is reset to T2
        else:
            self._interval = min(self._interval * 2, timers.t2)
        self._retx = self._layer.clock.callLater(self._interval, self._retransmit)

    def _timer_b_or_f(self) -> None:
        """Timer B or F: no final response in 64*T1; tell the TU (408 territory)."""
        self._life = None
        self.terminate()
        self._on_timeout()

    def _end(self) -> None:
        """Timer D, K or M: the state that absorbed retransmissions is over."""
        self._life = None
        self.terminate()


def make_ack_for_non2xx(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, method ACK;
    only the INVITE's top Via (so it matches the server transaction); To from
    the response, with the tag the server chose; the INVITE's Route headers.
    """
    h = invite.headers
    out = Headers()
    top_via = h.first_value("Via")
    if top_via is not None:
        out.add("Via", top_via)
    for route in h.get_all("Route"):
        out.add("Route", route)
    out.add("Max-Forwards", "70")
    out.add("From", h.get("From") or "")
    out.add("To", response.headers.get("To") or h.get("To") or "")
    out.add("Call-ID", h.get("Call-ID") or "")
    out.add("CSeq", f"{invite.cseq.number} ACK")
    out.add("Content-Length", "0")
    return Request("ACK", invite.uri, out)


def make_cancel(invite: Request) -> Request:
    """A CANCEL for a pending INVITE (RFC 3261 §9.1).

    Request-URI, Call-ID, From, To (without any tag the INVITE did not have)
    and the CSeq number are the INVITE's, the method is CANCEL; the single top
    Via of the INVITE, so the CANCEL carries the same branch and a server can
    match it to the INVITE; the INVITE's Route headers; Max-Forwards 70. The
    caller sends it with :meth:`TransactionLayer.send_request` — it is a
    non-INVITE transaction of its own — and only after a provisional response
    arrived (§9.1).
    """
    h = invite.headers
    out = Headers()
    top_via = h.first_value("Via")
    if top_via is not None:
        out.add("Via", top_via)
    for route in h.get_all("Route"):
        out.add("Route", route)
    out.add("Max-Forwards", "70")
    out.add("From", h.get("From") or "")
    out.add("To", h.get("To") or "")
    out.add("Call-ID", h.get("Call-ID") or "")
    out.add("CSeq", f"{invite.cseq.number} CANCEL")
    out.add("Content-Length", "0")
    return Request("CANCEL", invite.uri, out)
