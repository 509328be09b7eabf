"""sipd for asyncio programs: the same peers and calls, with ``await`` and numpy audio.

.. code-block:: python

    import asyncio
    import numpy as np
    from sipd import aio

    async def main() -> None:
        alice = await aio.SimplePeer.create("alice", 0)
        call = await alice.call("sip:bob@127.0.0.1:5062")
        await call.wait_for_answer()
        await call.send_audio(np.zeros(8000, dtype=np.int16))  # 1 s of silence
        await call.hangup()
        await alice.close()

    asyncio.run(main())

Why this works without knowing Twisted: sipd runs on Twisted's asyncio
reactor, which schedules everything on the running asyncio loop, and every
Deferred of the library API is handed back as an asyncio future
(``Deferred.asFuture``). The reactor is installed by the first
``SimplePeer.create`` (or by :func:`install`); if another reactor was
installed already, :class:`WrongReactorError` says what to change instead of
letting the program hang.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from twisted.internet import defer

from sipd import api
from sipd.api.types import CallDirection, CallId, CallState
from sipd.errors import SipdError
from sipd.media.frame import SAMPLE_RATE, AudioFrame
from sipd.streaming import StreamEnd

__all__ = ["Call", "IncomingCall", "SimplePeer", "WrongReactorError", "install"]

T = TypeVar("T")


class WrongReactorError(SipdError):
    """Twisted's reactor is not the asyncio one on the running loop (the message says why)."""


def install(loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """Make sure Twisted runs on ``loop`` (the running loop); return the reactor.

    Call it from inside ``asyncio.run(...)``; :meth:`SimplePeer.create` calls it
    for you. Raises :class:`WrongReactorError` if another reactor is installed.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        raise WrongReactorError(
            "sipd.aio needs a running asyncio loop: call it from a coroutine run by "
            "asyncio.run(main()) (or your framework's loop), not at import time"
        ) from None
    if loop is not None and loop is not running:
        raise WrongReactorError(
            "sipd.aio.install(loop) was given a loop that is not the running one; "
            "pass nothing, or asyncio.get_running_loop()"
        )
    from twisted.internet import asyncioreactor

    reactor: Any = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        asyncioreactor.install(running)  # type: ignore[no-untyped-call]
        reactor = sys.modules["twisted.internet.reactor"]
    if not isinstance(reactor, asyncioreactor.AsyncioSelectorReactor):
        raise WrongReactorError(
            f"Twisted's {type(reactor).__module__}.{type(reactor).__name__} is already "
            "installed, but sipd.aio needs the asyncio reactor: make sure nothing imports "
            "twisted.internet.reactor before sipd.aio installs it (or install it yourself "
            "first with twisted.internet.asyncioreactor.install(asyncio.get_running_loop())); "
            "a Twisted program should use sipd's Deferred API instead of sipd.aio"
        )
    if reactor._asyncioEventloop is not running:
        raise WrongReactorError(
            "Twisted's asyncio reactor runs on another event loop than the running one "
            "(was asyncio.run called twice?); one process can serve sipd.aio from one loop only"
        )
    if not reactor.running:
        # The loop itself runs the reactor: mark it started so startup triggers fire.
        reactor.startRunning(installSignalHandlers=False)
    return reactor


def _wait(d: defer.Deferred[T]) -> asyncio.Future[T]:
    return d.asFuture(asyncio.get_running_loop())


def _as_frame(audio: NDArray[Any] | AudioFrame, sample_rate: int) -> AudioFrame:
    return audio if isinstance(audio, AudioFrame) else AudioFrame(audio, sample_rate)


class Call:
    """A call in progress (see :class:`sipd.Call`); waiting methods are coroutines."""

    def __init__(self, call: api.Call) -> None:
        #: The Deferred-API call underneath (for what this wrapper does not cover).
        self.deferred_api = call

    def __repr__(self) -> str:
        return repr(self.deferred_api).replace("<Call", "<aio.Call", 1)

    @property
    def id(self) -> CallId:
        return self.deferred_api.id

    @property
    def state(self) -> CallState:
        return self.deferred_api.state

    @property
    def direction(self) -> CallDirection:
        return self.deferred_api.direction

    @property
    def remote_party(self) -> str:
        return self.deferred_api.remote_party

    @property
    def sip_call_id(self) -> str | None:
        return self.deferred_api.sip_call_id

    @property
    def failure(self) -> SipdError | None:
        return self.deferred_api.failure

    def is_active(self) -> bool:
        return self.deferred_api.is_active()

    async def wait_for_answer(self) -> None:
        """Returns once answered; raises CallRejected/CallCancelled/CallTimeout otherwise."""
        await _wait(self.deferred_api.wait_for_answer())

    async def wait_for_end(self) -> None:
        await _wait(self.deferred_api.wait_for_end())

    async def hangup(self) -> None:
        await _wait(self.deferred_api.hangup())

    async def hold(self) -> None:
        await _wait(self.deferred_api.hold())

    async def resume(self) -> None:
        await _wait(self.deferred_api.resume())

    async def transfer(self, target: str | Call) -> None:
        await _wait(
            self.deferred_api.transfer(target.deferred_api if isinstance(target, Call) else target)
        )

    # -- audio: numpy int16 arrays ----------------------------------------------------
    async def send_audio(
        self, audio: NDArray[Any] | AudioFrame, *, sample_rate: int = SAMPLE_RATE
    ) -> None:
        """Send mono int16 samples (any length, any rate); returns once on the wire.

        Awaiting each call paces the sender in real time.
        """
        await _wait(self.deferred_api.send_audio(_as_frame(audio, sample_rate)))

    async def recv_audio(self) -> NDArray[np.int16] | None:
        """The next received 20 ms frame as an int16 array, or None once the call ended."""
        frame = await _wait(self.deferred_api.recv_audio())
        return None if frame is None else frame.samples

    async def recv_frame(self) -> AudioFrame | None:
        """The next received :class:`~sipd.AudioFrame` (with RTP timestamp and rate)."""
        return await _wait(self.deferred_api.recv_audio())

    def try_recv_audio(self) -> NDArray[np.int16] | None:
        frame = self.deferred_api.try_recv_audio()
        return None if frame is None else frame.samples

    async def play_wav(self, path: str | os.PathLike[str]) -> None:
        await _wait(self.deferred_api.play_wav(path))

    def record_wav(self, path: str | os.PathLike[str]) -> asyncio.Future[None]:
        """Start recording; await the returned future after hangup for the final file.

        Not a coroutine on purpose: the recording starts now, and the future
        completes only when the call ends (so do not await it before hanging up).
        """
        return _wait(self.deferred_api.record_wav(path))

    def stop_recording(self, path: str | os.PathLike[str] | None = None) -> None:
        self.deferred_api.stop_recording(path)

    async def send_dtmf(self, digits: str) -> None:
        await _wait(self.deferred_api.send_dtmf(digits))

    def on_dtmf(self, callback: Callable[[str], None]) -> None:
        self.deferred_api.on_dtmf(callback)

    async def recv_dtmf(self) -> str | None:
        return await _wait(self.deferred_api.recv_dtmf())

    def stats(self) -> dict[str, object]:
        return self.deferred_api.stats()

    async def stream(
        self,
        url: str,
        *,
        protocol: str = "media-stream",
        parameters: dict[str, Any] | None = None,
        connect_timeout: float = 5.0,
        fallback_wav: str | os.PathLike[str] | None = None,
    ) -> StreamEnd:
        """Bridge the call to a WebSocket bot until either ends (see :meth:`sipd.Call.stream`)."""
        return await _wait(
            self.deferred_api.stream(
                url,
                protocol=protocol,
                parameters=parameters,
                connect_timeout=connect_timeout,
                fallback_wav=fallback_wav,
            )
        )


class IncomingCall:
    """A call offered to us (see :class:`sipd.IncomingCall`)."""

    def __init__(self, incoming: api.IncomingCall) -> None:
        self.deferred_api = incoming

    def __repr__(self) -> str:
        return repr(self.deferred_api).replace("<IncomingCall", "<aio.IncomingCall", 1)

    @property
    def id(self) -> CallId:
        return self.deferred_api.id

    @property
    def caller(self) -> str:
        return self.deferred_api.caller

    @property
    def callee(self) -> str:
        return self.deferred_api.callee

    @property
    def dialled(self) -> str:
        return self.deferred_api.dialled

    @property
    def is_pending(self) -> bool:
        return self.deferred_api.is_pending

    async def accept(self) -> Call:
        """Answer (200 OK); returns the :class:`Call` once the caller ACKs."""
        return Call(await _wait(self.deferred_api.accept()))

    async def reject(self, code: int = 486, reason: str | None = "Busy Here") -> None:
        await _wait(self.deferred_api.reject(code, reason))


class SimplePeer:
    """A SIP user agent for asyncio programs (see :class:`sipd.SimplePeer`)."""

    def __init__(self, peer: api.SimplePeer) -> None:
        self.deferred_api = peer

    def __repr__(self) -> str:
        return f"<aio.SimplePeer {self.uri}>"

    @classmethod
    async def create(
        cls, name: str, port: int = 5060, *, host: str = "127.0.0.1", **settings: Any
    ) -> SimplePeer:
        """Bind ``host:port`` (0: any free port) and return a ready peer.

        Installs Twisted's asyncio reactor on the running loop if needed;
        raises :class:`WrongReactorError` if another reactor is installed.
        """
        reactor = install()
        peer = await _wait(
            api.SimplePeer.create(name, port, host=host, reactor=reactor, **settings)
        )
        return cls(peer)

    @property
    def name(self) -> str:
        return self.deferred_api.name

    @property
    def port(self) -> int:
        return self.deferred_api.port

    @property
    def uri(self) -> str:
        return self.deferred_api.uri

    async def call(
        self, target: str, *, headers: dict[str, str] | None = None, srtp: str | None = None
    ) -> Call:
        """Place a call; returns at once with the :class:`Call` (await ``wait_for_answer``)."""
        return Call(await _wait(self.deferred_api.call(target, headers=headers, srtp=srtp)))

    async def wait_for_incoming(self) -> IncomingCall:
        return IncomingCall(await _wait(self.deferred_api.wait_for_incoming()))

    def try_incoming(self) -> IncomingCall | None:
        incoming = self.deferred_api.try_incoming()
        return None if incoming is None else IncomingCall(incoming)

    async def register(self, registrar: str | None = None, **credentials: Any) -> object:
        return await _wait(self.deferred_api.register(registrar, **credentials))

    def active_calls(self) -> list[Call]:
        return [Call(c) for c in self.deferred_api.active_calls()]

    async def close(self) -> None:
        """Hang up every call and unbind."""
        await _wait(self.deferred_api.close())

    async def __aenter__(self) -> SimplePeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
