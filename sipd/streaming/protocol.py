"""The media-stream WebSocket protocol, without I/O: messages, re-framing, marks.

Why sans-I/O: what bots written for Twilio's Media Streams format rely on
(field names, string sequence numbers, marks echoed only after their audio,
``clear`` dropping queued playback, chunks of any length re-framed into
20 ms) is all rules about bytes and counters. Keeping them here lets unit
tests pin every rule without a socket or a clock; :mod:`sipd.streaming.bridge`
only moves what this module produces.

Two protocols share the same control messages (JSON in text frames):

* ``media-stream``: audio as base64 µ-law at 8 kHz inside ``media`` messages;
* ``linear16`` (alias ``l16-16k``): audio as raw 16-bit little-endian linear
  PCM at 16 kHz in binary frames, both ways.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sipd.errors import SipdError, SipdValueError
from sipd.media import g711

__all__ = [
    "LINEAR16",
    "MEDIA_STREAM",
    "BotClear",
    "BotMark",
    "BotMedia",
    "BotMessage",
    "BotOther",
    "MessageBuilder",
    "Playback",
    "StreamError",
    "StreamProtocolError",
    "StreamSpec",
    "normalise_protocol",
    "parse_bot_binary",
    "parse_bot_text",
]

MEDIA_STREAM = "media-stream"
LINEAR16 = "linear16"
_ALIASES = {
    MEDIA_STREAM: MEDIA_STREAM,
    "twilio": MEDIA_STREAM,
    LINEAR16: LINEAR16,
    "l16-16k": LINEAR16,
    "l16": LINEAR16,
}


class StreamError(SipdError):
    """A media stream could not start or ended badly (the message says why)."""


class StreamProtocolError(StreamError):
    """The bot sent something the media-stream protocol does not allow."""


def normalise_protocol(name: str) -> str:
    """``media-stream`` or ``linear16`` for any accepted spelling; else a clear error."""
    try:
        return _ALIASES[name.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(sorted(_ALIASES))
        raise SipdValueError(f"unknown stream protocol {name!r}: use one of {known}") from None


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What one stream carries: its protocol and audio format."""

    protocol: str = MEDIA_STREAM

    @property
    def sample_rate(self) -> int:
        """The rate of the audio on the socket."""
        return 16000 if self.protocol == LINEAR16 else 8000

    @property
    def frame_samples(self) -> int:
        """Samples in 20 ms at :attr:`sample_rate`."""
        return self.sample_rate // 50

    @property
    def media_format(self) -> dict[str, Any]:
        if self.protocol == LINEAR16:
            return {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
        return {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


# -- what the bot sends -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BotMedia:
    """Audio to play to the caller, as int16 samples at the stream's rate."""

    samples: NDArray[np.int16] = field(compare=False)


@dataclass(frozen=True, slots=True)
class BotMark:
    """Echo ``name`` back once the audio queued before it has been played."""

    name: str


@dataclass(frozen=True, slots=True)
class BotClear:
    """Drop every queued sample at once (barge-in)."""


@dataclass(frozen=True, slots=True)
class BotOther:
    """A message sipd does not act on (kept for logging)."""

    event: str


BotMessage = BotMedia | BotMark | BotClear | BotOther


def parse_bot_text(text: str | bytes, spec: StreamSpec) -> BotMessage:
    """Parse one JSON text frame from the bot.

    Raises :class:`StreamProtocolError` naming what is wrong; unknown events
    are returned as :class:`BotOther` (bots may send their own).
    """
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StreamProtocolError(f"the bot sent a text frame that is not JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise StreamProtocolError('the bot sent JSON without an "event" string field')
    event = msg["event"]
    if event == "media":
        media = msg.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise StreamProtocolError('a "media" message needs media.payload (base64 audio)')
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise StreamProtocolError("media.payload is not valid base64") from None
        if spec.protocol == LINEAR16:
            return parse_bot_binary(raw)
        return BotMedia(g711.ulaw_decode(raw))
    if event == "mark":
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise StreamProtocolError('a "mark" message needs mark.name (a string)')
        return BotMark(name)
    if event == "clear":
        return BotClear()
    return BotOther(event)


def parse_bot_binary(data: bytes) -> BotMedia:
    """16-bit little-endian PCM (an odd trailing byte is dropped, never misaligned)."""
    usable = len(data) - (len(data) % 2)
    samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
    return BotMedia(samples)


# -- what sipd sends ----------------------------------------------------------------------
class MessageBuilder:
    """Builds sipd's messages with the Media Streams field names and numbering.

    ``sequenceNumber`` counts every message sent, from "1", as a string;
    ``media.chunk`` counts media messages from "1"; ``media.timestamp`` is
    milliseconds of caller audio since the stream started (also a string).
    """

    def __init__(
        self,
        spec: StreamSpec,
        *,
        stream_sid: str,
        call_sid: str,
        account_sid: str = "sipd",
    ) -> None:
        self.spec = spec
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self._sequence = 0
        self._chunk = 0
        self._samples_sent = 0
        self._quoted_sid = json.dumps(stream_sid)

    def _next(self, event: str, **body: Any) -> str:
        self._sequence += 1
        msg: dict[str, Any] = {"event": event, "sequenceNumber": str(self._sequence)}
        msg.update(body)
        msg["streamSid"] = self.stream_sid
        return json.dumps(msg, separators=(",", ":"))

    def connected(self) -> str:
        # Twilio's "connected" carries no sequenceNumber nor streamSid.
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(
        self, *, from_number: str, to_number: str, parameters: dict[str, Any] | None = None
    ) -> str:
        custom = {str(k): v for k, v in (parameters or {}).items()}
        custom.setdefault("from_number", from_number)
        custom.setdefault("to_number", to_number)
        start = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": custom,
            "mediaFormat": self.spec.media_format,
        }
        return self._next("start", start=start)

    def media(self, samples: NDArray[np.int16]) -> str | bytes:
        """One chunk of caller audio: a JSON text frame, or PCM bytes for ``linear16``."""
        timestamp = self._samples_sent * 1000 // self.spec.sample_rate
        self._samples_sent += len(samples)
        if self.spec.protocol == LINEAR16:
            return samples.astype("<i2").tobytes()
        self._chunk += 1
        self._sequence += 1
        payload = base64.b64encode(g711.ulaw_encode(samples).tobytes()).decode("ascii")
        # The hot path (50 messages a second per call): formatted, not json.dumps'd;
        # every value is a digit string or base64, and the stream id is pre-quoted.
        return (
            f'{{"event":"media","sequenceNumber":"{self._sequence}","media":'
            f'{{"track":"inbound","chunk":"{self._chunk}","timestamp":"{timestamp}",'
            f'"payload":"{payload}"}},"streamSid":{self._quoted_sid}}}'
        )

    def dtmf(self, digit: str) -> str:
        return self._next("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    def mark(self, name: str) -> str:
        return self._next("mark", mark={"name": name})

    def stop(self) -> str:
        return self._next("stop", stop={"accountSid": self.account_sid, "callSid": self.call_sid})


# -- playback towards the caller ------------------------------------------------------------
#: Catching up: standing backlog must last this many played frames (0.5 s) before a
#: quiet frame is skipped; longer than a drained prompt of ``CATCH_UP_LIMIT`` lasts.
CATCH_UP_AFTER = 25
#: Catching up: only a backlog of at most this many frames (400 ms) is a live stream
#: running late; more is a prompt the bot sent ahead on purpose, played in full.
CATCH_UP_LIMIT = 20
#: Catching up: a frame whose samples all lie within ±this (-40 dBFS) is quiet.
QUIET_PEAK = 328


class Playback:
    """The bot's audio waiting to be played, re-framed into 20 ms, with its marks.

    Chunks of any length go in (:meth:`push`); whole frames come out
    (:meth:`take`), and a trailing part-frame only when the caller asks for it
    (the bridge does so when nothing else is left to send, so a bot that
    sends 137.5 ms chunks back to back is played without gaps). A mark is
    due once every sample pushed before it has been reported played
    (:meth:`played`). The queue is bounded: when a push would exceed
    ``max_samples`` the oldest queued samples make room, counted in
    :attr:`overflow` (the bot is flooding; what it sent last matters most).

    Catching up, why: a bot streaming live (an echo, a speech pipeline that
    sends as it synthesises) delivers 20 ms every 20 ms with some jitter. One
    frame arriving just after its tick makes every later frame wait one more
    tick, and since input and output run at the same rate that backlog never
    drains: latency ratchets up by 20 ms per hiccup. So when the queue was
    never empty nor above ``catch_up_limit`` frames at any of the last
    ``catch_up_after`` ticks (a live stream running late, not a prompt sent
    ahead, which drains in fewer ticks than that), up to the smallest backlog
    seen is skipped, quiet frames only (a pause, never speech); skipped audio
    counts as played for marks and in :attr:`caught_up`. ``catch_up_after=0``
    turns this off.
    """

    def __init__(
        self,
        frame_samples: int = 160,
        max_samples: int = 8000 * 60,
        *,
        catch_up_after: int = CATCH_UP_AFTER,
        catch_up_limit: int = CATCH_UP_LIMIT,
        quiet_peak: int = QUIET_PEAK,
    ) -> None:
        self.frame_samples = frame_samples
        self.max_samples = max_samples
        self.catch_up_after = catch_up_after
        self.catch_up_limit = catch_up_limit * frame_samples
        self.quiet_peak = quiet_peak
        self._chunks: deque[NDArray[np.int16]] = deque()
        self._offset = 0
        self.queued = 0
        #: Sample positions (in the whole stream) of the pushed, taken and played audio.
        self.pushed_total = 0
        self.taken_total = 0
        self.played_total = 0
        self._marks: deque[tuple[int, str]] = deque()
        self.overflow = 0
        #: Quiet samples skipped to catch up with a live stream running late.
        self.caught_up = 0
        self._run = 0
        self._run_low = 0
        self._skip = 0

    def push(self, samples: NDArray[np.int16]) -> None:
        n = len(samples)
        if n == 0:
            return
        if self.queued == 0 and self.played_total >= self.taken_total:
            self._run = self._skip = 0  # nothing queued nor playing: no backlog
        if n > self.max_samples:
            self.overflow += n - self.max_samples
            samples = samples[n - self.max_samples :]
            n = self.max_samples
        excess = self.queued + n - self.max_samples
        if excess > 0:
            self.overflow += excess
            self._discard(excess)
        self._chunks.append(samples)
        self.queued += n
        self.pushed_total += n

    def _discard(self, n: int) -> None:
        """Drop the oldest ``n`` queued samples, as if played (their marks come due)."""
        while n > 0 and self._chunks:
            head = self._chunks[0]
            take = min(n, len(head) - self._offset)
            n -= take
            self.queued -= take
            self.taken_total += take
            self.played_total += take
            self._offset += take
            if self._offset >= len(head):
                self._chunks.popleft()
                self._offset = 0

    def mark(self, name: str) -> list[str]:
        """Add a mark after what is queued; returns it at once if nothing is pending."""
        self._marks.append((self.pushed_total, name))
        return self._due()

    def take(self, allow_partial: bool = False) -> NDArray[np.int16] | None:
        """The next 20 ms frame, or None; a part-frame (padded) only if ``allow_partial``."""
        n = self.frame_samples
        while True:
            queued = self.queued
            if queued < n and not (allow_partial and queued > 0):
                return None
            out = self._next_frame()
            if not self._skip or not self._quiet(out):
                return out
            # Catching up (see the class doc): this quiet frame is skipped.
            self._skip -= 1
            skipped = min(n, queued)
            self.caught_up += skipped
            self.played_total += skipped

    def _next_frame(self) -> NDArray[np.int16]:
        n = self.frame_samples
        head = self._chunks[0]
        if self._offset == 0 and len(head) == n:
            self._chunks.popleft()
            out = head
        else:
            out = np.zeros(n, dtype=np.int16)
            filled = 0
            while filled < n and self._chunks:
                chunk = self._chunks[0]
                take = min(n - filled, len(chunk) - self._offset)
                out[filled : filled + take] = chunk[self._offset : self._offset + take]
                filled += take
                self._offset += take
                if self._offset >= len(chunk):
                    self._chunks.popleft()
                    self._offset = 0
        real = min(n, self.queued)
        self.queued -= real
        self.taken_total += real
        return out

    def _quiet(self, frame: NDArray[np.int16]) -> bool:
        peak = self.quiet_peak
        return int(frame.max()) <= peak and int(frame.min()) >= -peak

    def played(self, frame_samples: int) -> list[str]:
        """Record that a taken frame is on the wire; returns the marks now due.

        Called once per tick that played a frame, before the next :meth:`take`:
        what is still queued then is backlog, watched for catching up.
        """
        self.played_total = min(self.played_total + frame_samples, self.taken_total)
        self._watch()
        return self._due()

    def _watch(self) -> None:
        level = self.queued
        if not self.catch_up_after or not (self.frame_samples <= level <= self.catch_up_limit):
            self._run = self._skip = 0
            return
        self._run_low = level if self._run == 0 else min(self._run_low, level)
        self._run += 1
        if self._run >= self.catch_up_after:
            self._skip = self._run_low // self.frame_samples
            self._run = 0

    def clear(self) -> list[str]:
        """Drop everything queued; every pending mark is returned (as Twilio does)."""
        self._chunks.clear()
        self._offset = 0
        self.queued = 0
        self._run = self._skip = 0
        self.pushed_total = self.taken_total
        marks = [name for _, name in self._marks]
        self._marks.clear()
        return marks

    def _due(self) -> list[str]:
        due: list[str] = []
        while self._marks and self._marks[0][0] <= self.played_total:
            due.append(self._marks.popleft()[1])
        return due

    @property
    def pending_marks(self) -> int:
        return len(self._marks)
