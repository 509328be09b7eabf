"""Fake ports, services and SIP/SDP builders for driving a ``UnifiedSession`` without sockets.

Every command a session gives its ports (and every call it makes on its
services) is recorded in the call's :class:`Recorder` together with the index
of the table row whose actions issued it, so a test can compare what one row
did with what the row says. The fakes never post events by themselves: a
test plays the network and posts the answers.

The fake peer's 2xx to our INVITE takes the session timer we offer with us as
the refresher (``Call.answer_extra``); a UAS call's INVITE asks for none and
does not support timers, so that session refreshes with our own interval.
A test changes either, and a call's settings (``Call.configure``), before
the call starts.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.task import Clock

from sipd.config import SipdConfig
from sipd.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    NegotiationResult,
    SessionDescription,
    build_offer,
    negotiate_answer,
    parse_sdp,
)
from sipd.session.call_table import BEHAVIOUR, load_call_table
from sipd.session.machine import MachineFactory
from sipd.session.session import UnifiedSession
from sipd.session.table_model import Role, StateTable
from sipd.sip.message import Request, Response, parse_message
from sipd.sip.uri import Uri, parse_uri

__all__ = [
    "G729",
    "PEER_HOST",
    "PEER_PORT",
    "Call",
    "FakeMedia",
    "FakeMediaSession",
    "FakeServices",
    "FakeSignalling",
    "FakeStream",
    "Recorder",
    "World",
    "answer_sdp",
    "load_call_table",
    "offer_sdp",
    "sip_request",
    "sip_response",
]

#: Where the fake peer's media is.
PEER_HOST = "192.0.2.20"
PEER_PORT = 30000
PEER_URI = "sip:peer@192.0.2.20:5060"
OUR_URI = "sip:sipd@127.0.0.1:5060"
#: A codec sipd does not support: an offer of only this cannot be answered.
G729 = Codec(18, "G729", 8000)
_PEER_CODECS = (PCMU, PCMA, TELEPHONE_EVENT)


# -- SDP ---------------------------------------------------------------------------------
def offer_sdp(
    direction: str = "sendrecv", codecs: Sequence[Codec] = _PEER_CODECS, version: int = 1
) -> bytes:
    """The peer's SDP offer."""
    offer = build_offer(
        PEER_HOST, PEER_PORT, codecs, direction=direction, session_id=4242, session_version=version
    )
    return offer.to_bytes()


def answer_sdp(offer: SessionDescription | bytes, version: int = 1) -> bytes:
    """The peer's SDP answer to our ``offer``."""
    parsed = parse_sdp(offer) if isinstance(offer, bytes) else offer
    result = negotiate_answer(
        parsed, PEER_HOST, PEER_PORT, _PEER_CODECS, session_id=4242, session_version=version
    )
    return result.answer.to_bytes()


# -- SIP messages, parsed from text as they would arrive ------------------------------------
def _head(
    first: str, method: str, cseq: int, body: bytes, extra: str, to_tag: str, contact: str
) -> bytes:
    lines = [
        first,
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-test",
        "Max-Forwards: 70",
        f"From: <{PEER_URI}>;tag=peer-tag",
        f"To: <{OUR_URI}>{to_tag}",
        "Call-ID: call-1@test",
        f"CSeq: {cseq} {method}",
        f"Contact: <{contact}>",
        *([extra] if extra else []),
        *(["Content-Type: application/sdp"] if body else []),
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def sip_request(method: str, body: bytes = b"", *, cseq: int = 1, extra: str = "") -> Request:
    """A request from the peer, parsed from its wire form (``extra``: header lines, CRLF-joined)."""
    data = _head(f"{method} {OUR_URI} SIP/2.0", method, cseq, body, extra, ";tag=our-tag", PEER_URI)
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def sip_response(
    status: int,
    reason: str,
    body: bytes = b"",
    *,
    method: str = "INVITE",
    contact: str = PEER_URI,
    extra: str = "",
) -> Response:
    """A response from the peer to our ``method`` (a 3xx: ``contact`` is where it sends us;
    ``extra``: header lines, CRLF-joined)."""
    data = _head(f"SIP/2.0 {status} {reason}", method, 1, body, extra, ";tag=peer-to-tag", contact)
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


# -- the fakes ------------------------------------------------------------------------------
class Recorder:
    """Commands in the order given, each with the index of the row that gave it."""

    def __init__(self) -> None:
        self.log: list[tuple[int | None, tuple[Any, ...]]] = []
        self.session: UnifiedSession | None = None

    def __call__(self, *command: Any) -> None:
        row = self.session.machine.current_row if self.session is not None else None
        self.log.append((row.index if row is not None else None, command))

    def mark(self) -> int:
        return len(self.log)

    def since(self, mark: int) -> list[tuple[Any, ...]]:
        return [command for _, command in self.log[mark:]]

    def of_row(self, mark: int, index: int) -> list[tuple[Any, ...]]:
        return [command for row, command in self.log[mark:] if row == index]

    def count(self, *command: Any) -> int:
        return sum(1 for _, c in self.log if c == command)


class FakeSignalling:
    """A SignallingPort that records commands; what it reports is set by the test."""

    def __init__(self, record: Recorder) -> None:
        self.record = record
        self.invite_request: Request | None = None
        self.call_id: str | None = None
        self.dialog_ids: tuple[str, str, str] | None = ("call-1@test", "our-tag", "peer-tag")
        self.remote_target: Uri | None = parse_uri(PEER_URI)
        #: The last SDP we sent (INVITE, 200 OK, re-INVITE), for the peer to answer.
        self.sent_sdp = b""
        #: The extra headers of our last INVITE, 200 OK to the INVITE, and answer to a re-offer.
        self.invite_headers: list[tuple[str, str]] = []
        self.ok_headers: list[tuple[str, str]] = []
        self.reoffer_headers: list[tuple[str, str]] = []

    def invite(self, target: Uri, sdp: bytes, headers: Any, proxy: Uri | None) -> None:
        self.call_id, self.sent_sdp = "call-1@test", sdp
        self.invite_headers = list(headers)
        self.record("invite", str(target))

    def ack(self) -> None:
        self.record("ack")

    def cancel(self) -> None:
        self.record("cancel")

    def bye(self) -> None:
        self.record("bye")

    def ringing(self) -> None:
        self.record("ringing")

    def answer(self, sdp: bytes, headers: Any = ()) -> None:
        self.sent_sdp, self.ok_headers = sdp, list(headers)
        self.record("answer")

    def reject(self, status: int, reason: str | None = None, headers: Any = ()) -> None:
        self.record("reject", status, reason)

    def reinvite(self, sdp: bytes, headers: Any = ()) -> None:
        self.sent_sdp = sdp
        self.sent_headers = list(headers)
        offer = parse_sdp(sdp)
        assert offer.audio is not None
        self.record("reinvite", offer.direction_of(offer.audio).value)

    def answer_reoffer(self, txn: Any, status: int, sdp: bytes = b"", headers: Any = ()) -> None:
        self.reoffer_headers = list(headers)
        self.record("answer_reoffer", txn, status)

    def refer(self, target: str) -> None:
        self.record("refer", target)

    def answer_request(self, txn: Any, status: int, headers: Any = ()) -> None:
        self.record("answer_request", txn, status, tuple(headers))

    def refresh(self, method: str, sdp: bytes | None, headers: Any) -> None:
        """Recorded as ("refresh", method, direction of the SDP offered or None, headers)."""
        direction = None
        if sdp is not None:
            self.sent_sdp = sdp
            offer = parse_sdp(sdp)
            assert offer.audio is not None
            direction = offer.direction_of(offer.audio).value
        self.record("refresh", method, direction, tuple(headers))

    def notify_refer(self, status: int, reason: str, *, final: bool) -> None:
        self.record("notify_refer", status, reason, final)

    def release(self) -> None:
        self.record("release")


@dataclass
class FakeStream:
    """What the session reads of the RTP stream: when RTP or RTCP from the peer last arrived,
    and when (and for which address) ICMP first said the peer's port is unreachable."""

    last_heard: float | None = None
    unreachable_since: float | None = None
    unreachable_addr: tuple[str, int] | None = None


@dataclass
class FakeMediaSession:
    """What the session layer reads of its media: the local RTP port (for our SDP), and the
    stream's ``last_heard`` (for the media timeout)."""

    port: int
    negotiation: NegotiationResult | None = None
    running: bool = False
    stream: FakeStream = field(default_factory=FakeStream)


class FakeMedia:
    """A MediaPort that records commands and binds nothing."""

    def __init__(self, record: Recorder, port: int) -> None:
        self.record = record
        self.port = port
        self.media: Any = None  # a FakeMediaSession once opened

    def open(self) -> Any:
        self.media = FakeMediaSession(self.port)
        self.record("open")
        return self.media

    def start(self, negotiation: NegotiationResult) -> None:
        assert self.media is not None, "media started before it was opened"
        self.media.negotiation, self.media.running = negotiation, True
        self.record("start")

    def stop(self) -> None:
        if self.media is not None:
            self.media.running = False
        self.record("stop")

    def close(self) -> None:
        self.record("close")


class FakeServices:
    """CallServices for one call; place_call makes another fake call in the same world."""

    def __init__(self, world: World, record: Recorder) -> None:
        self.world = world
        self.record = record
        self.config = world.config
        self.clock = world.clock
        #: The calls placed through place_call (for a REFER).
        self.placed: list[Call] = []
        #: Raised by place_call instead of placing a call (no RTP port free...).
        self.refuse: Exception | None = None

    def offer_incoming(self, session: UnifiedSession) -> None:
        self.record("offer_incoming")

    def offer_transfer(self, old: UnifiedSession, new: UnifiedSession) -> None:
        self.record("offer_transfer")

    def place_call(self, target: str, headers: list[tuple[str, str]]) -> UnifiedSession:
        self.record("place_call", target, tuple(headers))
        if self.refuse is not None:
            raise self.refuse
        call = self.world.call(Role.UAC, target=target)
        self.placed.append(call)
        return call.session

    def route_for(self, target: Uri) -> Uri | None:
        return None

    def target_uri(self, target: str) -> Uri:
        return parse_uri(target)

    def session_ended(self, session: UnifiedSession) -> None:
        self.record("session_ended")


class Call:
    """One session with its own fake ports, services and recorder."""

    def __init__(self, world: World, role: Role, target: str, port: int) -> None:
        self.world = world
        self.log = Recorder()
        self.signalling = FakeSignalling(self.log)
        self.media = FakeMedia(self.log, port)
        self.services = FakeServices(world, self.log)
        if role is Role.UAS:
            self.signalling.invite_request = sip_request("INVITE", offer_sdp())
        #: Header lines of the peer's 2xx to our INVITE: it takes the interval we offer
        #: (RFC 4028) and leaves the refreshes to us.
        expires = world.config.session_expires
        self.answer_extra = (
            f"Session-Expires: {expires};refresher=uac\r\nRequire: timer" if expires else ""
        )
        #: Header lines of the peer's re-INVITEs (none: it asks for no session timer).
        self.request_extra = ""
        uri = parse_uri(target)
        self.session = UnifiedSession(
            self.services,
            world.factories[role],
            BEHAVIOUR,
            self.signalling,
            self.media,
            remote_uri=target,
            local_uri=OUR_URI,
            target=uri if role is Role.UAC else None,
        )
        self.log.session = self.session

    def configure(self, **changes: Any) -> None:
        """This call's settings (SipdConfig fields) from now on; the world's stay as they are."""
        self.services.config = dataclasses.replace(self.services.config, **changes)


_BUILT: dict[tuple[int, Role], tuple[StateTable, MachineFactory]] = {}


def _factory(table: StateTable, role: Role, clock: Clock) -> MachineFactory:
    """``MachineFactory(table, role, now=clock.seconds, clock=clock)``.

    Building walks the whole table with Automat (tens of milliseconds); the
    machine is built once per table and role, and each world gets a shallow
    copy that runs its timers on its own clock.
    """
    built = _BUILT.get((id(table), role))
    if built is None or built[0] is not table:
        built = _BUILT[id(table), role] = (table, MachineFactory(table, role, clock=Clock()))
    factory = copy.copy(built[1])
    factory.clock, factory.now = clock, clock.seconds
    return factory


@dataclass
class World:
    """A clock, the machines of both roles, and every call made in it."""

    table: StateTable
    config: SipdConfig = field(default_factory=lambda: SipdConfig(follow_redirects=2))
    clock: Clock = field(default_factory=Clock)
    calls: list[Call] = field(default_factory=list)
    factories: dict[Role, MachineFactory] = field(init=False)

    def __post_init__(self) -> None:
        self.factories = {role: _factory(self.table, role, self.clock) for role in Role}

    def call(self, role: Role, target: str = "sip:bob@192.0.2.10") -> Call:
        call = Call(
            self, role, target if role is Role.UAC else PEER_URI, 40000 + 2 * len(self.calls)
        )
        self.calls.append(call)
        return call
