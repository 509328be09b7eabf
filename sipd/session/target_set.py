"""The targets of one host name, as the transaction layer tries them (RFC 3263 §4.3).

A :class:`TargetSet` is what :meth:`sipd.session.dialog_core.DialogCore.resolve`
returns for a next hop named by a host name (a call target, the outbound
proxy, the registrar, a peer's Contact): a
:class:`~sipd.sip.transaction_base.Route` the client transaction waits for
and walks. It starts locating at once with the UA's
:class:`~sipd.dns.resolver.Rfc3263Resolver` (NAPTR → SRV → A/AAAA, cached by
TTL, never blocking the reactor) and then holds the ordered targets in a
:class:`~sipd.dns.targets.TargetCursor`: the current one is where the
request, its CANCEL and the ACK of a non-2xx go; on a transport error, a
timeout or a 503 the transaction calls :meth:`TargetSet.failed` and sends a
new transaction to the next one. When none is left, :attr:`TargetSet.error`
names every target tried and why it failed.

IP literals and ``localhost`` never get here: they are addresses at once, so
the hot path (UDP to an IP) costs nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sipd.dns.errors import DnsError
from sipd.dns.records import Transport
from sipd.dns.resolver import Rfc3263Resolver
from sipd.dns.targets import Resolution, Target, TargetCursor
from sipd.errors import CallFailed
from sipd.logs import Logger
from sipd.sip.transaction_base import Addr, Flow, Route
from sipd.sip.uri import Uri

__all__ = ["TargetSet", "address_of"]

_log = Logger()


def address_of(target: Target, *, pinned: bool, domain: str | None = None) -> Addr:
    """The transaction layer's address for ``target``.

    UDP is a plain tuple (a request over 1300 bytes may then take TCP, RFC
    3261 §18.1.1) unless the URI named the transport (``pinned``); TCP and
    TLS are :class:`~sipd.sip.transaction_base.Flow`. A TLS server located
    for ``domain`` must present a certificate for that SIP domain, not for
    the SRV target's host name or its address (RFC 5922 §4.2).
    """
    if target.transport is Transport.UDP and not pinned:
        return (target.host, target.port)
    name = domain if target.transport is Transport.TLS else None
    return Flow(target.host, target.port, target.transport.value, server_name=name)


class TargetSet(Route):
    """A host name's targets: located asynchronously, handed out in order, failed over.

    The tuple value is ``(host, port or 0)`` of the URI, for logs only.
    ``supported`` lists the transports we can send on, in our order of
    preference (RFC 3263 §4.1 uses it when there is no NAPTR).
    """

    uri: Uri
    pinned: bool
    _cursor: TargetCursor | None
    _address: Addr | None
    _error: Exception | None
    _waiters: list[Callable[[], None]] | None

    def __new__(
        cls, uri: Uri, resolver: Rfc3263Resolver, *, supported: Sequence[Transport]
    ) -> TargetSet:
        host = uri.param("maddr") or uri.host
        self = super().__new__(cls, (host, uri.port or 0))
        self.uri = uri
        self.pinned = uri.param("transport") is not None
        self._cursor = None
        self._address = None
        self._error = None
        self._waiters = []
        if host.rstrip(".").lower().endswith(".invalid"):
            # RFC 6761 §6.4: such a name never resolves; do not ask anyone.
            self._settle(
                None,
                DnsError(
                    f"cannot locate {host}: .invalid names never resolve",
                    name=host,
                    rtype=None,
                    cause="invalid name",
                ),
            )
            return self
        resolver.resolve(uri, supported=supported).addCallbacks(self._located, self._unlocatable)
        return self

    def __repr__(self) -> str:
        return f"TargetSet({self.uri!s}, target={self._address!r}, error={self._error!r})"

    # -- Route ------------------------------------------------------------------------
    @property
    def target(self) -> Addr | None:
        return self._address

    @property
    def error(self) -> Exception | None:
        return self._error

    @property
    def located(self) -> bool:
        """Location has finished (with targets or with an error)."""
        return self._waiters is None

    def when_located(self, callback: Callable[[], None]) -> None:
        if self._waiters is None:
            callback()
        else:
            self._waiters.append(callback)

    def failed(self, reason: str) -> Addr | None:
        cursor = self._cursor
        if cursor is None or cursor.current is None:
            return None
        failed = cursor.current
        following = cursor.fail(reason)
        _log.info(
            "{uri}: target {target} failed ({reason}){then}",
            uri=str(self.uri),
            target=str(failed),
            reason=reason,
            then=f"; trying {following}" if following is not None else "; none left",
        )
        if following is None:
            self._address = None
            self._error = CallFailed(
                f"cannot reach {self.uri}: every target failed: {cursor.summary()}"
            )
            return None
        self._address = address_of(following, pinned=self.pinned, domain=self.uri.host)
        return self._address

    @property
    def failures(self) -> int:
        return len(self._cursor.failures) if self._cursor is not None else 0

    def summary(self) -> str:
        return self._cursor.summary() if self._cursor is not None else "no target located"

    @property
    def current(self) -> Target | None:
        """The target being tried (with its DNS name), None before location or after the last."""
        return self._cursor.current if self._cursor is not None else None

    # -- location ---------------------------------------------------------------------
    def _located(self, resolution: Resolution) -> None:
        cursor = resolution.cursor()
        first = cursor.next()
        assert first is not None  # a Resolution has at least one target
        self._cursor = cursor
        self._settle(address_of(first, pinned=self.pinned, domain=self.uri.host), None)

    def _unlocatable(self, failure: Any) -> None:
        error = failure.value
        if not isinstance(error, Exception):
            error = CallFailed(f"cannot locate {self[0]}: {error!r}")
        self._settle(None, error.with_traceback(None))

    def _settle(self, address: Addr | None, error: Exception | None) -> None:
        self._address = address
        self._error = error
        waiters, self._waiters = self._waiters or [], None
        for waiter in waiters:
            try:
                waiter()
            except Exception:
                _log.failure("a request waiting for {uri} failed", uri=str(self.uri))
