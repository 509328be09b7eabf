"""The :class:`UnifiedCoordinator`: one UA's sockets, layers and sessions.

It binds the SIP socket, builds the transaction layer, the dialog and media
adapters, the state-table machines, the :class:`SessionRegistry` and the
:class:`SignalingInterceptor`, and routes every dialog event to its session
through the registry. ``SimplePeer`` is a thin face over it; the daemon uses
it directly.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP

from sipd.config import SipdConfig
from sipd.dns.resolver import DEFAULT_TIMEOUT, Rfc3263Resolver
from sipd.errors import (
    CallError,
    CallStateError,
    ConfigError,
    TransportError,
)
from sipd.logs import Logger
from sipd.media.ports import PortsExhausted
from sipd.metrics import Metrics
from sipd.sdp.crypto import SrtpPolicy
from sipd.session import events as ev
from sipd.session.addressing import (
    WILDCARDS,
    learn_local_host,
    release_memory,
    sip_uri,
    target_uri,
    widen_receive_buffer,
)
from sipd.session.call_table import BEHAVIOUR, load_call_table
from sipd.session.channels import MediaChannel, SignallingChannel
from sipd.session.dialog_adapter import CallLeg, DialogAdapter
from sipd.session.handler_bridge import HandlerBridge
from sipd.session.interceptor import (
    AcceptAllHandler,
    InviteDetails,
    ISignalingHandler,
    SignalingInterceptor,
)
from sipd.session.machine import MachineFactory
from sipd.session.media_adapter import MediaAdapter, MediaSession
from sipd.session.registrar import Registrar
from sipd.session.registration import Registration
from sipd.session.registry import SessionRegistry
from sipd.session.services import CoordinatorServices, call_outcome
from sipd.session.session import UnifiedSession
from sipd.session.state_table import Role
from sipd.session.store import SessionStore
from sipd.session.transports import Transports
from sipd.sip.address import NameAddr
from sipd.sip.auth import DigestClient
from sipd.sip.message import Request
from sipd.sip.transaction import Route, TimerConfig, TransactionLayer
from sipd.sip.uri import Uri, parse_uri
from sipd.transport.backlog import receive_backlog
from sipd.transport.udp import SipDatagramProtocol

__all__ = ["UnifiedCoordinator"]

_log = Logger()


class UnifiedCoordinator:
    """Owns everything one SIP UA needs; create it with :meth:`create`."""

    def __init__(
        self,
        config: SipdConfig,
        handler: ISignalingHandler | None = None,
        *,
        reactor: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.config = config
        self.metrics = metrics or Metrics()
        self.table = load_call_table(config.state_table_path)
        self._factories = {
            role: MachineFactory(self.table, role, now=self.clock.seconds, clock=self.clock)
            for role in Role
        }
        self.store = SessionStore()
        self.registry = SessionRegistry()
        self.media = MediaAdapter(config, reactor)
        self.transport = SipDatagramProtocol(self.clock, self.metrics)
        #: UDP plus the configured stream transport (TCP/TLS), behind one send.
        self.transports = Transports(self.transport)
        self.dialogs = DialogAdapter(config, self.clock, self.transports.send, self.metrics)
        #: Locates host names by RFC 3263 for calls, proxy and registrar (docs/dns.md).
        self.resolver = Rfc3263Resolver(
            config.dns_servers, timeout=config.dns_timeout or DEFAULT_TIMEOUT, reactor=reactor
        )
        self.dialogs.resolver = self.resolver
        self.dialogs.port_for = self.transports.port_for
        self.interceptor = SignalingInterceptor(
            handler or AcceptAllHandler(),
            self.clock,
            defer_timeout=config.defer_timeout,
            defer_status=config.defer_status,
        )
        self.layer: TransactionLayer | None = None
        self._port: IListeningPort | None = None
        self._pending: dict[str, InviteDetails] = {}
        #: Called with each UAS session the handler accepted (SimplePeer queues them).
        self.on_incoming: Callable[[UnifiedSession], None] | None = None
        #: Called with each session when it ends (the daemon writes a CDR).
        self.on_session_end: list[Callable[[UnifiedSession], None]] = []
        #: Called with (old, new) when a peer's REFER makes us place a new call.
        self.on_transfer: list[Callable[[UnifiedSession, UnifiedSession], None]] = []
        self.closed = False
        self._services = CoordinatorServices(self)
        self._handler = HandlerBridge(self.interceptor)
        self.registrations: list[Registration] = []
        self._released_at = self.clock.seconds()
        self.outbound_proxy: Uri | None = sip_uri(config.outbound_proxy)
        self.registrar: Uri | None = sip_uri(config.registrar)
        if config.password:
            self.dialogs.auth = DigestClient(config.username or config.name, config.password)

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        config: SipdConfig | None = None,
        handler: ISignalingHandler | None = None,
        *,
        reactor: Any = None,
        metrics: Metrics | None = None,
    ) -> defer.Deferred[UnifiedCoordinator]:
        """Bind the SIP socket and return a ready coordinator."""
        try:
            coordinator = cls(config or SipdConfig(), handler, reactor=reactor, metrics=metrics)
            coordinator.start()
        except Exception:
            return defer.fail()
        return defer.succeed(coordinator)

    def start(self) -> None:
        """Bind the UDP socket (synchronously) and wire the layers."""
        udp: IReactorUDP = self.reactor
        try:
            self._port = udp.listenUDP(self.config.port, self.transport, self.config.host, 65535)
        except Exception as exc:
            raise ConfigError(
                f"cannot listen for SIP on {self.config.host}:{self.config.port}: {exc}"
            ) from exc
        widen_receive_buffer(self._port)
        port: int = self._port.getHost().port  # type: ignore[attr-defined]
        timers = TimerConfig(t1=self.config.t1, t2=self.config.t2, t4=self.config.t4)
        self.layer = TransactionLayer(self.clock, self.transports.send, self.dialogs, timers)
        try:
            self.transports.open_stream(
                self.config, self.reactor, self.clock, self.metrics, self.layer, port
            )
        except Exception:
            self._port.stopListening()
            self._port = None
            raise
        self.layer.on_empty = self._quiet
        self.transport.set_handler(self.layer.receive)
        self.transport.screen = self.dialogs.overload.screen
        self.dialogs.overload.known = self.layer.has_server_transaction
        self.dialogs.overload.backlog = receive_backlog(self._port)
        self.dialogs.attach(self.layer, self, port)
        self.dialogs.outbound_proxy = self.outbound_proxy

    # -- registration -------------------------------------------------------------------
    def register(
        self,
        registrar: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        aor: str | None = None,
        expires: int | None = None,
    ) -> defer.Deferred[Registration]:
        """Register at ``registrar`` (default: the configured one); fires on 200.

        The address-of-record defaults to ``sip:<username or name>@<registrar
        host>``. The credentials also answer 401/407 challenges to our INVITEs
        and BYEs. Fails with :class:`~sipd.errors.AuthenticationError` on wrong
        credentials; see :class:`Registration` for refresh and back-off.
        """
        config = self.config
        try:
            target = sip_uri(registrar) or self.registrar
            if target is None:
                raise ConfigError("register() needs a registrar URI (or the registrar setting)")
            user = username or config.username or config.name
            secret = password if password is not None else config.password
            aor_uri = sip_uri(aor) if aor else Uri(scheme="sip", host=target.host, user=user)
            assert aor_uri is not None
        except Exception:
            return defer.fail()
        if self.registrar is None:
            self.registrar = target
        self._learn_towards(target)
        if secret:
            self.dialogs.auth = DigestClient(user, secret)
        registration = Registration(
            self,
            target,
            aor_uri,
            username=user,
            password=secret,
            expires=expires or config.register_expires,
        )
        self.registrations.append(registration)
        return registration.start()

    def learn_local_host(self, towards: str) -> None:
        """Bound to a wildcard address: advertise the local address routed to ``towards``."""
        learn_local_host(self.config, towards)

    def _learn_towards(self, uri: Uri) -> None:
        if self.config.advertised_host is not None or self.config.host not in WILDCARDS:
            return
        with contextlib.suppress(CallError):
            dest = self.dialogs.resolve(uri)
            if not isinstance(dest, Route):
                self.learn_local_host(dest[0])
                return
            dest.when_located(lambda: self.learn_local_host((dest.target or dest)[0]))

    def route_for(self, target: Uri) -> Uri | None:
        """The proxy an outgoing INVITE to ``target`` goes through, if any.

        The outbound proxy when configured; else the registrar when the target
        is a user at the registrar's domain.
        """
        if self.outbound_proxy is not None:
            return self.outbound_proxy
        registrar = self.registrar
        same_domain = registrar is not None and target.host.lower() == registrar.host.lower()
        if same_domain and registrar is not None and target.port in (None, registrar.port):
            return registrar
        return None

    def _quiet(self) -> None:
        """No call and no transaction is left: hand freed memory back to the OS.

        A burst of calls grows the heap; without this the process keeps that
        peak RSS for good, because the allocator holds freed pages.
        """
        now = self.clock.seconds()
        if len(self.store) == 0 and not self.closed and now - self._released_at >= 30.0:
            self._released_at = now
            release_memory()

    @property
    def port(self) -> int:
        """The bound SIP port."""
        return self.dialogs.local_port

    @property
    def uri(self) -> str:
        """Our own SIP URI."""
        return str(self.dialogs.local_uri())

    def target_uri(self, target: str) -> Uri:
        """The URI to call for ``target``.

        Accepts a full URI, ``user@host[:port]``, or a plain number or name,
        which becomes a user at the registrar's domain.
        """
        return target_uri(target, self.registrar)

    def sessions(self) -> list[UnifiedSession]:
        """Every live session."""
        return list(self.store)

    @property
    def handler(self) -> ISignalingHandler:
        """The :class:`ISignalingHandler` asked about every new INVITE (settable)."""
        return self.interceptor.handler

    @handler.setter
    def handler(self, handler: ISignalingHandler) -> None:
        self.interceptor.handler = handler

    @property
    def accepting(self) -> bool:
        """False once the UA is closing: new INVITEs get 503."""
        return self.dialogs.accepting

    def use_registrar(self, registrar: Registrar, *, authenticate_invites: bool) -> None:
        """Answer REGISTER with ``registrar``; challenge new INVITEs with its users when asked."""
        self.dialogs.registrar = registrar
        self.dialogs.authenticate_invites = authenticate_invites

    def _new_session(
        self,
        role: Role,
        *,
        remote_uri: str,
        local_uri: str,
        target: Uri | None = None,
        leg: CallLeg | None = None,
        rtp: MediaSession | None = None,
    ) -> UnifiedSession:
        """A session wired to its own ports (``rtp`` bound); it never sees this coordinator."""
        session_id = secrets.token_hex(8)
        signalling = SignallingChannel(self.dialogs, self.registry, session_id, leg)
        media = MediaChannel(self.media, self.registry, session_id, rtp)
        session = UnifiedSession(
            self._services,
            self._factories[role],
            BEHAVIOUR,
            signalling,
            media,
            remote_uri=remote_uri,
            local_uri=local_uri,
            target=target,
            session_id=session_id,
        )
        signalling.post = session.post
        media.later = session.later
        media.on_evidence = session.machine.reschedule
        return session

    def close(self, grace: float = 5.0) -> defer.Deferred[None]:
        """Stop taking calls, end every call, and unbind.

        Active calls get BYE, pending ones CANCEL or a decline; the Deferred
        fires once they have ended or ``grace`` seconds have passed.
        """
        if self.closed:
            return defer.succeed(None)
        self.closed = True
        self.dialogs.accepting = False
        unregistered = [r.stop() for r in self.registrations]
        self.registrations = []
        for invite in list(self.interceptor.pending.values()):
            if not invite.answered and not invite.cancelled:
                invite.reject(503, "Service Unavailable")
        self.interceptor.cancel_all()
        ends = [s.hangup() for s in self.store] + unregistered
        done: defer.Deferred[None] = defer.Deferred()
        if ends:

            def expire() -> None:
                if not done.called:
                    done.callback(None)

            timeout = self.clock.callLater(grace, expire)
            all_ended = defer.DeferredList(ends, consumeErrors=True)

            def ended(_: object) -> None:
                if timeout.active():
                    timeout.cancel()
                if not done.called:
                    done.callback(None)

            all_ended.addBoth(ended)
        else:
            done.callback(None)

        def unbind(_: object) -> defer.Deferred[None] | None:
            for session in self.store:
                # Past the grace time: forget what did not end by itself.
                session.post(ev.ByeCompleted(None))
            self.dialogs.close()
            self.resolver.close()
            self.media.close()
            if self.layer is not None:
                self.layer.close()
            port, self._port = self._port, None
            waits = [self.transports.close()]
            if port is not None:
                stopped = port.stopListening()
                if isinstance(stopped, defer.Deferred):
                    waits.append(stopped)
            return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

        done.addCallback(unbind)
        return done

    # -- outgoing calls ---------------------------------------------------------------
    def create_outgoing_call(
        self,
        target: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        srtp: str | None = None,
        codecs: list[str] | None = None,
    ) -> UnifiedSession:
        """Place a call to ``target`` (a SIP URI); returns its session at once.

        ``srtp`` overrides the UA's SRTP policy for this call (``off``, ``optional``,
        ``required``).
        """
        if srtp is not None:
            srtp = SrtpPolicy.parse(srtp).value  # SipdValueError before anything is bound
        if self.closed:
            raise CallStateError("this UA is closed; create a new one to place calls")
        uri = self.target_uri(target)
        if uri.scheme == "tel":
            raise CallStateError(
                f"cannot call {target!r} directly: tel URIs need a proxy (not configured)"
            )
        proxy = self.route_for(uri)
        if self.dialogs.transport_for(proxy or uri) == "tls" and self.config.tls is None:
            raise TransportError(
                f"cannot call {uri}: it needs TLS (sips: or ;transport=tls); pass "
                "tls=TlsConfig(ca_certificates=...) to SimplePeer.create"
            )
        rtp = self.media.allocate()  # PortsExhausted: refused before any session exists
        session = self._new_session(
            Role.UAC, remote_uri=str(uri), local_uri=self.uri, target=uri, rtp=rtp
        )
        session.extra_headers = list(headers or ())
        session.srtp_policy = srtp or self.config.srtp
        session.codecs = list(codecs or self.config.codecs)
        session.proxy = proxy
        self._learn_towards(session.proxy or uri)
        self.store.add(session)
        self.metrics.inc("sipd_calls_started_total", direction="outgoing")
        session.post(ev.MakeCall())
        return session

    # -- DialogEventSink ----------------------------------------------------------------
    def new_invite(self, leg: CallLeg, request: Request, source: tuple[str, int]) -> None:
        invite = InviteDetails(request, source, self, leg=leg)
        if leg.replaces is not None:
            self._replace(invite, leg.replaces)
            return
        self._pending[leg.key] = invite
        self.interceptor.intercept(invite)

    def invite_cancelled(self, leg: CallLeg) -> None:
        """CANCEL for an INVITE the handler has not decided on (already answered 487)."""
        invite = self._pending.pop(leg.key, None)
        if invite is not None:
            invite._cancel()
        self.dialogs.release(leg)

    def _replace(self, invite: InviteDetails, replaced: CallLeg) -> None:
        """An INVITE with Replaces for ``replaced``'s call (RFC 3891 §3).

        The handler is not asked and the application is not offered the
        call: whoever is on the replaced call already accepted talking to us.
        The new session answers at once (``ReplacingCall``); once it is
        answered the old one gets ``Replaced`` and ends with BYE. Listeners
        of :attr:`on_transfer` learn of the new call straight away.
        """
        session_id = self.registry.session_by_dialog(replaced.key)
        old = self.store.get(session_id) if session_id is not None else None
        if old is None or old.is_ended:
            self.reject_invite(invite, 481, None)
            return
        invite._claim()
        try:
            new = self._start_uas(invite, ev.ReplacingCall())
        except PortsExhausted:
            return  # already answered 503
        new.replaces = old
        if not new.is_ended:
            self.offer_transfer(old, new)
        new.wait_for_answer().addCallbacks(lambda _: old.post(ev.Replaced(new)), lambda _: None)

    def dialog_event(self, leg: CallLeg, event: ev.CallEvent) -> bool:
        """Route an event of ``leg`` to the session that owns it (False: nobody does)."""
        session_id = self.registry.session_by_dialog(leg.key)
        session = self.store.get(session_id) if session_id is not None else None
        if session is None:
            return False
        return session.post(self._handler.before(session, leg.key, event))

    # -- InviteResponder -------------------------------------------------------------------
    def accept_invite(self, invite: InviteDetails, *, offer: bool) -> UnifiedSession:
        return self._start_uas(invite, ev.IncomingCall(offer=offer))

    def _start_uas(self, invite: InviteDetails, event: ev.CallEvent) -> UnifiedSession:
        """Create the UAS session for ``invite`` and feed it ``event``."""
        leg = invite.leg
        assert isinstance(leg, CallLeg)
        self._pending.pop(leg.key, None)
        self.interceptor.settle(invite)
        try:
            rtp = self.media.allocate()
        except PortsExhausted as exc:
            retry = self.dialogs.overload.refused_elsewhere("media_ports", leg.call_id, exc)
            self.dialogs.reject(leg, 503, "No Media Ports Free", headers=retry)
            self.dialogs.release(leg)
            self.metrics.inc("sipd_calls_total", outcome="rejected", direction="incoming")
            raise
        remote, local = str(invite.request.from_.uri), str(invite.request.to.uri)
        session = self._new_session(Role.UAS, remote_uri=remote, local_uri=local, leg=leg, rtp=rtp)
        session.invite = invite
        self.store.add(session)
        self.registry.register_dialog(session.id, leg.key)
        self.metrics.inc("sipd_calls_started_total", direction="incoming")
        session.post(event)
        return session

    def reject_invite(self, invite: InviteDetails, code: int, reason: str | None) -> None:
        leg = invite.leg
        if not isinstance(leg, CallLeg):
            return
        self._pending.pop(leg.key, None)
        self.interceptor.settle(invite)
        self.dialogs.reject(leg, code, reason)
        self.dialogs.release(leg)
        self.metrics.inc("sipd_calls_total", outcome="rejected", direction="incoming")

    def redirect_invite(self, invite: InviteDetails, target: str, code: int) -> None:
        leg = invite.leg
        if not isinstance(leg, CallLeg):
            return
        self._pending.pop(leg.key, None)
        self.interceptor.settle(invite)
        contact = str(NameAddr(parse_uri(target.strip("<>"), require_supported=False)))
        self.dialogs.reject(leg, code, None, headers=[("Contact", contact)])
        self.dialogs.release(leg)
        self.metrics.inc("sipd_calls_total", outcome="redirected", direction="incoming")

    # -- what sessions may ask (through CoordinatorServices) ----------------------------------
    def offer_incoming(self, session: UnifiedSession) -> None:
        """Hand an accepted incoming call to the application."""
        if self.on_incoming is not None:
            self.on_incoming(session)
        else:
            # No application is listening for offered calls: answer at once.
            # A failure (no common codec...) is already answered and recorded
            # on the session; nobody awaits this Deferred.
            self.clock.callLater(0, lambda: session.accept().addErrback(lambda f: None))

    def offer_transfer(self, old: UnifiedSession, new: UnifiedSession) -> None:
        """A REFER from ``old``'s peer made us place ``new``; tell the application."""
        for listener in list(self.on_transfer):
            try:
                listener(old, new)
            except Exception:
                _log.failure("transfer listener failed", call_id=new.call_id)

    def session_ended(self, session: UnifiedSession) -> None:
        """Forget a session that reached a final state (its ports are released already)."""
        self.registry.remove_session(session.id)
        self.store.remove(session.id)
        direction = "outgoing" if session.role is Role.UAC else "incoming"
        self.metrics.inc("sipd_calls_total", outcome=call_outcome(session), direction=direction)
        # Listeners run once the machine has settled in its final state.
        session.later(lambda: self._notify_end(session))

    def _notify_end(self, session: UnifiedSession) -> None:
        for listener in list(self.on_session_end):
            try:
                listener(session)
            except Exception:
                _log.failure("session end listener failed", call_id=session.call_id)
        session.release()
