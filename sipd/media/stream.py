"""One call's RTP stream: paced sending, symmetric RTP, jitter buffer, RTCP.

:class:`MediaStream` holds no socket and no timer. The media clock calls
:meth:`MediaStream.tick` every 20 ms, the RTP and RTCP protocols hand it
datagrams, and it sends through the two callables it was given. That keeps
every rule here (pacing, silence, marker bits, DTMF interleaving, latching,
loss and jitter statistics) testable without a reactor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from twisted.internet import defer

from sipd.errors import CallStateError, RtpParseError
from sipd.logs import Logger
from sipd.media.codecs import AudioCodec, CodecPath, codec_by_name
from sipd.media.dtmf import DtmfReceiver, DtmfSender
from sipd.media.frame import SAMPLE_RATE, AudioFrame
from sipd.media.g711 import PAYLOAD_TYPES as G711_CODECS
from sipd.media.jitter import JitterBuffer
from sipd.media.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_from_unix,
    parse_compound,
    round_trip_time,
)
from sipd.media.rtp import RtpPacket, RtpSender, is_rtcp, seq_diff
from sipd.media.sendqueue import SendQueue
from sipd.media.srtp import SrtpContext
from sipd.send_errors import SEND_ERRORS

__all__ = ["Addr", "MediaStream", "StreamStats"]

Addr = tuple[str, int]
_log = Logger()


@dataclass(slots=True)
class StreamStats:
    """Counters of one stream (also what ``call.stats()`` reports)."""

    packets_sent: int = 0
    octets_sent: int = 0
    packets_received: int = 0
    octets_received: int = 0
    packets_lost: int = 0
    fraction_lost: float = 0.0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    remote_fraction_lost: float | None = None
    remote_jitter_ms: float | None = None
    dropped_foreign: int = 0
    dropped_malformed: int = 0
    dropped_payload_type: int = 0
    duplicates: int = 0
    late: int = 0
    latched: int = 0
    dtmf_received: int = 0
    recv_queue_overflow: int = 0
    #: RTP and RTCP packets the socket refused (an unusable address, a full buffer).
    send_errors: int = 0
    #: The SRTP suite protecting the stream (None: plain RTP).
    srtp: str | None = None
    #: Received SRTP/SRTCP packets dropped: failed authentication, replays, malformed.
    srtp_dropped: int = 0
    #: Lost packets rebuilt from the next one's forward error correction (Opus).
    recovered: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in self.__slots__}


class MediaStream:
    """The sans-I/O media of one call."""

    def __init__(
        self,
        *,
        codec: str,
        payload_type: int,
        remote: Addr | None,
        send_rtp: Callable[[bytes, Addr], None],
        send_rtcp: Callable[[bytes, Addr], None],
        now: Callable[[], float],
        dtmf_payload_type: int | None = None,
        jitter_depth: int = 3,
        silence_when_idle: bool = True,
        cname: str = "sipd",
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        #: The rate of the audio the application sends and receives (AudioFrame).
        self.sample_rate = sample_rate
        self._out = SendQueue(sample_rate)
        self._silence = np.zeros(self._out.frame_samples, dtype=np.int16)
        self._audio_codec: AudioCodec | None = None
        self.payload_type = payload_type
        self.remote = remote
        self.remote_rtcp: Addr | None = (remote[0], remote[1] + 1) if remote else None
        self._send_rtp = send_rtp
        self._send_rtcp = send_rtcp
        self._now = now
        self.dtmf_payload_type = dtmf_payload_type
        self.silence_when_idle = silence_when_idle
        self.cname = cname
        self.sender = RtpSender(payload_type)
        self.dtmf_sender = DtmfSender(self.sender, payload_type=dtmf_payload_type or 101)
        self.dtmf_receiver = DtmfReceiver()
        self.jitter = JitterBuffer(depth=jitter_depth)
        self.reception: ReceptionStats | None = None
        self.remote_ssrc: int | None = None
        self.stats = StreamStats()
        self.set_codec(codec)
        #: When the peer was last heard from (RTP or RTCP), for the media timeout.
        self.last_heard: float | None = None
        #: When ICMP first said nothing listens at the peer's RTP or RTCP address
        #: since it was last heard (None: no such evidence), and that address.
        #: Hearing a packet clears it: the peer is alive after all.
        self.unreachable_since: float | None = None
        self.unreachable_addr: Addr | None = None
        #: Sending allowed (False while the call is on hold or inactive).
        self.sending = True
        self.receiving = True
        self.closed = False
        #: Protects what we send and checks what we receive, once SRTP is negotiated
        #: (:meth:`MediaSession.start <sipd.session.media_adapter.MediaSession.start>`).
        self.srtp: SrtpContext | None = None
        #: (tick of the last End packets, tick of the last digit's first packet, d)
        self._dtmf_waiters: deque[tuple[int, int, defer.Deferred[None]]] = deque()
        self._dtmf_ticks_done = 0
        self._dtmf_ticks_queued = 0
        self._paused_samples = 0
        self._paused = False
        self.frame_listeners: list[Callable[[AudioFrame], None]] = []
        self.dtmf_listeners: list[Callable[[str], None]] = []
        #: Called with no argument when :attr:`unreachable_since` is first set.
        self.unreachable_listeners: list[Callable[[], None]] = []

    # -- codec ------------------------------------------------------------------------
    @property
    def codec(self) -> str:
        """The codec's SDP name ("PCMU", "G722", "opus"); assigning one switches to it."""
        assert self._audio_codec is not None
        return self._audio_codec.name

    @codec.setter
    def codec(self, name: str) -> None:
        self.set_codec(name)

    @property
    def audio_codec(self) -> AudioCodec:
        """The codec in use, with its RTP clock rate and timestamp step."""
        assert self._audio_codec is not None
        return self._audio_codec

    @property
    def clock_rate(self) -> int:
        """The RTP clock rate of the stream (timestamps, jitter, telephone-event)."""
        return self.audio_codec.clock_rate

    def set_codec(self, codec: str | AudioCodec) -> None:
        """Encode and decode with ``codec`` from now on (a no-op if it is the one in use),
        resampling where its rate is not :attr:`sample_rate` (:class:`CodecPath`); the
        timestamp step and the telephone-event clock follow its RTP clock rate."""
        spec = codec if isinstance(codec, AudioCodec) else codec_by_name(codec)
        if spec is self._audio_codec:
            return
        self._audio_codec = spec
        path = CodecPath(spec, self.sample_rate)
        self._encode, self._decode, self._recover = path.encode, path.decode, path.recover
        #: "PCMU" or "PCMA" when the media clock may encode this stream's frames
        #: together with other calls' (:mod:`sipd.media.batch`): G.711 needing no
        #: resampling, a stateless table lookup. None: :meth:`tick` encodes alone.
        self.batch_codec = (
            spec.name if spec.name in G711_CODECS and path.pcm_rate == self.sample_rate else None
        )
        self._last_seq: int | None = None
        self._ts_step = spec.timestamp_step
        self.dtmf_sender.set_clock_rate(spec.clock_rate)
        self._ms_per_unit = 1000.0 / spec.clock_rate
        if self.reception is not None:
            self.reception = None  # the next packet starts stats at the new clock rate

    # -- sending ----------------------------------------------------------------------
    def queue_audio(self, frame: AudioFrame) -> defer.Deferred[None]:
        """Queue a frame; the Deferred fires when its last sample is on the wire."""
        if self.closed:
            return defer.fail(CallStateError("the call has ended; audio can no longer be sent"))
        return self._out.push(frame)

    @property
    def queued_samples(self) -> int:
        """Samples waiting to be sent."""
        return self._out.queued_samples

    def queue_dtmf(self, digits: str) -> defer.Deferred[None]:
        """Queue RFC 4733 digits; fires once the last end packet is sent.

        A receiver reports a digit on its event's first packet, so if the
        call ends after the last digit's first packet went out (an IVR
        hanging up on ``#``), the digits were delivered and the Deferred
        fires normally; it fails only for digits that never started.
        """
        if self.closed:
            return defer.fail(CallStateError("the call has ended; DTMF can no longer be sent"))
        if self.dtmf_payload_type is None:
            return defer.fail(
                CallStateError("the peer did not negotiate telephone-event; DTMF cannot be sent")
            )
        try:
            self.dtmf_sender.send(digits)
        except Exception:
            return defer.fail()
        if not digits:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        # Each digit takes tone + gap ticks; fire on the tick that sends the
        # last digit's End packets (its trailing gap is not waited for).
        per_digit = self.dtmf_sender.tone_ticks + self.dtmf_sender.gap_ticks
        last_starts = self._dtmf_ticks_queued + per_digit * (len(digits) - 1) + 1
        self._dtmf_ticks_queued += per_digit * len(digits)
        ends = self._dtmf_ticks_queued - self.dtmf_sender.gap_ticks
        self._dtmf_waiters.append((ends, last_starts, d))
        return d

    def tick(self) -> None:
        """One 20 ms slot: a DTMF packet, a queued frame, silence, or nothing."""
        samples = self.begin_tick()
        if samples is not None:
            self.end_tick(self._encode(samples))

    def begin_tick(self) -> NDArray[np.int16] | None:
        """The first half of :meth:`tick`: the slot's samples to encode, or None when the
        slot is settled already (DTMF sent, on hold, idle without silence, closed).

        The samples go to :meth:`end_tick` as a payload; in between, the media clock
        encodes the G.711 frames of every call of the tick together.
        """
        if self.closed:
            return None
        remote = self.remote
        if remote is None or not self.sending:
            self._drop_slot()
            return None
        if self.dtmf_sender.busy:
            if self._paused_samples:
                # Idle slots went by without packets: move the clock on before
                # an event takes its start timestamp from it.
                self.sender.advance(self._paused_samples)
                self._paused_samples = 0
            packets = self.dtmf_sender.tick()
            self._dtmf_ticks_done += 1
            if packets is not None:
                for packet in packets:
                    self._transmit(bytes(packet), remote, len(packet.payload))
                self._settle_dtmf()
                return None
            self._settle_dtmf()
        samples = self._out.take()
        if samples is None:
            if not self.silence_when_idle:
                self._paused = True
                self._paused_samples += self._ts_step
                return None
            samples = self._silence
        if self._paused:
            self._paused = False
            self.sender.resume(self._paused_samples)
            self._paused_samples = 0
        return samples

    def end_tick(self, payload: bytes) -> None:
        """The second half of :meth:`tick`: send the slot's payload, then tell the
        application its frames are on the wire.

        Between the halves other calls' code may have run (a DTMF Deferred that
        hangs this call up): a stream closed meanwhile sends nothing and fails
        the slot's frames, as if it had closed before its tick.
        """
        remote = self.remote
        if self.closed:
            self._out.fail(CallStateError("the call ended before this audio was sent"))
            return
        if remote is None:  # moved to nowhere meanwhile: consumed in real time, as on hold
            self._out.fire_sent()
            self.sender.advance(self._ts_step)
            self._paused = True
            return
        self._transmit(self.sender.packetize_bytes(payload, self._ts_step), remote, len(payload))
        if self._out.sent:  # silence finishes no frame: no call
            self._out.fire_sent()

    def _drop_slot(self) -> None:
        # On hold (or no remote yet): the clock runs on; queued audio is
        # consumed in real time so send_audio callers are not stuck.
        self._out.take()
        self._out.fire_sent()
        self.sender.advance(self._ts_step)
        self._paused = True

    def _settle_dtmf(self) -> None:
        while self._dtmf_waiters and self._dtmf_ticks_done >= self._dtmf_waiters[0][0]:
            self._dtmf_waiters.popleft()[2].callback(None)
        if not self.dtmf_sender.busy and not self._dtmf_waiters:
            self._dtmf_ticks_done = self._dtmf_ticks_queued = 0

    def _transmit(self, data: bytes, dest: Addr, payload_len: int) -> None:
        srtp = self.srtp
        if srtp is not None:
            protected = srtp.protect_rtp(data)
            if protected is None:  # counted by the context; never sent in the clear
                return
            data = protected
        try:
            self._send_rtp(data, dest)
        except SEND_ERRORS as exc:
            # Per packet, never into the media clock: counted, logged at debug.
            self.stats.send_errors += 1
            _log.debug("RTP send to {dest} failed: {exc}", dest=dest, exc=exc)
            return
        self.stats.packets_sent += 1
        self.stats.octets_sent += payload_len

    # -- receiving ----------------------------------------------------------------------
    def rtp_received(self, data: bytes, source: Addr) -> None:
        """One datagram on the RTP port (RTCP muxed on it is handled too)."""
        if self.closed:
            return
        if len(data) >= 2 and is_rtcp(data):
            self.rtcp_received(data, source)
            return
        srtp = self.srtp
        if srtp is not None:
            # Authenticated before anything else reads it: a forged or replayed
            # packet must not latch the address or count as heard.
            plain = srtp.unprotect_rtp(data)
            if plain is None:
                return
            data = plain
        simple = RtpPacket.parse_simple(data)
        if simple is not None:
            pt, _marker, sequence, timestamp, ssrc, payload = simple
        else:
            try:
                packet = RtpPacket.parse(data)
            except RtpParseError:
                self.stats.dropped_malformed += 1
                return
            pt, sequence, timestamp = packet.payload_type, packet.sequence, packet.timestamp
            ssrc, payload = packet.ssrc, packet.payload
        known = ssrc == self.remote_ssrc and source == self.remote
        if not known and not self._accept_source(ssrc, source):
            self.stats.dropped_foreign += 1
            return
        stats = self.stats
        stats.packets_received += 1
        stats.octets_received += len(payload)
        reception = self.reception
        if reception is None or reception.ssrc != ssrc:
            reception = self.reception = ReceptionStats(ssrc, self.audio_codec.clock_rate)
        now = self.last_heard = self._now()
        self.unreachable_since = None
        reception.update(sequence, timestamp, now)
        if pt == self.payload_type:
            pass
        elif pt == self.dtmf_payload_type and pt is not None:
            self._dtmf_payload(timestamp, payload)
            # An empty payload keeps the sequence space whole for the audio
            # jitter buffer; it is skipped on delivery.
            payload = b""
        else:
            stats.dropped_payload_type += 1
            payload = b""
        for item in self.jitter.push(sequence, timestamp, payload):
            self._deliver(item.sequence, item.timestamp, item.payload)

    def _accept_source(self, ssrc: int, source: Addr) -> bool:
        """Symmetric RTP: latch to the first SSRC's source; refuse other SSRCs."""
        if self.remote_ssrc is None:
            self.remote_ssrc = ssrc
            if source != self.remote:
                self._latch(source)
            return True
        if ssrc == self.remote_ssrc:
            if source != self.remote:
                self._latch(source)
            return True
        if source == self.remote:
            # The peer restarted its stream with a new SSRC.
            self.remote_ssrc = ssrc
            self.jitter.flush()
            return True
        return False

    def _latch(self, source: Addr) -> None:
        self.stats.latched += 1
        self.remote = source
        self.remote_rtcp = (source[0], source[1] + 1)

    def _dtmf_payload(self, timestamp: int, payload: bytes) -> None:
        try:
            digit = self.dtmf_receiver.receive_payload(timestamp, payload)
        except Exception:
            self.stats.dropped_malformed += 1
            return
        if digit is not None:
            self.stats.dtmf_received += 1
            for listener in list(self.dtmf_listeners):
                listener(digit)

    def _deliver(self, sequence: int, timestamp: int, payload: bytes) -> None:
        if self._recover is not None:
            last, self._last_seq = self._last_seq, sequence
            if payload and last is not None and seq_diff(sequence, last) == 2:
                self._conceal(sequence, timestamp, payload)
        if not payload:
            return
        if not self.receiving:
            return
        try:
            samples = self._decode(payload)
        except Exception:  # a payload the codec cannot read (Opus, G.722 length)
            self.stats.dropped_malformed += 1
            return
        frame = AudioFrame.trusted(samples, self.sample_rate, timestamp, sequence)
        for listener in self.frame_listeners:
            listener(frame)

    def _conceal(self, sequence: int, timestamp: int, payload: bytes) -> None:
        """One packet was lost just before this one: rebuild it from Opus's in-band FEC."""
        try:
            samples = self._recover(payload)  # type: ignore[misc]
        except Exception:
            return
        self.stats.recovered += 1
        ts = (timestamp - self._ts_step) & 0xFFFFFFFF
        frame = AudioFrame.trusted(samples, self.sample_rate, ts, (sequence - 1) & 0xFFFF)
        for listener in self.frame_listeners:
            listener(frame)

    def unreachable(self, addr: Addr) -> None:
        """ICMP port unreachable for a datagram we sent to ``addr``, the peer's RTP or RTCP.

        Evidence that the peer has gone (its process died) well before the media
        timeout's silence proves it. Only the first error after the peer was last
        heard is recorded and reported to :attr:`unreachable_listeners`; the
        errors that follow every further packet change nothing.
        """
        if self.closed or self.unreachable_since is not None:
            return
        if addr != self.remote and addr != self.remote_rtcp:
            return
        self.unreachable_since = self._now()
        self.unreachable_addr = addr
        for listener in list(self.unreachable_listeners):
            listener()

    # -- RTCP -----------------------------------------------------------------------------
    def rtcp_received(self, data: bytes, source: Addr) -> None:
        """A compound RTCP packet: SR timing, report blocks about our stream, BYE."""
        srtp = self.srtp
        if srtp is not None:
            plain = srtp.unprotect_rtcp(data)
            if plain is None:
                return
            data = plain
        try:
            packets = parse_compound(data)
        except Exception:
            self.stats.dropped_malformed += 1
            return
        now = self.last_heard = self._now()
        self.unreachable_since = None
        for packet in packets:
            if isinstance(packet, SenderReport):
                if self.reception is not None and packet.ssrc == self.reception.ssrc:
                    self.reception.on_sender_report(packet.ntp_timestamp, now)
                blocks = packet.reports
            elif isinstance(packet, ReceiverReport):
                blocks = packet.reports
            else:
                continue
            for block in blocks:
                if block.ssrc != self.sender.ssrc:
                    continue
                self.stats.remote_fraction_lost = block.fraction_lost / 256.0
                self.stats.remote_jitter_ms = block.jitter * self._ms_per_unit
                rtt = round_trip_time(block, now)
                if rtt is not None:
                    self.stats.rtt_ms = rtt * 1000.0

    def rtcp_report(self, *, bye: bool = False) -> None:
        """Send an SR (or RR if we sent nothing) with SDES CNAME (RFC 3550 §6.4)."""
        dest = self.remote_rtcp
        if dest is None:
            return
        now = self._now()
        blocks: tuple[ReportBlock, ...] = ()
        if self.reception is not None and self.reception.received:
            block = self.reception.report_block(now)
            blocks = (block,)
            self.stats.fraction_lost = block.fraction_lost / 256.0
            self.stats.packets_lost = block.cumulative_lost
            self.stats.jitter_ms = block.jitter * self._ms_per_unit
        packets: list[RtcpPacket] = []
        if self.sender.packet_count:
            packets.append(
                SenderReport(
                    ssrc=self.sender.ssrc,
                    ntp_timestamp=ntp_from_unix(now),
                    rtp_timestamp=self.sender.timestamp,
                    packet_count=self.sender.packet_count,
                    octet_count=self.sender.octet_count,
                    reports=blocks,
                )
            )
        else:
            packets.append(ReceiverReport(ssrc=self.sender.ssrc, reports=blocks))
        packets.append(SourceDescription.cname_for(self.sender.ssrc, self.cname))
        if bye:
            packets.append(Bye(sources=(self.sender.ssrc,)))
        data: bytes | None = build_compound(packets)
        if self.srtp is not None and data is not None:
            data = self.srtp.protect_rtcp(data)
        if data is None:
            return
        try:
            self._send_rtcp(data, dest)
        except SEND_ERRORS:
            self.stats.send_errors += 1

    def current_stats(self) -> StreamStats:
        """Statistics now (loss and jitter from the live reception state)."""
        if self.reception is not None:
            self.stats.packets_lost = max(0, self.reception.lost)
            self.stats.jitter_ms = self.reception.jitter * self._ms_per_unit
        jitter = self.jitter
        self.stats.duplicates = jitter.duplicates
        self.stats.late = jitter.late
        srtp = self.srtp
        self.stats.srtp = None if srtp is None else str(srtp.suite)
        if srtp is not None:
            self.stats.srtp_dropped = srtp.stats.dropped
        return self.stats

    def close(self) -> None:
        """Stop: deliver what the jitter buffer holds, fail pending sends."""
        if self.closed:
            return
        for item in self.jitter.flush():
            self._deliver(item.sequence, item.timestamp, item.payload)
        self.closed = True
        self._out.fail(CallStateError("the call ended before this audio was sent"))
        while self._dtmf_waiters:
            _, starts, d = self._dtmf_waiters.popleft()
            if d.called:
                continue
            if self._dtmf_ticks_done >= starts:
                d.callback(None)  # every digit started: the peer has them
            else:
                d.errback(CallStateError("the call ended before the DTMF digits were sent"))
