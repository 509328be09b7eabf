"""SDP (RFC 8866): the session description model, its parser and its serialiser.

Sans-I/O: text in, dataclasses out, and back. Everything a UA needs for RTP telephony
is modelled (origin, connection, timing, m= lines, rtpmap, fmtp, ptime, direction); any
other line or attribute is kept verbatim so that re-serialising a peer's SDP loses nothing.
Extra m= lines (video, ...) are kept too, because RFC 3264 §6 makes an answer reject them
one by one with port 0 rather than drop them.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from sipd.errors import SdpError

__all__ = [
    "AUDIO_PROTO",
    "G722",
    "PCMA",
    "PCMU",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "TELEPHONE_EVENT_48K",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "Timing",
    "parse_sdp",
]

# The only transport we carry audio on; RTP/SAVP needs SRTP keys we do not have.
AUDIO_PROTO = "RTP/AVP"
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
        """Same encoding, whatever the (dynamic) payload type number each side picked.

        Name (any case), clock rate and channel count must agree, except that Opus is
        always ``opus/48000/2`` (RFC 7587 §7) and a peer that leaves the ``/2`` out
        still means Opus.
        """
        if self.name.casefold() != other.name.casefold() or self.clock_rate != other.clock_rate:
            return False
        return self.channels == other.channels or self.name.casefold() == "opus"

    def __str__(self) -> str:
        return f"{self.name}/{self.clock_rate}"


PCMU = Codec(0, "PCMU", 8000)
PCMA = Codec(8, "PCMA", 8000)
TELEPHONE_EVENT = Codec(101, "telephone-event", 8000, fmtp="0-16")
#: G.722: 16 kHz audio but an 8000 Hz RTP clock in SDP and timestamps (RFC 3551 §4.5.2).
G722 = Codec(9, "G722", 8000)
#: RFC 4733 events at Opus's 48 kHz RTP clock (events use the audio codec's clock).
TELEPHONE_EVENT_48K = Codec(110, "telephone-event", 48000, fmtp="0-16")


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
    #: What was wrong with this section's a= and c= lines, when parsed with
    #: ``strict=False``: the stream is then unusable, but only it (RFC 3264 §6).
    problems: list[str] = field(default_factory=list, compare=False, repr=False)

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


def parse_sdp(data: bytes | str, *, strict: bool = True) -> SessionDescription:
    """Parse an SDP body; :class:`SdpError` names the first line that is wrong.

    Lenient where real peers are sloppy (LF-only line ends, blank lines, s= anywhere
    at session level, t= missing), strict where guessing would be unsafe. With
    ``strict=False`` a broken a= or c= line inside a media section (an rtpmap without
    clock rate in a video stream) does not fail the whole body: it is kept verbatim and
    noted in that section's :attr:`MediaDescription.problems`, so an answerer can reject
    that one stream and use the others (RFC 3264 §6).
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
        elif kind in ("a", "c") and current is not None and not strict:
            _lenient_media_line(current, number, line)
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


def _lenient_media_line(media: MediaDescription, number: int, line: str) -> None:
    """Apply a media-level a= or c= line; a broken one is noted, not raised."""
    try:
        if line.startswith("a="):
            _at((number, line), functools.partial(_apply_attribute, media))
        else:
            media.connection = _at((number, line), _parse_connection)
    except SdpError as exc:
        media.problems.append(str(exc))
        if line.startswith("a="):
            name, colon, rest = line[2:].partition(":")
            media.attributes.append(Attribute(name, rest if colon else None))


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
