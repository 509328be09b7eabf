"""``SimplePeer``: place and receive calls in a few lines.

.. code-block:: python

    alice = await SimplePeer.create("alice", 5060)
    call = await alice.call("sip:bob@127.0.0.1:5061")
    await call.wait_for_answer()
    await call.hangup()
    await alice.close()
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from sipd.api.call import Call, IncomingCall, direction_of
from sipd.api.types import CallDirection, CallId
from sipd.config import SipdConfig
from sipd.errors import SipdError
from sipd.media.codecs import codec_names
from sipd.runtime import raise_young_threshold
from sipd.session.coordinator import UnifiedCoordinator
from sipd.session.interceptor import ISignalingHandler
from sipd.session.registration import Registration
from sipd.session.session import UnifiedSession
from sipd.sip.uri import parse_uri

__all__ = ["SimplePeer"]


class SimplePeer:
    """A SIP user agent with a name, a port and a queue of incoming calls."""

    def __init__(self, coordinator: UnifiedCoordinator) -> None:
        self.coordinator = coordinator
        self._calls: dict[CallId, Call] = {}
        self._incoming: list[IncomingCall] = []
        self._waiters: list[defer.Deferred[IncomingCall]] = []
        coordinator.on_incoming = self._offered
        coordinator.on_session_end.append(self._ended)
        coordinator.on_transfer.append(self._transferred)
        # SIGINT/SIGTERM stop the reactor; before it stops, hang up (BYE) and
        # finalise recordings. The reactor waits for the Deferred close returns.
        self._shutdown_trigger: Any = None
        add_trigger = getattr(coordinator.reactor, "addSystemEventTrigger", None)
        if add_trigger is not None:
            self._shutdown_trigger = add_trigger("before", "shutdown", self._reactor_stopping)

    def __repr__(self) -> str:
        return f"<SimplePeer {self.uri}>"

    # -- construction --------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        port: int = 5060,
        *,
        host: str = "127.0.0.1",
        handler: ISignalingHandler | None = None,
        reactor: Any = None,
        tune_gc: bool = True,
        **settings: Any,
    ) -> defer.Deferred[SimplePeer]:
        """Bind ``host:port`` and return a ready peer ``sip:<name>@host:port``.

        Any :class:`~sipd.config.SipdConfig` field may be given as a keyword
        (``ring_timeout=30``, ``media_port_min=20000``...). ``port=0`` picks a
        free port (see :attr:`port`). ``tune_gc``: raise the garbage
        collector's young threshold if lower (:func:`sipd.runtime.raise_young_threshold`),
        so that a busy peer's short-lived call objects die young instead of
        feeding full collections that stall the reactor; False leaves it alone.
        """
        try:
            config = SipdConfig(name=name, host=host, port=port, **settings)
        except TypeError as exc:
            return defer.fail(SipdError(f"unknown SimplePeer setting: {exc}"))
        except SipdError:
            return defer.fail()
        if tune_gc:
            raise_young_threshold()
        d = UnifiedCoordinator.create(config, handler, reactor=reactor)
        peer_d: defer.Deferred[SimplePeer] = d.addCallback(cls)
        if config.registrar:

            def register(peer: SimplePeer) -> defer.Deferred[SimplePeer]:
                # A peer whose registration fails is closed, not left bound.
                return peer.register().addCallbacks(
                    lambda _: peer, lambda f: peer.close().addBoth(lambda _: f)
                )

            peer_d.addCallback(register)
        return peer_d

    @classmethod
    def from_uri(cls, uri: str, **settings: Any) -> defer.Deferred[SimplePeer]:
        """Create a peer from its own URI, e.g. ``sip:alice@127.0.0.1:5060``."""
        try:
            parsed = parse_uri(uri, require_supported=False)
        except SipdError:
            return defer.fail()
        settings.setdefault("host", parsed.host_for_socket)
        return cls.create(parsed.user or "sipd", parsed.port or 5060, **settings)

    # -- identity ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.coordinator.config.name

    @property
    def port(self) -> int:
        """The bound SIP port."""
        return self.coordinator.port

    @property
    def uri(self) -> str:
        """Our SIP URI, the one to call us at."""
        return self.coordinator.uri

    # -- calls ------------------------------------------------------------------------------
    def call(
        self,
        target: str,
        *,
        headers: dict[str, str] | None = None,
        srtp: str | None = None,
        codecs: list[str] | None = None,
    ) -> defer.Deferred[Call]:
        """Call ``target`` (``sip:bob@127.0.0.1:5061``; ``sip:`` may be left out).

        Fires with the :class:`Call` as soon as the INVITE is on its way;
        ``await call.wait_for_answer()`` to know how it went. ``headers`` are
        added to the INVITE; ``srtp`` ("off", "optional", "required") overrides
        the peer's SRTP policy for this call; ``codecs`` (``["G722", "PCMU"]``) its codec
        preference.
        """
        try:
            session = self.coordinator.create_outgoing_call(
                target,
                headers=list((headers or {}).items()),
                srtp=srtp,
                codecs=None if codecs is None else codec_names(codecs),
            )
        except SipdError:
            return defer.fail()
        call = Call(session, CallDirection.OUTGOING)
        if not session.is_ended:
            self._calls[call.id] = call
        return defer.succeed(call)

    def register(
        self,
        registrar: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        expires: int | None = None,
    ) -> defer.Deferred[Registration]:
        """Register at ``registrar`` (default: the one given to ``create``).

        Fires with the :class:`Registration` on the registrar's 200; it is
        refreshed before it expires and removed by :meth:`close`. Fails with
        :class:`~sipd.errors.AuthenticationError` for wrong credentials.
        """
        return self.coordinator.register(
            registrar, username=username, password=password, expires=expires
        )

    def wait_for_incoming(self) -> defer.Deferred[IncomingCall]:
        """Fires with the next incoming call (cancelled ones are skipped)."""
        incoming = self.try_incoming()
        if incoming is not None:
            return defer.succeed(incoming)
        d: defer.Deferred[IncomingCall] = defer.Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(d)
        return d

    def try_incoming(self) -> IncomingCall | None:
        """The next incoming call if one is waiting, else None (never waits)."""
        while self._incoming:
            incoming = self._incoming.pop(0)
            if incoming.is_pending:
                return incoming
        return None

    def active_calls(self) -> list[Call]:
        """Calls that are placed or answered and not yet ended."""
        return [c for c in self._calls.values() if not c.session.is_ended]

    def close(self) -> defer.Deferred[None]:
        """Hang up every call and unbind; fires when done.

        The reactor's shutdown (SIGINT, SIGTERM, ``reactor.stop()``) calls
        this for every peer not yet closed and waits for it (a few seconds
        at most), so calls end with BYE and recordings are valid WAV files.
        """
        trigger, self._shutdown_trigger = self._shutdown_trigger, None
        if trigger is not None:
            self.coordinator.reactor.removeSystemEventTrigger(trigger)
        for d in self._waiters:
            d.errback(SipdError(f"peer {self.uri} was closed"))
        self._waiters.clear()
        self._incoming.clear()
        return self.coordinator.close()

    def _reactor_stopping(self) -> defer.Deferred[None]:
        self._shutdown_trigger = None  # fired: nothing to remove any more
        return self.close()

    # -- coordinator callbacks -----------------------------------------------------------------
    def _offered(self, session: UnifiedSession) -> None:
        incoming = IncomingCall(session, self._track)
        if self._waiters:
            self._waiters.pop(0).callback(incoming)
        else:
            self._incoming.append(incoming)

    def _track(self, call: Call) -> None:
        if not call.session.is_ended:
            self._calls[call.id] = call

    def _transferred(self, old: UnifiedSession, new: UnifiedSession) -> None:
        # A call placed for a REFER, or one answered for an INVITE with Replaces.
        call = Call(new, direction_of(new))
        if not new.is_ended:
            self._calls[call.id] = call

    def _ended(self, session: UnifiedSession) -> None:
        self._calls.pop(CallId(session.id), None)
        self._incoming = [i for i in self._incoming if i.session is not session]
