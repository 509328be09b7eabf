"""Client registration (RFC 3261 §10): REGISTER, refresh, back-off, un-REGISTER.

A :class:`Registration` keeps one address-of-record bound to our contact at a
registrar. It answers digest challenges (401/407) with the configured
credentials, refreshes before the granted expiry runs out, retries with
exponential back-off while the registrar is unreachable or busy, and removes
the binding (``Expires: 0``) when stopped. Wrong credentials end it with an
:class:`~sipd.errors.AuthenticationError` rather than a retry loop.
"""

from __future__ import annotations

import enum
import secrets
from typing import TYPE_CHECKING, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from sipd.errors import AuthenticationError, CallError, RegistrationError
from sipd.logs import Logger
from sipd.sip.address import NameAddr
from sipd.sip.auth import DigestClient, parse_credentials
from sipd.sip.errors import BadRequest, SipParseError
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response
from sipd.sip.uri import Uri

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from sipd.config import SipdConfig
    from sipd.session.dialog_adapter import DialogAdapter
    from sipd.sip.transaction import TransactionLayer

__all__ = ["Registration", "RegistrationState"]

_log = Logger()

#: Refresh when this share of the granted time has passed (and at least 5 s early).
_REFRESH_AT = 0.8
_BACKOFF_FIRST = 2.0
_BACKOFF_MAX = 300.0
#: Statuses after which trying again later may help.
_TEMPORARY = frozenset({408, 480, 500, 502, 503, 504})


class RegistrationState(enum.Enum):
    """Where a registration stands."""

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    RETRYING = "retrying"
    UNREGISTERING = "unregistering"
    FAILED = "failed"
    STOPPED = "stopped"


class RegistrationHost(Protocol):
    """What a registration needs of its user agent (the coordinator provides it)."""

    @property
    def config(self) -> SipdConfig: ...

    @property
    def dialogs(self) -> DialogAdapter: ...

    @property
    def layer(self) -> TransactionLayer | None: ...

    @property
    def clock(self) -> IReactorTime: ...


class Registration:
    """One binding of ``aor`` at ``registrar``, kept alive until :meth:`stop`."""

    def __init__(
        self,
        coordinator: RegistrationHost,
        registrar: Uri,
        aor: Uri,
        *,
        username: str | None = None,
        password: str | None = None,
        expires: int = 3600,
    ) -> None:
        self.coordinator = coordinator
        self.registrar = registrar
        self.aor = aor
        self.requested_expires = expires
        self.granted_expires: int | None = None
        self.state = RegistrationState.IDLE
        self.auth = DigestClient(username or aor.user or "", password) if password else None
        self.call_id = f"{secrets.token_hex(10)}@{coordinator.config.contact_host}"
        self.local_tag = secrets.token_hex(6)
        self.cseq = secrets.randbelow(2**16) + 1
        self.attempts = 0
        self.registrations = 0
        self.last_status: int | None = None
        self.error: Exception | None = None
        self._timer: IDelayedCall | None = None
        self._backoff = _BACKOFF_FIRST
        self._first: defer.Deferred[Registration] | None = None
        self._stopping: defer.Deferred[None] | None = None

    def __repr__(self) -> str:
        return f"<Registration {self.aor} at {self.registrar} {self.state.value}>"

    # -- public ----------------------------------------------------------------------
    def start(self) -> defer.Deferred[Registration]:
        """Send the first REGISTER; fires on 200, fails on a definitive error.

        When the registrar does not answer, the Deferred fails with
        :class:`~sipd.errors.RegistrationError` but the registration keeps
        retrying with back-off in the background (see :attr:`state`).
        """
        self._first = defer.Deferred()
        self._send(self.requested_expires)
        return self._first

    def stop(self) -> defer.Deferred[None]:
        """Remove the binding (REGISTER with ``Expires: 0``) and stop refreshing."""
        self._cancel_timer()
        if self._first is not None and not self._first.called:
            # Nobody may wait forever for a registration that will not happen.
            self._first.errback(
                RegistrationError(f"registration of {self.aor} was stopped before a 200")
            )
        if self.state in (RegistrationState.STOPPED, RegistrationState.IDLE):
            self.state = RegistrationState.STOPPED
            return defer.succeed(None)
        if self.state is RegistrationState.FAILED or (
            self.state is RegistrationState.RETRYING and self.registrations == 0
        ):
            # Nothing was ever bound (every attempt failed): nothing to remove.
            self.state = RegistrationState.STOPPED
            return defer.succeed(None)
        self._stopping = defer.Deferred()
        self.state = RegistrationState.UNREGISTERING
        self._send(0)
        return self._stopping

    @property
    def contact(self) -> str:
        return self.coordinator.dialogs.contact

    # -- requests ----------------------------------------------------------------------
    def _build(self, expires: int) -> Request:
        self.cseq += 1
        dialogs = self.coordinator.dialogs
        h = Headers()
        # The UA's Via; the transaction layer rewrites it (and our Contact) when the
        # registrar's URI or RFC 3263 picks another transport.
        h.add("Via", dialogs.new_via())
        h.add("Max-Forwards", "70")
        h.add("From", str(NameAddr(self.aor).with_tag(self.local_tag)))
        h.add("To", str(NameAddr(self.aor)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", self.contact)
        h.add("Expires", str(expires))
        h.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
        h.add("User-Agent", self.coordinator.config.user_agent)
        return Request("REGISTER", self.registrar.replace(user=None, params=(), headers=()), h)

    def _send(self, expires: int, request: Request | None = None) -> None:
        if request is None:
            request = self._build(expires)
            if self.auth is not None:
                request = self.auth.preauthorize(request)
        if self.state is not RegistrationState.UNREGISTERING:
            self.state = RegistrationState.REGISTERING
        self.attempts += 1
        try:
            dest = self.coordinator.dialogs.resolve(self.registrar)
        except CallError as exc:
            self._fail(RegistrationError(f"cannot register {self.aor}: {exc}"))
            return
        layer = self.coordinator.layer
        assert layer is not None, "the coordinator is not started"
        layer.send_request(
            request,
            dest,
            lambda response: self._response(request, expires, response),
            lambda: self._unreachable(expires, "no response (408)"),
            lambda error: self._unreachable(expires, f"transport error: {error}", error),
        )

    def _stale(self, expires: int) -> bool:
        """True for the outcome of a REGISTER sent before :meth:`stop` (now moot).

        Acting on it could re-send credentials for a binding being removed
        or report the un-REGISTER done before its own answer came.
        """
        if self.state is RegistrationState.STOPPED:
            return True
        return self.state is RegistrationState.UNREGISTERING and expires != 0

    def _response(self, request: Request, expires: int, response: Response) -> None:
        status = response.status
        if status < 200 or self._stale(expires):
            return
        self.last_status = status
        if status in (401, 407) and self.auth is not None:
            retry = self.auth.authorize(request, response)
            if retry is None:
                error = self.auth.last_error or AuthenticationError(
                    f"registrar {self.registrar} rejected the credentials for {self.aor}"
                )
                self._fail(error)
                return
            self.cseq = retry.cseq.number
            self._send(expires, retry)
            return
        if status in (401, 407):
            self._fail(
                AuthenticationError(
                    f"registrar {self.registrar} asks for authentication ({status}) but no "
                    "password is configured; pass username= and password=",
                    status=status,
                )
            )
            return
        if status == 423:
            minimum = response.headers.get("Min-Expires", "") or ""
            if minimum.strip().isdigit() and int(minimum) > expires:
                # Refreshes ask for the minimum too, not for another 423.
                self.requested_expires = int(minimum)
                self._send(int(minimum))
                return
        if 200 <= status < 300:
            self._registered(expires, response)
            return
        reason = f"{status} {response.reason}"
        refused = self._credentials_refused(request, reason, status)
        if refused is not None:
            self._fail(refused)
            return
        if status in _TEMPORARY:
            self._unreachable(expires, reason)
        else:
            self._fail(
                RegistrationError(
                    f"registrar {self.registrar} refused {self.aor}: {reason}", status=status
                )
            )

    def _credentials_refused(
        self, request: Request, reason: str, status: int
    ) -> AuthenticationError | None:
        """An :class:`AuthenticationError` for a 403 to a REGISTER that carried our credentials.

        Registrars such as Kamailio answer wrong credentials with 403
        Forbidden rather than another 401 (which would invite a retry loop);
        the user then needs to hear "check the password", not merely
        "refused".
        """
        if status != 403 or self.auth is None:
            return None
        header = request.headers.get("Authorization") or request.headers.get("Proxy-Authorization")
        if header is None:
            return None
        try:
            realm = parse_credentials(header).realm
        except BadRequest:
            realm = ""
        where = f" (realm {realm!r})" if realm else ""
        return AuthenticationError(
            f"registrar {self.registrar} refused the credentials of user "
            f"{self.auth.username!r}{where} for {self.aor}: {reason}; "
            "check the username and password",
            status=status,
            username=self.auth.username,
            realm=realm,
        )

    def _registered(self, expires: int, response: Response) -> None:
        if self.state is RegistrationState.UNREGISTERING or expires == 0:
            self.state = RegistrationState.STOPPED
            self.granted_expires = 0
            if self._stopping is not None and not self._stopping.called:
                self._stopping.callback(None)
            return
        if self._rewrite_contact(response):
            return
        granted = self._granted(response, expires)
        self.granted_expires = granted
        self.state = RegistrationState.REGISTERED
        self.registrations += 1
        self._backoff = _BACKOFF_FIRST
        self.error = None
        delay = max(1.0, min(granted * _REFRESH_AT, granted - 5.0))
        self._schedule(delay, self._send, self.requested_expires)
        _log.info(
            "registered {aor} at {registrar} for {granted}s",
            aor=str(self.aor),
            registrar=str(self.registrar),
            granted=granted,
        )
        if self._first is not None and not self._first.called:
            self._first.callback(self)

    def _rewrite_contact(self, response: Response) -> bool:
        """Behind NAT, re-register at the address the registrar saw (RFC 3581).

        The registrar's ``received``/``rport`` on our Via tell where our
        packets really came from; when that differs from our Contact, calls
        to the Contact would never reach us. The new address is advertised
        from then on, and the old binding is removed in the same REGISTER.
        Over TCP or TLS the source port is the connection's own, never the
        port requests reach us at (the registrar sends them back over the
        connection): only ``received`` counts there.
        """
        config = self.coordinator.config
        if not config.nat_rewrite:
            return False
        try:
            via = response.top_via
            rport = via.rport
        except SipParseError:
            return False
        dialogs = self.coordinator.dialogs
        host = via.received or dialogs.host
        stream = via.transport.upper() != "UDP"
        port = rport if isinstance(rport, int) and not isinstance(rport, bool) else None
        port = (None if stream else port) or dialogs.advertised_port
        if (host, port) == (dialogs.host, dialogs.advertised_port):
            return False
        old = self.contact
        config.advertised_host = host
        config.advertised_port = port
        _log.info(
            "registrar {registrar} sees us at {host}:{port}; re-registering that contact",
            registrar=str(self.registrar),
            host=host,
            port=port,
        )
        request = self._build(self.requested_expires)
        request.headers.add("Contact", f"{old};expires=0")
        if self.auth is not None:
            request = self.auth.preauthorize(request)
        self._send(self.requested_expires, request)
        return True

    def _granted(self, response: Response, asked: int) -> int:
        ours = self.coordinator.dialogs.local_uri()
        for contact in response.contacts:
            if contact.uri.host == ours.host and contact.uri.port == ours.port:
                value = contact.param("expires")
                if value is not None and value.isdigit():
                    return int(value)
        header = response.headers.get("Expires")
        if header is not None and header.strip().isdigit():
            return int(header)
        return asked

    def _unreachable(self, expires: int, reason: str, cause: Exception | None = None) -> None:
        if self._stale(expires):
            return
        if self.state is RegistrationState.UNREGISTERING:
            self.state = RegistrationState.STOPPED
            if self._stopping is not None and not self._stopping.called:
                self._stopping.callback(None)
            return
        self.state = RegistrationState.RETRYING
        self.error = RegistrationError(
            f"registrar {self.registrar} did not register {self.aor}: {reason}; "
            f"retrying in {self._backoff:g}s"
        )
        # A TLS or connection failure stays reachable: error.__cause__ is the TransportError.
        self.error.__cause__ = cause
        _log.warn("{error}", error=str(self.error))
        # The retry is scheduled before the first caller hears of the failure:
        # it may stop() us at once (a peer closes when its registration fails),
        # and that must cancel the retry, not run before it is armed.
        self._schedule(self._backoff, self._send, self.requested_expires)
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        if self._first is not None and not self._first.called:
            self._first.errback(self.error)

    def _fail(self, error: Exception) -> None:
        self.state = RegistrationState.FAILED
        self.error = error
        self._cancel_timer()
        _log.error("{error}", error=str(error))
        if self._first is not None and not self._first.called:
            self._first.errback(error)
        if self._stopping is not None and not self._stopping.called:
            self._stopping.callback(None)

    def _schedule(self, delay: float, fn: object, *args: object) -> None:
        self._cancel_timer()
        self._timer = self.coordinator.clock.callLater(delay, fn, *args)  # type: ignore[arg-type]

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
