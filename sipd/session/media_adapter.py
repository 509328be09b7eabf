"""The media side of a session: RTP/RTCP sockets, the stream, and its readers.

The :class:`MediaAdapter` owns the port allocator, the process's media clock
and one :class:`MediaSession` per call. A media session binds its RTP/RTCP
ports when the call is set up (so the port in our SDP is really ours), starts
its :class:`~sipd.media.stream.MediaStream` once SDP is negotiated, and fans
received audio out to the call's queue, subscribers and recorders. Sessions
reach their media only through the adapter and the registry's media id.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from sipd.config import SipdConfig
from sipd.errors import MediaValueError
from sipd.logs import Logger
from sipd.media.codecs import find_codec
from sipd.media.fanout import AudioSubscription, DigitQueue, WavRecorder
from sipd.media.frame import AudioFrame
from sipd.media.icmp import listen_udp
from sipd.media.ports import PortAllocator, PortsExhausted
from sipd.media.protocol import MediaClock, RtcpProtocol, RtpProtocol
from sipd.media.srtp import SrtpContext
from sipd.media.stream import MediaStream, StreamStats
from sipd.media.wav import read_wav
from sipd.sdp import NegotiationResult
from sipd.sdp.addresses import is_ip_address
from sipd.sdp.crypto import NegotiatedSrtp

__all__ = ["MediaAdapter", "MediaSession"]

_log = Logger()
#: The media clock's slot (20 ms packets).
_PTIME = 0.02


class MediaSession:
    """One call's media: sockets, stream, and everything that reads from it."""

    def __init__(self, adapter: MediaAdapter, media_id: str, port: int) -> None:
        self.adapter = adapter
        self.id = media_id
        self.port = port
        self.negotiation: NegotiationResult | None = None
        #: The SRTP keys the stream's context was built from (None: plain RTP).
        self.srtp_keys: NegotiatedSrtp | None = None
        self.rtp = RtpProtocol()
        self.rtcp = RtcpProtocol()
        self.listening: list[IListeningPort] = []
        config = adapter.config
        self.stream = MediaStream(
            codec="PCMU",
            payload_type=0,
            remote=None,
            send_rtp=self.rtp.send,
            send_rtcp=self.rtcp.send,
            now=adapter.clock.seconds,
            jitter_depth=config.jitter_depth,
            silence_when_idle=config.silence_when_idle,
            cname=f"{config.name}@{config.contact_host}",
            sample_rate=config.sample_rate,
        )
        self.queue = AudioSubscription()
        self.subscribers: list[AudioSubscription] = [self.queue]
        self.recorders: list[WavRecorder] = []
        self.digits = DigitQueue()
        self.dtmf_callbacks: list[Callable[[str], None]] = []
        self.stream.frame_listeners.append(self._frame)
        self.stream.dtmf_listeners.append(self._digit)
        self.stream.unreachable_listeners.append(self._unreachable)
        #: Called when ICMP first says the peer is gone (its session re-reads its
        #: timers: the media timeout may now be due sooner). Set by the session's
        #: media channel, dropped when the call ends.
        self.on_evidence: Callable[[], None] | None = None
        self.running = False
        self.ended = False

    def __repr__(self) -> str:
        return f"<MediaSession {self.id} port={self.port} running={self.running}>"

    # -- fan-out ---------------------------------------------------------------------
    def _frame(self, frame: AudioFrame) -> None:
        for sub in self.subscribers:
            sub.push(frame)
        for recorder in self.recorders:
            recorder.write(frame)

    def _digit(self, digit: str) -> None:
        self.digits.push(digit)
        for callback in list(self.dtmf_callbacks):
            try:
                callback(digit)
            except Exception:
                _log.failure("on_dtmf callback failed for digit {digit}", digit=digit)

    def _unreachable(self) -> None:
        hook = self.on_evidence
        if hook is not None:
            hook()

    def subscribe(self) -> AudioSubscription:
        """A new independent stream of received frames."""
        sub = AudioSubscription()
        if self.ended:
            sub.end()
        else:
            self.subscribers.append(sub)
        return sub

    def record(self, path: str | os.PathLike[str]) -> defer.Deferred[None]:
        """Record received audio to ``path`` until the call ends."""
        recorder = WavRecorder(path, self.stream.sample_rate)
        recorder.clock_rate = self.stream.clock_rate
        if self.ended:
            recorder.close()
        else:
            self.recorders.append(recorder)
        return recorder.done

    def stop_recording(self, path: str | os.PathLike[str] | None = None) -> None:
        """Finalise the recording to ``path`` (or every recording) now."""
        keep: list[WavRecorder] = []
        target = os.fspath(path) if path is not None else None
        for recorder in self.recorders:
            if target is None or recorder.path == target:
                recorder.close()
            else:
                keep.append(recorder)
        self.recorders = keep

    def play(self, path: str | os.PathLike[str]) -> defer.Deferred[None]:
        """Queue a WAV file's audio; fires when its last frame is sent."""
        try:
            rate = self.stream.sample_rate
            samples = read_wav(path, rate)
        except Exception:
            return defer.fail()
        if len(samples) == 0:
            return defer.succeed(None)
        return self.stream.queue_audio(AudioFrame(samples, rate))

    def stats(self) -> StreamStats:
        stats = self.stream.current_stats()
        # Frames dropped because nobody read recv_audio() fast enough.
        stats.recv_queue_overflow = self.queue.overflow
        return stats

    # -- lifecycle --------------------------------------------------------------------
    def start(self, negotiation: NegotiationResult) -> None:
        """Begin sending and receiving with the negotiated codec and address."""
        self.negotiation = negotiation
        codec = negotiation.codec
        stream = self.stream
        if codec is not None:
            spec = find_codec(codec.name, codec.clock_rate)
            if spec is None:  # negotiated from our own list, so only a bug gets here
                raise MediaValueError(f"negotiated codec {codec} has no implementation")
            stream.set_codec(spec)
            stream.payload_type = codec.payload_type
            stream.sender.payload_type = codec.payload_type
            for recorder in self.recorders:
                recorder.clock_rate = spec.clock_rate
        stream.dtmf_payload_type = negotiation.telephone_event_pt
        self._key(negotiation.srtp)
        if negotiation.telephone_event_pt is not None:
            stream.dtmf_sender.payload_type = negotiation.telephone_event_pt
        if negotiation.remote_address and negotiation.remote_port:
            host = negotiation.remote_address
            if host in ("0.0.0.0", "::"):
                stream.remote = None  # old-style hold: nowhere to send
            elif not is_ip_address(host):
                # A domain name in c=: never resolved on the RTP path. The
                # stream keeps the address it had (none at first) and sends
                # once the peer's first packet shows where it is (latching).
                pass
            else:
                stream.remote = (host, negotiation.remote_port)
                stream.remote_rtcp = (host, negotiation.remote_port + 1)
        # ICMP evidence was about the address the peer had; it starts afresh.
        stream.unreachable_since = None
        direction = negotiation.direction
        stream.sending = direction.sends if direction is not None else True
        stream.receiving = direction.receives if direction is not None else True
        self.rtp.stream = stream
        self.rtcp.stream = stream
        if not self.running:
            self.running = True
            self.adapter.clock_loop.add(stream)

    def _key(self, keys: NegotiatedSrtp | None) -> None:
        """Give the stream the SRTP context a negotiation settled (None: plain RTP).

        A re-negotiation that keeps the suite rekeys only the direction whose
        key changed, so the other keeps its rollover counter (RFC 3711 §3.3.1).
        """
        stream, previous = self.stream, self.srtp_keys
        self.srtp_keys = keys
        if keys is None:
            stream.srtp = None
        elif stream.srtp is None or previous is None or previous.suite is not keys.suite:
            stream.srtp = SrtpContext.from_negotiated(keys)
        else:
            stream.srtp.rekey(
                local=None if keys.local == previous.local else keys.local,
                remote=None if keys.remote == previous.remote else keys.remote,
            )

    def stop(self, later: Callable[[Callable[[], None]], None] | None = None) -> None:
        """Stop media: RTCP BYE, deliver buffered audio, end every reader.

        Readers (``recv_audio`` waiters, recorders, digit queues) are told
        through ``later`` when given: a session passes its own queue so that
        user code resumed by them sees the call's final state, not a
        transition half done.
        """
        if self.ended:
            return
        self.ended = True
        stream = self.stream
        if self.running:
            self.running = False
            self.adapter.clock_loop.remove(stream)
            stream.rtcp_report(bye=True)
        stream.close()
        self.rtp.stream = self.rtcp.stream = None
        # Nothing arrives any more: drop the stream's references back to us, so
        # that the call's objects are freed when it ends, not by a collection.
        stream.frame_listeners.clear()
        stream.dtmf_listeners.clear()
        stream.unreachable_listeners.clear()
        self.on_evidence = None
        if later is None:
            self._end_readers()
        else:
            later(self._end_readers)

    def _end_readers(self) -> None:
        for sub in self.subscribers:
            sub.end()
        for recorder in self.recorders:
            recorder.close()
        self.recorders.clear()
        self.digits.end()


class MediaAdapter:
    """Allocates, starts, stops and releases media sessions."""

    def __init__(self, config: SipdConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.clock = reactor
        self.ports = PortAllocator(config.media_port_min, config.media_port_max)
        self.clock_loop = MediaClock(
            reactor, rtcp_every=max(1, round(config.rtcp_interval / _PTIME)), phases=4
        )
        self.sessions: dict[str, MediaSession] = {}

    def allocate(self) -> MediaSession:
        """Bind an RTP/RTCP port pair for a new call.

        The whole configured range is searched: pairs our calls hold are
        skipped, and so are pairs the OS refuses to bind (another program
        holds the RTP or the RTCP port). :class:`PortsExhausted` only when no
        pair of the range is left.
        """
        refused: set[int] = set()
        media: MediaSession | None = None
        while True:
            try:
                port = self.ports.allocate(refused)
            except PortsExhausted:
                raise PortsExhausted(
                    f"no free RTP/RTCP port pair in {self.ports.low}-{self.ports.high}: "
                    f"{self.ports.in_use} in use by calls, {len(refused)} held by other "
                    "programs; widen media_port_min/media_port_max or end some calls"
                ) from None
            if media is None or media.listening:
                # A protocol half bound (RTP yes, RTCP no) is not used again.
                media = MediaSession(self, secrets.token_hex(8), port)
            media.port = port
            try:
                self._bind(media)
            except CannotListenError:
                self.ports.release(port)
                refused.add(port)
                for listening in media.listening:
                    listening.stopListening()
                continue
            self.sessions[media.id] = media
            return media

    def _bind(self, media: MediaSession) -> None:
        # listen_udp: ports that read ICMP port unreachable (evidence for the
        # media timeout) where the reactor allows it, else reactor.listenUDP.
        host = self.config.host
        media.listening.append(listen_udp(self.reactor, media.port, media.rtp, host))
        media.listening.append(listen_udp(self.reactor, media.port + 1, media.rtcp, host))

    def start(self, media: MediaSession, negotiation: NegotiationResult) -> None:
        media.start(negotiation)

    def stop(
        self, media: MediaSession, later: Callable[[Callable[[], None]], None] | None = None
    ) -> None:
        media.stop(later)

    def release(self, media: MediaSession) -> None:
        """Stop, unbind and give the port back."""
        media.stop()
        for listening in media.listening:
            listening.stopListening()
        media.listening.clear()
        self.ports.release(media.port)
        self.sessions.pop(media.id, None)

    def close(self) -> None:
        """Release every media session."""
        for media in list(self.sessions.values()):
            self.release(media)
