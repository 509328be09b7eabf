"""The SIP transaction layer (RFC 3261 §17, RFC 6026), sans-I/O.

:class:`TransactionLayer` sits between the transport and the transaction user
(the dialog layer). The transport hands it every parsed message through
:meth:`TransactionLayer.receive`; it matches responses to client transactions
(§17.1.3) and requests to server transactions (§17.2.3, including the RFC 2543
fallback for peers whose branch lacks the magic cookie), absorbs
retransmissions, and calls the :class:`TransactionUser` only for what is new.
Bytes go out through an injected ``send(data, addr)`` and time comes from an
injected ``IReactorTime``, so every timer is testable with ``task.Clock``.

The transactions themselves live in :mod:`sipd.sip.transaction_client` and
:mod:`sipd.sip.transaction_server`, the timer values and ``Addr`` in
:mod:`sipd.sip.transaction_base`; their names are re-exported here.

Over UDP requests and non-2xx finals are retransmitted and the wait timers
(D, I, J, K) run; an address that is a :class:`Flow` (TCP or TLS) is reliable:
no retransmission, those timers are zero, responses go back on the request's
connection (§18.2.2), and a connection that fails fails its transactions at
once (:meth:`TransactionLayer.connection_failed`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol, TypeAlias

from twisted.internet.interfaces import IReactorTime

from sipd.errors import TransactionError
from sipd.logs import Logger
from sipd.sip.errors import SipParseError
from sipd.sip.message import Request, Response, make_response
from sipd.sip.transaction_base import (
    DEFAULT_TIMERS,
    UDP_SIZE_LIMIT,
    Addr,
    Flow,
    Route,
    TimerConfig,
    is_reliable,
    transport_of,
)
from sipd.sip.transaction_client import (
    ClientState,
    ClientTransaction,
    Retransport,
    make_ack_for_non2xx,
    make_cancel,
    retransport_via,
    with_top_via,
)
from sipd.sip.transaction_server import ServerState, ServerTransaction
from sipd.sip.via import MAGIC_COOKIE, Via, response_address

__all__ = [
    "DEFAULT_TIMERS",
    "Addr",
    "ClientState",
    "ClientTransaction",
    "Flow",
    "Retransport",
    "Route",
    "ServerState",
    "ServerTransaction",
    "TimerConfig",
    "TransactionError",
    "TransactionLayer",
    "TransactionUser",
    "is_reliable",
    "make_ack_for_non2xx",
    "make_cancel",
    "new_branch",
    "transport_of",
]

#: Server transaction states in which a lost connection still matters to the TU.
_STILL_ANSWERING = frozenset({ServerState.TRYING, ServerState.PROCEEDING, ServerState.ACCEPTED})

_log = Logger()


class TransactionUser(Protocol):
    """What the transaction layer calls upward (the dialog layer implements it)."""

    def request_received(self, request: Request, source: Addr, txn: ServerTransaction) -> None:
        """A new request other than ACK and CANCEL; answer it with ``txn.respond``.

        For an INVITE the layer sends 100 Trying after this returns unless a
        response was sent already. If this raises before a final response was
        sent, the layer answers 500 (or the ``status`` of a ``SipParseError``).
        """

    def ack_received(self, request: Request, source: Addr) -> None:
        """An ACK that is not for a non-2xx final response: the ACK for a 2xx."""

    def cancel_received(
        self,
        cancel: Request,
        source: Addr,
        cancel_txn: ServerTransaction,
        invite_txn: ServerTransaction | None,
    ) -> None:
        """A new CANCEL and the INVITE server transaction it targets (§9.2), if any.

        The TU answers the CANCEL on ``cancel_txn`` (200, or 481 when
        ``invite_txn`` is None) and, if the INVITE is still in Proceeding,
        answers it 487.
        """

    def stray_response_received(self, response: Response, source: Addr) -> None:
        """A response no client transaction claims (e.g. a retransmitted 2xx to INVITE)."""

    def server_transaction_timeout(self, txn: ServerTransaction) -> None:
        """Timer H fired: the ACK to a non-2xx final response never arrived."""

    def server_transport_error(self, txn: ServerTransaction, error: OSError) -> None:
        """Sending a response failed (§17.2.4); ``txn`` is already terminated."""


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 64 random bits in hex."""
    return MAGIC_COOKIE + secrets.token_hex(8)


_ClientKey: TypeAlias = tuple[str, str]
_ServerKey: TypeAlias = tuple[object, ...]


def _legacy_key(request: Request, via: Via, method: str, to_tag: str | None) -> _ServerKey:
    """The RFC 2543 matching key (§17.2.3): Request-URI, tags, Call-ID, CSeq, top Via."""
    return (
        request.uri,
        to_tag,
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        method,
        via,
    )


class TransactionLayer:
    """Client and server transactions of one UDP transport.

    ``send(data, addr)`` puts a datagram on the wire and may raise ``OSError``;
    ``tu`` receives what the transactions do not absorb. Terminated
    transactions leave the tables at once, so :attr:`client_count` and
    :attr:`server_count` drop to zero when all traffic has settled.
    """

    __slots__ = (
        "_acks",
        "_clients",
        "_moved",
        "_send",
        "_servers",
        "clock",
        "on_empty",
        "retransport",
        "timers",
        "tu",
        "udp_size_limit",
    )

    def __init__(
        self,
        clock: IReactorTime,
        send: Callable[[bytes, Addr], None],
        tu: TransactionUser,
        timers: TimerConfig = DEFAULT_TIMERS,
    ) -> None:
        self.clock = clock
        self._send = send
        self.tu = tu
        self.timers = timers
        self._clients: dict[_ClientKey, ClientTransaction] = {}
        self._servers: dict[_ServerKey, ServerTransaction] = {}
        # RFC 2543 only: ACK keys (To tag of our final) -> INVITE transaction.
        self._acks: dict[_ServerKey, ServerTransaction] = {}
        #: Called when the last transaction ends (the UA has gone quiet).
        self.on_empty: Callable[[], None] | None = None
        #: Makes a request's top Via (and the TU's Contact) name the transport it
        #: is sent over; the dialog layer installs one that knows our Contact.
        self.retransport: Retransport = retransport_via
        #: RFC 3261 §18.1.1: requests larger than this go over TCP rather than
        #: default UDP (None: never; for a UA that cannot open TCP).
        self.udp_size_limit: int | None = UDP_SIZE_LIMIT
        #: Branch of a client transaction before it failed over -> the transaction.
        self._moved: dict[str, ClientTransaction] = {}

    @property
    def client_count(self) -> int:
        """Client transactions not yet terminated."""
        return len(self._clients)

    @property
    def server_count(self) -> int:
        """Server transactions not yet terminated."""
        return len(self._servers)

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- client side ----------------------------------------------------------
    def send_request(
        self,
        request: Request,
        dest: Addr,
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
        on_transport_error: Callable[[OSError], None] | None = None,
        *,
        proceeding_limit: float | None = None,
    ) -> ClientTransaction:
        """Start a client transaction: send ``request`` to ``dest`` now.

        The request must already carry its top Via with an RFC 3261 branch
        (:func:`new_branch`). ACK is never sent through a transaction: the ACK
        for a non-2xx is built here, the ACK for a 2xx is the TU's own. If the
        first send fails, the error callback runs before this returns and the
        returned transaction is already terminated. ``proceeding_limit``: see
        :meth:`ClientTransaction.limit_proceeding`.
        """
        method = request.method
        if method == "ACK":
            raise TransactionError("ACK is sent without a client transaction (RFC 3261 §17.1)")
        top_via = request.top_via
        branch = top_via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise TransactionError(
                f"{method} needs a top Via branch starting with {MAGIC_COOKIE}; use new_branch()"
            )
        via_token = top_via.transport.upper()
        if method == "CANCEL":
            request, dest = self._cancel_route(request, dest, branch.lower())
            branch = request.top_via.branch or branch
        key = (branch.lower(), method)
        if key in self._clients:
            raise TransactionError(f"a {method} client transaction with branch {branch} exists")
        txn = ClientTransaction(
            self, request, dest, key, on_response, on_timeout, on_transport_error, via_token
        )
        txn.proceeding_limit = proceeding_limit
        self._clients[key] = txn
        txn._start()
        return txn

    def _cancel_route(self, cancel: Request, dest: Addr, branch: str) -> tuple[Request, Addr]:
        """A CANCEL goes where its INVITE went, with the INVITE's Via as sent (§9.1).

        The INVITE's transaction may have moved on since the TU built the
        CANCEL from it: to another target with a new branch (RFC 3263 §4.3),
        or to another transport (§18.1.1).
        """
        invite = self._moved.get(branch) or self._clients.get((branch, "INVITE"))
        if invite is None or invite.state is ClientState.TERMINATED:
            return cancel, dest
        sent = invite.request.headers.first_value("Via")
        if sent is not None and sent != cancel.headers.first_value("Via"):
            cancel = with_top_via(cancel, sent)
        if not isinstance(invite.dest, Route):
            dest = invite.dest
        return cancel, dest

    # -- the single entry point from the transport ------------------------------
    def receive(self, message: Request | Response, source: Addr) -> None:
        """Route one parsed message from the transport.

        Raises :class:`~sipd.sip.errors.SipParseError` when a header needed
        for matching (top Via, CSeq, From/To for RFC 2543 peers) does not
        parse; nothing has changed then, and the transport answers or drops
        the message as it does for any parse error.
        """
        if isinstance(message, Response):
            self._receive_response(message, source)
        else:
            self._receive_request(message, source)

    def _receive_response(self, response: Response, source: Addr) -> None:
        branch = response.top_via.branch
        txn = None
        if branch is not None:
            txn = self._clients.get((branch.lower(), response.cseq.method))
        if txn is None:
            self.tu.stray_response_received(response, source)
        else:
            txn._receive(response)

    def has_server_transaction(self, request: Request) -> bool:
        """True when ``request`` is a retransmission of one a server transaction holds."""
        via = request.top_via
        branch = via.branch
        method = "INVITE" if request.method == "ACK" else request.method
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            key = _legacy_key(request, via, method, request.to.tag)
        else:
            host, port = via.sent_by
            key = (branch.lower(), host.lower(), port, method)
        return key in self._servers

    def _receive_request(self, request: Request, source: Addr) -> None:
        method = request.method
        via = request.top_via
        branch = via.branch
        matched_method = "INVITE" if method == "ACK" else method
        legacy = branch is None or not branch.startswith(MAGIC_COOKIE)
        if legacy:
            if method == "ACK":
                key = _legacy_key(request, via, "INVITE", request.to.tag)
                txn = self._acks.get(key)
            else:
                key = _legacy_key(request, via, method, request.to.tag)
                txn = self._servers.get(key)
        else:
            assert branch is not None
            host, port = via.sent_by
            key = (branch.lower(), host.lower(), port, matched_method)
            txn = self._servers.get(key)

        if method == "ACK":
            if txn is not None and txn.is_invite:
                txn._receive_ack(request, source)
            else:
                self.tu.ack_received(request, source)
            return
        if txn is not None:
            txn._receive_retransmission()
            return

        # §18.2.2: over TCP/TLS the response goes back on the request's connection.
        dest = source if is_reliable(source) else response_address(via, source)
        txn = ServerTransaction(self, request, source, dest, key, legacy=legacy)
        self._servers[key] = txn
        try:
            if method == "CANCEL":
                # §9.2: the INVITE with the same branch and sent-by (or, for
                # RFC 2543 peers, the same matching headers but the method).
                if legacy:
                    invite_key = _legacy_key(request, via, "INVITE", request.to.tag)
                else:
                    invite_key = (*key[:3], "INVITE")
                invite_txn = self._servers.get(invite_key)
                self.tu.cancel_received(request, source, txn, invite_txn)
            else:
                self.tu.request_received(request, source, txn)
        except Exception as error:
            self._tu_failed(txn, error)
            return
        if txn.state is ServerState.PROCEEDING and txn.last_status is None and txn.is_invite:
            txn._send_trying()

    def _tu_failed(self, txn: ServerTransaction, error: Exception) -> None:
        """The TU raised on a new request: answer it so the peer is not left hanging.

        Without this the transaction would sit in Trying/Proceeding forever,
        since neither state has a timer on the server side.
        """
        if isinstance(error, SipParseError):
            # Remote input: a header parsed late turned out malformed. Not our bug.
            _log.debug(
                "{method} from {source} has a bad header: {reason}",
                method=txn.request.method,
                source=txn.source,
                reason=error.reason,
            )
        else:
            _log.failure(
                "transaction user failed on {method} from {source}",
                method=txn.request.method,
                source=txn.source,
            )
        if txn.state is ServerState.TRYING or txn.state is ServerState.PROCEEDING:
            if isinstance(error, SipParseError):
                status, reason = error.status, error.reason
            else:
                status, reason = 500, "Server Internal Error"
            txn.respond(make_response(txn.request, status, reason, to_tag=secrets.token_hex(4)))

    # -- shutdown --------------------------------------------------------------
    def close(self) -> None:
        """Terminate every transaction without callbacks (service stop)."""
        for client in list(self._clients.values()):
            client.terminate()
        for server in list(self._servers.values()):
            server.terminate()

    def connection_failed(self, addr: Addr, error: OSError) -> None:
        """A TCP/TLS connection to ``addr`` failed or dropped: fail what rode on it.

        Client transactions sent there fail at once with ``error`` (their TU
        sees a transport error, not a timeout 64*T1 later); server transactions
        whose responses would go there end, and their TU is told when a
        response was still to come (Trying, Proceeding) or a 2xx awaits its
        ACK (Accepted). One that has sent its final response just ends: the
        peer closing a connection after its transactions is normal.
        """
        kind = transport_of(addr)
        failed = [c for c in self._clients.values() if c.dest == addr]
        for client in [c for c in failed if transport_of(c.dest) == kind]:
            client.transport_failed(error)
        for server in [t for t in self._servers.values() if t.dest == addr]:
            pending = server.state in _STILL_ANSWERING
            server.terminate()
            if pending:
                self.tu.server_transport_error(server, error)

    # -- called by the transactions ----------------------------------------------
    def _rekey(self, txn: ClientTransaction, old_key: tuple[str, str]) -> None:
        """``txn`` failed over to a new branch (RFC 3263 §4.3): file it under its new key."""
        if self._clients.get(old_key) is txn:
            del self._clients[old_key]
        self._clients[txn.key] = txn
        self._moved[old_key[0]] = txn

    def _adopt(self, txn: ClientTransaction) -> None:
        """File a transaction left behind by a failover (it ACKs a 503's retransmissions)."""
        self._clients[txn.key] = txn

    def _client_ended(self, txn: ClientTransaction) -> None:
        for branch in txn.former_branches:
            if self._moved.get(branch) is txn:
                del self._moved[branch]
        if self._clients.get(txn.key) is txn:
            del self._clients[txn.key]
            if not self._clients and not self._servers and self.on_empty is not None:
                self.on_empty()

    def _server_ended(self, txn: ServerTransaction) -> None:
        if self._servers.get(txn.key) is txn:
            del self._servers[txn.key]
        ack_key = txn._ack_key
        if ack_key is not None and self._acks.get(ack_key) is txn:
            del self._acks[ack_key]
        if not self._clients and not self._servers and self.on_empty is not None:
            self.on_empty()

    def _add_ack_key(self, txn: ServerTransaction, final: Response) -> None:
        """RFC 2543: the ACK to ``final`` will carry its To tag; file that key too."""
        key = txn.key
        ack_key = (key[0], final.to.tag, *key[2:])
        txn._ack_key = ack_key
        self._acks[ack_key] = txn
