"""SDP (RFC 8866) parse and serialise, and RFC 3264 offer/answer for one audio stream.

Sans-I/O: text in, dataclasses out, and back. Everything a UA needs for G.711 telephony
is modelled (origin, connection, timing, m= lines, rtpmap, fmtp, ptime, direction); any
other line or attribute is kept verbatim so that re-serialising a peer's SDP loses nothing.
Extra m= lines (video, ...) are kept too, because RFC 3264 §6 makes an answer reject them
one by one with port 0 rather than drop them.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sipd.errors import SdpError, SdpNegotiationError

__all__ = [
    "PCMA",
    "PCMU",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "NegotiationResult",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "Timing",
    "build_offer",
    "is_remote_hold",
    "negotiate_answer",
    "parse_sdp",
    "process_answer",
    "reoffer",
]

# The only transport we carry audio on; RTP/SAVP needs SRTP keys we do not have.
_AUDIO_PROTO = "RTP/AVP"
# Letters that may appear at session level after "v=", and in a media section.
_SESSION_KINDS = frozenset("osiuepcbtrzkam")
_MEDIA_KINDS = frozenset("icbkam")
_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_T = TypeVar("_T")


class Direction(enum.StrEnum):
    """The RFC 3264 §5.1 direction attribute, seen from the side that wrote it."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def answer_to(self, remote: Direction) -> Direction:
        """The direction to use when our wish is ``self`` and the peer said ``remote``.

        We may only send what the peer receives and receive what it sends, which gives
        the RFC 3264 §6.1 mapping: sendonly → recvonly, recvonly → sendonly, inactive →
        inactive, and sendrecv → our own wish.
        """
        return Direction.from_flags(
            sends=self.sends and remote.receives, receives=self.receives and remote.sends
        )


@dataclass(frozen=True, slots=True)
class Codec:
    """An RTP payload format as offered or answered: what G.711 media code needs to know."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    def matches(self, other: Codec) -> bool:
        """Same encoding, whatever the (dynamic) payload type number each side picked."""
        return self.name.casefold() == other.name.casefold() and self.clock_rate == other.clock_rate

    def __str__(self) -> str:
        return f"{self.name}/{self.clock_rate}"


PCMU = Codec(0, "PCMU", 8000)
PCMA = Codec(8, "PCMA", 8000)
TELEPHONE_EVENT = Codec(101, "telephone-event", 8000, fmtp="0-16")


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 8866 §6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        suffix = "" if self.channels is None else f"/{self.channels}"
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{suffix}"


# RFC 3551 §6 static payload types a peer may list without an rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    pt: RtpMap(pt, name, 8000)
    for pt, name in [(0, "PCMU"), (3, "GSM"), (4, "G723"), (8, "PCMA"), (9, "G722"), (18, "G729")]
}


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=`` (RFC 8866 §5.2); ``session_version`` goes up by one per new offer."""

    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=`` (RFC 8866 §5.7); the address is kept as written (it may carry a /ttl)."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls("IN", "IP6" if ":" in address else "IP4", address)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=`` (RFC 8866 §5.9); telephony always uses ``0 0`` (unbounded)."""

    start: int = 0
    stop: int = 0

    def __str__(self) -> str:
        return f"{self.start} {self.stop}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """Any ``a=`` line we do not model; ``value`` is None for a flag like ``a=rtcp-mux``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section with the attributes that belong to it."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    rtpmaps: dict[int, RtpMap] = field(default_factory=dict)
    fmtps: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    direction: Direction | None = None
    attributes: list[Attribute] = field(default_factory=list)
    # i=, b= and k= lines as (letter, value), kept verbatim and in order.
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_rtp(self) -> bool:
        return self.proto.upper().startswith("RTP/")

    @property
    def codecs(self) -> list[Codec]:
        """The payload formats in the writer's preference order; unknown dynamic ones skipped."""
        result = []
        for fmt in self.formats if self.is_rtp else ():
            pt = int(fmt)
            rtpmap = self.rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if rtpmap is not None:
                channels = rtpmap.channels or 1
                fmtp = self.fmtps.get(pt)
                result.append(Codec(pt, rtpmap.encoding, rtpmap.clock_rate, channels, fmtp))
        return result

    def lines(self) -> list[str]:
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        out += _extra(self.extra_lines, "i")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += _extra(self.extra_lines, "bk")
        for fmt in self.formats if self.is_rtp else ():
            if (rtpmap := self.rtpmaps.get(int(fmt))) is not None:
                out.append(f"a=rtpmap:{rtpmap}")
            if (fmtp := self.fmtps.get(int(fmt))) is not None:
                out.append(f"a=fmtp:{fmt} {fmtp}")
        if self.ptime is not None:
            out.append(f"a=ptime:{self.ptime}")
        out += [f"a={attribute}" for attribute in self.attributes]
        if self.direction is not None:
            out.append(f"a={self.direction}")
        return out


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP body. Media-level c= and direction override the session-level ones."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: Timing = Timing()
    direction: Direction | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    # i= u= e= p= b= r= z= k= (and repeated t=) lines as (letter, value), verbatim.
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def audio(self) -> MediaDescription | None:
        """The audio stream we use: the first enabled audio m= line, else the first one."""
        streams = [m for m in self.media if m.media == "audio"]
        return next((m for m in streams if m.port != 0), streams[0] if streams else None)

    def direction_of(self, media: MediaDescription) -> Direction:
        return media.direction or self.direction or Direction.SENDRECV

    def connection_of(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection

    def to_bytes(self) -> bytes:
        """Canonical SDP: CRLF line ends, lines in the RFC 8866 §5 order."""
        out = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        out += _extra(self.extra_lines, "iuep")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += _extra(self.extra_lines, "b")
        out.append(f"t={self.timing}")
        out += _extra(self.extra_lines, "trz")
        out += _extra(self.extra_lines, "k")
        out += [f"a={attribute}" for attribute in self.attributes]
        if self.direction is not None:
            out.append(f"a={self.direction}")
        for media in self.media:
            out += media.lines()
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _extra(lines: Iterable[tuple[str, str]], kinds: str) -> list[str]:
    return [f"{kind}={value}" for kind, value in lines if kind in kinds]


# --- parsing ---------------------------------------------------------------------------


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; :class:`SdpError` names the first line that is wrong.

    Lenient where real peers are sloppy (LF-only line ends, blank lines, s= anywhere
    at session level, t= missing), strict where guessing would be unsafe.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP body is not UTF-8 text: {exc}") from None
    lines = [
        (number, line.rstrip("\r"))
        for number, line in enumerate(data.split("\n"), start=1)
        if line.strip()
    ]
    if not lines or lines[0][1] != "v=0":
        first = repr(lines[0][1]) if lines else "an empty body"
        raise SdpError(f"SDP must start with a 'v=0' line (missing v= line), got {first}")
    if len(lines) < 2 or not lines[1][1].startswith("o="):
        raise SdpError("SDP must have the o= line right after v= (missing o= line)")
    sdp = SessionDescription(origin=_at(lines[1], _parse_origin))
    seen_timing = False
    current: MediaDescription | None = None
    for number, line in lines[2:]:
        kind, sep, value = line.partition("=")
        allowed = _SESSION_KINDS if current is None else _MEDIA_KINDS
        if not sep or kind not in allowed:
            where = "at session level" if current is None else "in a media section"
            raise _line_error(number, line, f"expected one of {''.join(sorted(allowed))}= {where}")
        if kind == "m":
            current = _at((number, line), _parse_media)
            sdp.media.append(current)
        elif kind == "a":
            _at((number, line), functools.partial(_apply_attribute, current or sdp))
        elif kind == "c":
            (current or sdp).connection = _at((number, line), _parse_connection)
        elif current is not None:
            current.extra_lines.append((kind, value))
        elif kind == "o":
            raise _line_error(number, line, "duplicate o= line")
        elif kind == "s":
            sdp.session_name = value
        elif kind == "t" and not seen_timing:
            sdp.timing = _at((number, line), _parse_timing)
            seen_timing = True
        else:
            sdp.extra_lines.append((kind, value))
    return sdp


def _line_error(number: int, line: str, why: str) -> SdpError:
    return SdpError(f"bad SDP line {number} {line!r}: {why}")


def _at(numbered: tuple[int, str], parse: Callable[[str], _T]) -> _T:
    """Run ``parse`` on the value of a line, turning its ValueError into a SdpError."""
    number, line = numbered
    try:
        return parse(line[2:])
    except ValueError as exc:
        raise _line_error(number, line, str(exc)) from None


def _number(text: str, what: str, low: int = 0, high: int | None = None) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{what} {text!r} is not a number")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{what} {value} is outside {low}..{high}")
    return value


def _fields(value: str, names: str) -> list[str]:
    parts = value.split()
    if len(parts) != len(names.split(", ")):
        raise ValueError(f"expected {len(names.split(', '))} fields: {names}")
    return parts


def _parse_origin(value: str) -> Origin:
    user, sid, ver, *rest = _fields(
        value, "username, sess-id, sess-version, nettype, addrtype, address"
    )
    return Origin(user, _number(sid, "sess-id"), _number(ver, "sess-version"), *rest)


def _parse_connection(value: str) -> Connection:
    return Connection(*_fields(value, "nettype, addrtype, address"))


def _parse_timing(value: str) -> Timing:
    start, stop = _fields(value, "start, stop")
    return Timing(_number(start, "start time"), _number(stop, "stop time"))


def _parse_media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise ValueError("m= needs media, port, proto and at least one format")
    media, port_text, proto, *formats = parts
    port_text, slash, count_text = port_text.partition("/")
    port = _number(port_text, "port", 0, 65535)
    count = _number(count_text, "port count", 1) if slash else None
    description = MediaDescription(media, port, proto, formats, port_count=count)
    if description.is_rtp:
        for fmt in formats:
            _number(fmt, "payload type", 0, 127)
    return description


def _parse_rtpmap(value: str) -> RtpMap:
    pt_text, _, encoding = value.partition(" ")
    parts = encoding.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0]:
        raise ValueError("rtpmap needs '<pt> <encoding>/<clock rate>[/<channels>]'")
    channels = _number(parts[2], "channels", 1) if len(parts) == 3 else None
    clock_rate = _number(parts[1], "clock rate", 1)
    return RtpMap(_number(pt_text, "payload type", 0, 127), parts[0], clock_rate, channels)


def _apply_attribute(target: SessionDescription | MediaDescription, value: str) -> None:
    name, colon, rest = value.partition(":")
    if not colon and name in _DIRECTIONS:
        target.direction = Direction(name)
        return
    if isinstance(target, MediaDescription) and target.is_rtp:
        if name == "rtpmap":
            rtpmap = _parse_rtpmap(rest)
            if str(rtpmap.payload_type) in target.formats:
                target.rtpmaps[rtpmap.payload_type] = rtpmap
                return
        elif name == "fmtp":
            pt_text, _, params = rest.partition(" ")
            if pt_text in target.formats:
                target.fmtps[_number(pt_text, "payload type", 0, 127)] = params.strip()
                return
        elif name == "ptime":
            try:
                target.ptime = round(float(rest))
            except ValueError:
                raise ValueError(f"ptime {rest!r} is not a number") from None
            return
    target.attributes.append(Attribute(name, rest if colon else None))


# --- offer/answer (RFC 3264) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NegotiationResult:
    """What one offer/answer exchange settled for the audio stream.

    ``answer`` is the answer SDP (ours on the UAS side, the peer's on the UAC side);
    ``codec`` is None only when the audio stream is disabled (port 0), in which case
    ``remote_port`` is 0 and ``direction`` is inactive. ``direction`` is from our side.
    """

    answer: SessionDescription
    codec: Codec | None
    telephone_event_pt: int | None
    remote_address: str | None
    remote_port: int
    remote_ptime: int | None
    direction: Direction

    @property
    def telephone_event(self) -> bool:
        return self.telephone_event_pt is not None

    @property
    def audio_active(self) -> bool:
        return self.codec is not None and self.remote_port != 0


def build_offer(
    address: str,
    port: int,
    codecs: Sequence[Codec],
    *,
    direction: Direction | str = Direction.SENDRECV,
    session_id: int,
    session_version: int,
    ptime: int | None = 20,
    username: str = "sipd",
) -> SessionDescription:
    """An offer for one RTP/AVP audio stream listing ``codecs`` in our preference order."""
    if not 0 <= port <= 65535:
        raise SdpError(f"cannot offer RTP port {port}: it must be within 0..65535")
    if not codecs:
        raise SdpError("cannot build an SDP offer without at least one codec")
    if not address or any(c.isspace() for c in address):
        raise SdpError(f"cannot build an SDP offer for address {address!r}")
    return SessionDescription(
        origin=_origin(username, session_id, session_version, address),
        connection=Connection.for_address(address),
        media=[_audio_media(port, codecs, ptime, Direction(direction))],
    )


def negotiate_answer(
    offer: SessionDescription,
    local_address: str,
    local_port: int,
    supported: Sequence[Codec],
    *,
    direction: Direction | str = Direction.SENDRECV,
    session_id: int,
    session_version: int,
    ptime: int | None = 20,
    username: str = "sipd",
) -> NegotiationResult:
    """Answer ``offer`` as the UAS (RFC 3264 §6).

    The codec is the first of the *offerer's* list that we support, matched by name and
    clock rate and answered with the offerer's payload type number. We answer with that
    one codec (plus telephone-event) so the peer cannot switch codec mid-call. Every other
    m= line is rejected with port 0. Raises :class:`SdpNegotiationError` (488).
    """
    answer = SessionDescription(
        origin=_origin(username, session_id, session_version, local_address),
        connection=Connection.for_address(local_address),
        media=[_rejected(m) for m in offer.media],
    )
    index = _audio_index(offer, "offer")
    if index is None:
        return NegotiationResult(answer, None, None, None, 0, None, Direction.INACTIVE)
    offered = offer.media[index]
    common = [(o, s) for o in offered.codecs for s in supported if o.matches(s) and not _is_dtmf(o)]
    if not common:
        raise SdpNegotiationError(
            f"no common codec: offered {_names(offered.codecs)}, supported {_names(supported)}"
        )
    chosen, ours = common[0]
    # Our fmtp says what we want to receive; without one, echo the offerer's.
    chosen = dataclasses.replace(chosen, fmtp=ours.fmtp or chosen.fmtp)
    dtmf = _pick_dtmf(offered.codecs, supported, chosen.clock_rate)
    result = _result(answer, offer, offered, Direction(direction), chosen, dtmf, "offer")
    answered = [chosen] if dtmf is None else [chosen, dtmf]
    answer.media[index] = _audio_media(local_port, answered, ptime, result.direction)
    return result


def process_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiationResult:
    """Read the peer's answer to our ``offer`` as the UAC (RFC 3264 §7).

    The codec is the first in the answer that we offered; the payload type numbers are the
    answer's. Raises :class:`SdpNegotiationError` if the answer rejects or breaks the
    audio stream, or names no codec we offered.
    """
    index = _audio_index(offer, "offer")
    if index is None:
        return NegotiationResult(answer, None, None, None, 0, None, Direction.INACTIVE)
    if len(answer.media) != len(offer.media):
        raise SdpNegotiationError(
            f"answer has {len(answer.media)} m= lines but the offer had {len(offer.media)}"
            " (RFC 3264 §6 requires one per offered stream)"
        )
    ours, theirs = offer.media[index], answer.media[index]
    if theirs.media != "audio" or theirs.port == 0:
        raise SdpNegotiationError(f"answer rejected the audio stream (m={theirs.media} port 0)")
    offered = [c for c in ours.codecs if not _is_dtmf(c)]
    chosen = next((c for c in theirs.codecs if not _is_dtmf(c) and _find(c, offered)), None)
    if chosen is None:
        raise SdpNegotiationError(
            f"no common codec: offered {_names(ours.codecs)}, answered {_names(theirs.codecs)}"
        )
    dtmf = _pick_dtmf(theirs.codecs, ours.codecs, chosen.clock_rate)
    return _result(answer, answer, theirs, offer.direction_of(ours), chosen, dtmf, "answer")


def reoffer(previous: SessionDescription, *, direction: Direction | str) -> SessionDescription:
    """A new offer from our previous SDP, e.g. to hold (sendonly/inactive) or resume.

    RFC 3264 §8: the o= version goes up by exactly one and every enabled stream gets the
    new direction; the session-level one is dropped so it cannot contradict it.
    """
    sdp = copy.deepcopy(previous)
    version = sdp.origin.session_version + 1
    sdp.origin = dataclasses.replace(sdp.origin, session_version=version)
    sdp.direction = None
    for media in sdp.media:
        if media.port != 0:
            media.direction = Direction(direction)
    return sdp


def is_remote_hold(remote: SessionDescription) -> bool:
    """Whether the peer's SDP puts us on hold: it only sends (or nothing), or it uses the
    RFC 2543 style c=0.0.0.0, which RFC 3264 §8.4 says we must still understand."""
    audio = remote.audio
    if audio is None or audio.port == 0:
        return False
    connection = remote.connection_of(audio)
    held = remote.direction_of(audio) in (Direction.SENDONLY, Direction.INACTIVE)
    return held or (connection is not None and connection.address == "0.0.0.0")


def _origin(username: str, session_id: int, session_version: int, address: str) -> Origin:
    if session_id < 0 or session_version < 0:
        raise SdpError("SDP session id and version must not be negative")
    connection = Connection.for_address(address)
    return Origin(username, session_id, session_version, "IN", connection.addrtype, address)


def _audio_media(
    port: int, codecs: Sequence[Codec], ptime: int | None, direction: Direction
) -> MediaDescription:
    media = MediaDescription("audio", port, _AUDIO_PROTO, [], ptime=ptime, direction=direction)
    for codec in codecs:
        if not 0 <= codec.payload_type <= 127 or str(codec.payload_type) in media.formats:
            raise SdpError(f"payload type {codec.payload_type} of {codec} is invalid or repeated")
        media.formats.append(str(codec.payload_type))
        channels = None if codec.channels == 1 else codec.channels
        media.rtpmaps[codec.payload_type] = RtpMap(
            codec.payload_type, codec.name, codec.clock_rate, channels
        )
        if codec.fmtp is not None:
            media.fmtps[codec.payload_type] = codec.fmtp
    return media


def _rejected(offered: MediaDescription) -> MediaDescription:
    """RFC 3264 §6: a refused stream is answered with port 0 and the offered formats."""
    return MediaDescription(offered.media, 0, offered.proto, list(offered.formats))


def _audio_index(sdp: SessionDescription, role: str) -> int | None:
    """Index of the audio stream to use, None if all audio is disabled (port 0)."""
    audio = [i for i, m in enumerate(sdp.media) if m.media == "audio"]
    if not audio:
        kinds = ", ".join(m.media for m in sdp.media) or "none"
        raise SdpNegotiationError(f"{role} has no audio stream (m= lines: {kinds})")
    enabled = [i for i in audio if sdp.media[i].port != 0]
    usable = [i for i in enabled if sdp.media[i].proto.upper() == _AUDIO_PROTO]
    if enabled and not usable:
        protos = ", ".join(sdp.media[i].proto for i in enabled)
        raise SdpNegotiationError(f"{role} offers audio only over {protos}; we need RTP/AVP")
    return usable[0] if usable else None


def _result(
    answer: SessionDescription,
    remote: SessionDescription,
    media: MediaDescription,
    local: Direction,
    codec: Codec,
    dtmf: Codec | None,
    role: str,
) -> NegotiationResult:
    """Settle where to send (the peer's c= and port) and which way, from the peer's SDP."""
    connection = remote.connection_of(media)
    if connection is None:
        raise SdpNegotiationError(f"{role} has no c= line for its audio stream")
    direction = local.answer_to(_remote_direction(remote, media))
    dtmf_pt = None if dtmf is None else dtmf.payload_type
    return NegotiationResult(
        answer, codec, dtmf_pt, connection.address, media.port, media.ptime, direction
    )


def _remote_direction(sdp: SessionDescription, media: MediaDescription) -> Direction:
    """The peer's direction, where c=0.0.0.0 means it must not be sent to (RFC 3264 §8.4)."""
    direction = sdp.direction_of(media)
    connection = sdp.connection_of(media)
    if connection is not None and connection.address == "0.0.0.0":
        return Direction.from_flags(sends=direction.sends, receives=False)
    return direction


def _is_dtmf(codec: Codec) -> bool:
    return codec.name.casefold() == "telephone-event"


def _find(codec: Codec, candidates: Iterable[Codec]) -> Codec | None:
    return next((c for c in candidates if c.matches(codec)), None)


def _pick_dtmf(listed: Sequence[Codec], allowed: Sequence[Codec], rate: int) -> Codec | None:
    """RFC 4733 events at the speech codec's clock rate, if both sides have them."""
    for codec in listed:
        if _is_dtmf(codec) and codec.clock_rate == rate:
            ours = _find(codec, (c for c in allowed if _is_dtmf(c)))
            if ours is not None:
                return dataclasses.replace(codec, fmtp=codec.fmtp or ours.fmtp)
    return None


def _names(codecs: Iterable[Codec]) -> str:
    return ", ".join(str(c) for c in codecs) or "none"
