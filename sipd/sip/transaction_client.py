"""SIP client transactions over UDP (RFC 3261 §17.1, amended by RFC 6026).

A :class:`ClientTransaction` sends one request, retransmits it on Timer A
(INVITE) or Timer E (non-INVITE) until a response arrives, and hands the
responses that matter to its owner's callbacks. It owns at most two
``IDelayedCall``\\ s — the retransmission timer and the one timer that ends the
current state (B, D, F, K or M) — and cancels both on the way out, so a
terminated transaction leaves nothing on the clock.

The request and the ACK for a non-2xx final response are serialised once; every
retransmission sends the very same ``bytes`` object again.

Where the request goes is decided when it is sent (:meth:`ClientTransaction._go`):
the top Via is made to name the transport actually used (the layer's
``retransport`` hook also fixes our Contact); a request over 1300 bytes whose
address is a plain (default UDP) tuple goes over TCP instead and, if that
connection fails before any response, over UDP after all (RFC 3261 §18.1.1);
and a :class:`~sipd.sip.transaction_base.Route` (a host name located by RFC
3263) is waited for, then its targets are tried in turn: on a transport
error, a timeout before any response or a 503, the same request goes to the
next target as a new transaction (new branch, fresh timers; §4.3). The TU
keeps one transaction object throughout and hears only the last outcome.

Transactions are created by :meth:`sipd.sip.transaction.TransactionLayer.send_request`,
which also routes responses to them; do not build them directly.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from sipd.errors import TransportError
from sipd.send_errors import SEND_ERRORS, send_error
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response
from sipd.sip.transaction_base import Addr, Flow, Route, TimerConfig, is_reliable, transport_of
from sipd.sip.via import MAGIC_COOKIE

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "ClientState",
    "ClientTransaction",
    "Retransport",
    "make_ack_for_non2xx",
    "make_cancel",
    "retransport_via",
    "with_top_via",
]

#: ``(request, transport, contact)`` -> the request as sent over ``transport``:
#: its top Via naming it (and, when ``contact``, our Contact too).
Retransport = Callable[[Request, str, bool], Request]


class _ClientLayer(Protocol):
    """What a client transaction uses of :class:`sipd.sip.transaction.TransactionLayer`."""

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def timers(self) -> TimerConfig: ...

    @property
    def _send(self) -> Callable[[bytes, Addr], None]: ...

    @property
    def retransport(self) -> Retransport: ...

    @property
    def udp_size_limit(self) -> int | None: ...

    def _client_ended(self, txn: ClientTransaction) -> None: ...

    def _rekey(self, txn: ClientTransaction, old_key: tuple[str, str]) -> None: ...

    def _adopt(self, txn: ClientTransaction) -> None: ...


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
        "_udp_fallback",
        "_via_token",
        "_wire",
        "dest",
        "former_branches",
        "is_invite",
        "key",
        "proceeding_limit",
        "request",
        "route",
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
        via_token: str = "UDP",
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
        #: The targets to try when ``dest`` is a host name (RFC 3263), else None.
        self.route: Route | None = dest if isinstance(dest, Route) else None
        #: The transport token of the top Via as it stands ("UDP", "TCP", "TLS").
        self._via_token = via_token
        #: §18.1.1: the UDP address a request moved to TCP for its size falls back to.
        self._udp_fallback: Addr | None = None
        #: Branches this transaction had before failing over (a CANCEL may name them).
        self.former_branches: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.request.method} {self.key[0]} {self.state.value}>"

    # -- called by the layer ------------------------------------------------
    def _start(self) -> None:
        """Arm Timer B (INVITE) or F (non-INVITE) and send, once the address is known."""
        # Arm first, so a send failure finds (and cancels) a consistent state.
        # B == F == 64*T1; for a Route it covers locating the target too.
        self._life = self._layer.clock.callLater(self._layer.timers.b, self._timer_b_or_f)
        route = self.route
        if route is None:
            self._go(self.dest)
        elif route.target is None and route.error is None:
            route.when_located(self._located)
        else:
            self._located()

    def _located(self) -> None:
        """The Route's location finished: send to its first target, or fail."""
        route = self.route
        if route is None or self.state is _TERMINATED:
            return
        target = route.target
        if target is not None:
            self._go(target)
            return
        error = route.error
        self._attempt_failed(TransportError(str(error) if error else f"cannot locate {route[0]}"))

    def _go(self, dest: Addr) -> None:
        """Send the request to ``dest`` over the right transport; arm Timer A or E."""
        self.dest = dest
        try:
            transport = transport_of(dest)
            if transport.upper() != self._via_token:
                self._retransport(transport, contact=True)
            limit = self._layer.udp_size_limit
            if type(dest) is tuple and limit is not None and len(self._wire) > limit:
                # §18.1.1: too large for UDP without a known path MTU; the Via says TCP.
                self._udp_fallback = dest
                self.dest = Flow(dest[0], dest[1], "tcp")
                self._retransport("tcp", contact=False)
        except SEND_ERRORS as caught:
            self._attempt_failed(send_error(dest, caught))
            return
        # A reliable transport delivers or fails: no Timer A/E (§17.1.1.2, §17.1.2.2).
        if not is_reliable(self.dest):
            self._retx = self._layer.clock.callLater(self._interval, self._retransmit)
        self._transmit(self._wire, before_final=True)

    def _retransport(self, transport: str, *, contact: bool) -> None:
        self.request = self._layer.retransport(self.request, transport, contact)
        self._wire = self.request.to_bytes()
        self._via_token = transport.upper()

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
                    ack = make_ack_for_non2xx(self.request, response).to_bytes()
                    if status == 503 and self._elsewhere(response, ack):
                        return
                    self.state = _COMPLETED
                    wait_d = self._wait(self._layer.timers.d)
                    self._life = self._layer.clock.callLater(wait_d, self._end)
                    self._ack = ack
                    self._shed()
                    self._transmit(self._ack, before_final=False)
                    self._on_response(self._summarised(response))
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
                if status == 503 and self._elsewhere(response, None):
                    return
                self.state = _COMPLETED
                wait_k = self._wait(self._layer.timers.k)
                self._life = self._layer.clock.callLater(wait_k, self._end)
                self._shed()
                self._on_response(self._summarised(response))
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
        self._attempt_failed(error)

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
            if before_final:
                self._attempt_failed(error)
            else:
                self.terminate()
            return False
        return True

    # -- failing over (RFC 3261 §18.1.1, RFC 3263 §4.3) -----------------------------
    def _attempt_failed(self, error: OSError) -> None:
        """The request could not be carried: UDP after TCP, the next target, or fail."""
        state = self.state
        if state is _TERMINATED:
            return
        if state is _CALLING or state is _TRYING:
            if self._udp_fallback is not None:
                self._fall_back_to_udp()
                return
            if self.route is not None and self._next_target(f"transport error: {error}"):
                return
        before_final = state is _CALLING or state is _TRYING or state is _PROCEEDING
        self.terminate()
        if not before_final:
            return
        route = self.route
        if route is not None and route.failures > 1:
            error = TransportError(f"every target failed: {route.summary()}")
        if self._on_transport_error is not None:
            self._on_transport_error(error)
        else:
            self._on_timeout()

    def _fall_back_to_udp(self) -> None:
        """§18.1.1: TCP failed for a request that UDP would have carried: send it over UDP."""
        dest, self._udp_fallback = self._udp_fallback, None
        assert dest is not None
        if self._retx is not None:
            self._retx.cancel()
            self._retx = None
        self.dest = dest
        self._retransport("udp", contact=False)
        self._retx = self._layer.clock.callLater(self._interval, self._retransmit)
        self._transmit(self._wire, before_final=True)

    def _next_target(self, reason: str) -> bool:
        """Start over at the Route's next target (a new transaction); False if none is left."""
        assert self.route is not None
        target = self.route.failed(reason)
        if target is None:
            return False
        old_key = self.key
        self._stop_timers()
        branch = MAGIC_COOKIE + secrets.token_hex(8)
        request = self.request
        via = request.top_via.with_param("branch", branch)
        self.request = with_top_via(request, str(via))
        self._wire = self.request.to_bytes()
        self.key = (branch.lower(), old_key[1])
        self.former_branches += (old_key[0],)
        self._layer._rekey(self, old_key)
        self.state = _CALLING if self.is_invite else _TRYING
        self._interval = self._layer.timers.t1
        self._udp_fallback = None
        self._life = self._layer.clock.callLater(self._layer.timers.b, self._timer_b_or_f)
        self._go(target)
        return True

    def _elsewhere(self, response: Response, ack: bytes | None) -> bool:
        """A 503 (RFC 3263 §4.3): try the next target; True when the request went there.

        The 503 of an INVITE is ACKed first; over UDP a transaction stays
        behind in Completed (Timer D) to ACK its retransmissions.
        """
        if self.route is None or self.route.failures >= _MAX_TARGETS:
            return False
        old_key, old_dest = self.key, self.dest
        essentials = self.request.essentials()
        if not self._next_target(f"{response.status} {response.reason}"):
            return False
        if ack is not None:
            ghost = ClientTransaction(
                self._layer, essentials, old_dest, old_key, _ignore, _nothing, None
            )
            ghost.state = _COMPLETED
            ghost._ack = ack
            ghost._wire = b""
            if not is_reliable(old_dest):
                ghost._life = self._layer.clock.callLater(self._layer.timers.d, ghost._end)
                self._layer._adopt(ghost)
            ghost._transmit(ack, before_final=False)
        return True

    def _summarised(self, response: Response) -> Response:
        """The final response, its reason naming every target tried when several failed."""
        route = self.route
        if route is None or route.failures < 2 or response.status != 503:
            return response
        reason = f"{response.reason} (every target failed: {route.summary()})"
        return dataclasses.replace(response, reason=reason)

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
        """Timer B or F: no final response in 64*T1; tell the TU (408 territory).

        With a Route and no response at all, the next target is tried first;
        when several targets failed, the TU hears a transport error that
        lists them instead of a bare timeout.
        """
        self._life = None
        route = self.route
        if route is not None and (self.state is _CALLING or self.state is _TRYING):
            if self._next_target("no response (timeout)"):
                return
            if route.failures > 1:
                self.terminate()
                error = TransportError(f"every target failed: {route.summary()}")
                if self._on_transport_error is not None:
                    self._on_transport_error(error)
                    return
                self._on_timeout()
                return
        self.terminate()
        self._on_timeout()

    def _end(self) -> None:
        """Timer D, K or M: the state that absorbed retransmissions is over."""
        self._life = None
        self.terminate()


#: A 503 hands a request on to at most this many targets (a bound on a loop of 503s).
_MAX_TARGETS = 16


def _ignore(response: Response) -> None:
    """The callback of a transaction left behind to ACK a 503: nobody listens."""


def _nothing() -> None:
    """The timeout callback of such a transaction."""


def with_top_via(request: Request, via: str) -> Request:
    """A copy of ``request`` whose top Via is ``via`` (the other headers shared by value)."""
    headers = request.headers.copy()
    headers.pop_first_value("Via")
    headers.prepend("Via", via)
    return Request(request.method, request.uri, headers, request.body)


def retransport_via(request: Request, transport: str, contact: bool) -> Request:
    """``request`` with its top Via naming ``transport`` (RFC 3261 §18.1.1).

    The layer's default ``retransport``: the transaction layer alone does
    not know our Contact or the port of each transport, so ``contact`` is
    ignored here; the dialog layer installs a hook that rewrites both.
    """
    via = request.top_via
    token = transport.upper()
    if via.transport == token:
        return request
    return with_top_via(request, str(dataclasses.replace(via, transport=token)))


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
