"""``Call`` and ``IncomingCall``: the simple faces of a :class:`UnifiedSession`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from sipd.api.types import CallDirection, CallId, CallState
from sipd.errors import CallError
from sipd.media.frame import AudioFrame
from sipd.session.session import UnifiedSession
from sipd.sip.body import sdp_body
from sipd.sip.headers import Headers
from sipd.sip.message import Request
from sipd.streaming import StreamEnd, stream_session

if TYPE_CHECKING:
    from sipd.session.machine import Transition

__all__ = ["Call", "IncomingCall", "direction_of"]


class Call:
    """A call in progress, placed or answered by a ``SimplePeer``.

    Methods that wait return Deferreds (await them in ``async def`` code);
    properties only read state.
    """

    def __init__(self, session: UnifiedSession, direction: CallDirection) -> None:
        self.session = session
        self.direction = direction
        self._id = CallId(session.id)

    def __repr__(self) -> str:
        return f"<Call {self._id} {self.direction.value} {self.remote_party} {self.state.name}>"

    # -- plain reads -----------------------------------------------------------------
    @property
    def id(self) -> CallId:
        """This call's id (stable for its whole life)."""
        return self._id

    @property
    def state(self) -> CallState:
        """The call's public state: the state table's ``call_state`` column."""
        return self.session.call_state

    @property
    def remote_party(self) -> str:
        """The other side's URI."""
        return self.session.remote_uri

    @property
    def sip_call_id(self) -> str | None:
        """The SIP Call-ID header value."""
        return self.session.call_id

    @property
    def failure(self) -> CallError | None:
        """Why the call failed, once it has."""
        return self.session.failure

    @property
    def state_path(self) -> list[str]:
        """The state-table states this call went through, in order."""
        return self.session.path

    @property
    def history(self) -> list[Transition]:
        """Every recorded transition (state, event, actions, next state, time)."""
        return self.session.history

    def is_active(self) -> bool:
        """True while the call is answered and not ended."""
        return self.state in (CallState.ACTIVE, CallState.ON_HOLD)

    # -- waits -------------------------------------------------------------------------
    def wait_for_answer(self) -> defer.Deferred[None]:
        """Fires when the call is answered.

        Fails with :class:`~sipd.errors.CallRejected` (carrying the status,
        e.g. 486), :class:`~sipd.errors.CallCancelled` or
        :class:`~sipd.errors.CallTimeout` otherwise.
        """
        return self.session.wait_for_answer().addCallback(lambda _: None)

    def wait_for_end(self) -> defer.Deferred[None]:
        """Fires once the call has ended, by either side."""
        return self.session.wait_for_end()

    def hangup(self) -> defer.Deferred[None]:
        """End the call: BYE if answered, CANCEL if still ringing. Fires when ended."""
        return self.session.hangup()

    # -- mid-call control ----------------------------------------------------------------
    def hold(self) -> defer.Deferred[None]:
        """Put the call on hold (re-INVITE with ``a=sendonly``); fires on the 2xx.

        Fails with :class:`~sipd.errors.CallRejected` carrying the status if
        the peer refuses; the previous SDP then stays in force.
        """
        return self.session.hold()

    def resume(self) -> defer.Deferred[None]:
        """Take the call off hold (re-INVITE with ``a=sendrecv``); fires on the 2xx."""
        return self.session.resume()

    def transfer(self, target: str | Call | UnifiedSession) -> defer.Deferred[None]:
        """Transfer the other party (REFER, RFC 3515).

        ``target`` is a URI (blind transfer) or another answered call of
        ours (attended transfer, RFC 5589 §7: the other party is asked to
        call that call's peer with ``Replaces``, which takes that call's
        place). Fires when the other party reports the new call answered
        (this call is then hung up; an attended target call ends when its
        peer sends us BYE); fails with the reported status otherwise.
        """
        return self.session.transfer(target.session if isinstance(target, Call) else target)

    def wait_for_transfer(self) -> defer.Deferred[Call]:
        """Fires with the new :class:`Call` that takes this one's place: the
        other party transferred us (REFER) and the call to the transfer target
        is answered, or an INVITE with Replaces for this call was answered."""
        return self.session.wait_for_transfer().addCallback(
            lambda new: Call(new, direction_of(new))
        )

    # -- audio -----------------------------------------------------------------------
    def send_audio(self, frame: AudioFrame) -> defer.Deferred[None]:
        """Queue ``frame`` for sending on the 20 ms clock; fires when it is on the wire.

        Awaiting each call paces the sender in real time. Frames of any
        length and sample rate are accepted (converted to the peer's ``sample_rate``,
        then to the codec's).
        """
        return self.session.send_audio(frame)

    def recv_audio(self) -> defer.Deferred[AudioFrame | None]:
        """The next received :class:`AudioFrame` (at the peer's ``sample_rate``), or None
        once the call has ended."""
        return self.session.recv_audio()

    def try_recv_audio(self) -> AudioFrame | None:
        """A received frame if one is waiting, else None (never waits)."""
        return self.session.try_recv_audio()

    def play_wav(self, path: str | os.PathLike[str]) -> defer.Deferred[None]:
        """Send a WAV file (any rate or channel count is converted); fires when sent.

        Fails with :class:`~sipd.errors.WavFormatError` naming the file if it
        is not a WAV file.
        """
        return self.session.play_wav(path)

    def record_wav(self, path: str | os.PathLike[str]) -> defer.Deferred[None]:
        """Record what this call receives into ``path``; fires when the file is final.

        The file is finalised when the call ends, so do not await this before
        hanging up: keep the Deferred and await it after.
        """
        return self.session.record_wav(path)

    def stop_recording(self, path: str | os.PathLike[str] | None = None) -> None:
        """Finalise a recording now (every recording when no path is given)."""
        self.session.stop_recording(path)

    def send_dtmf(self, digits: str) -> defer.Deferred[None]:
        """Send RFC 4733 DTMF digits (``0-9 * # A-D``); fires when all are sent."""
        return self.session.send_dtmf(digits)

    def on_dtmf(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(digit)`` for each DTMF digit received."""
        self.session.on_dtmf(callback)

    def recv_dtmf(self) -> defer.Deferred[str | None]:
        """The next received DTMF digit, or None once the call has ended."""
        return self.session.recv_dtmf()

    def try_recv_dtmf(self) -> str | None:
        """A received digit if one is waiting, else None."""
        return self.session.try_recv_dtmf()

    def stats(self) -> dict[str, object]:
        """Media statistics: packets sent/received, loss, jitter, RTT, codec."""
        return self.session.stats()

    # -- voice bots ------------------------------------------------------------------------
    def stream(
        self,
        url: str,
        *,
        protocol: str = "media-stream",
        parameters: dict[str, Any] | None = None,
        connect_timeout: float = 5.0,
        fallback_wav: str | os.PathLike[str] | None = None,
    ) -> defer.Deferred[StreamEnd]:
        """Bridge this call's audio to a WebSocket bot; fires with a :class:`StreamEnd`.

        ``protocol`` is ``"media-stream"`` (Twilio's Media Streams JSON, µ-law
        8 kHz) or ``"linear16"`` (16-bit PCM at 16 kHz in binary frames);
        ``parameters`` reach the bot as ``start.customParameters``. The call
        is answered first if it is still ringing out. When the bot closes
        the socket the call is hung up (after ``fallback_wav``, if given);
        when the caller hangs up the bot gets ``stop``. Fails with
        :class:`~sipd.streaming.StreamError` (and the call is hung up) if the
        bot cannot be reached within ``connect_timeout`` seconds.
        """
        answered = None if self.is_active() else self.wait_for_answer()
        return stream_session(
            self.session,
            url,
            reactor=self.session.services.clock,
            protocol=protocol,
            parameters=parameters,
            connect_timeout=connect_timeout,
            fallback_wav=fallback_wav,
            wait_for_answer=answered,
        )


def direction_of(session: UnifiedSession) -> CallDirection:
    """OUTGOING for a call we placed, INCOMING for one we answered."""
    return session.direction


class IncomingCall:
    """A call offered to us that is waiting for ``accept()`` or ``reject()``."""

    def __init__(
        self, session: UnifiedSession, on_accept: Callable[[Call], None] | None = None
    ) -> None:
        self.session = session
        self._on_accept = on_accept

    def __repr__(self) -> str:
        return f"<IncomingCall from {self.caller} to {self.callee}>"

    @property
    def id(self) -> CallId:
        return CallId(self.session.id)

    @property
    def caller(self) -> str:
        """The From URI of the INVITE."""
        return self.session.remote_uri

    # DESIGN.md's original name in the Rust API.
    from_ = caller

    @property
    def callee(self) -> str:
        """The To URI of the INVITE."""
        return self.session.local_uri

    @property
    def request_uri(self) -> str:
        """The Request-URI: what the caller dialled."""
        return str(self._invite.uri)

    @property
    def dialled(self) -> str:
        """The user part of the Request-URI (the dialled number or name)."""
        return self._invite.uri.user or ""

    @property
    def headers(self) -> Headers:
        """Every header of the INVITE, custom ones included."""
        return self._invite.headers

    @property
    def sdp(self) -> str | None:
        """The SDP offer as text, if any (alone or as a part of ``multipart/mixed``)."""
        body = sdp_body(self._invite)
        return body.decode("utf-8", "replace") if body else None

    @property
    def _invite(self) -> Request:
        request = self.session.signalling.invite_request
        assert request is not None, "an incoming call always has its INVITE"
        return request

    @property
    def is_pending(self) -> bool:
        """True while the call still waits for an answer: its state allows ``accept``."""
        return "accept" in self.session.state_info.allows

    def accept(self) -> defer.Deferred[Call]:
        """Answer with 200 OK; fires with the :class:`Call` once the caller ACKs."""
        call = Call(self.session, CallDirection.INCOMING)

        def answered(_: object) -> Call:
            if self._on_accept is not None:
                self._on_accept(call)
            return call

        return self.session.accept().addCallback(answered)

    def reject(self, code: int = 486, reason: str | None = "Busy Here") -> defer.Deferred[None]:
        """Refuse the call with a final status (486 Busy Here by default)."""
        if code != 486 and reason == "Busy Here":
            reason = None
        return self.session.reject(code, reason)

    def reject_busy(self) -> defer.Deferred[None]:
        """Refuse with 486 Busy Here."""
        return self.reject(486, "Busy Here")
