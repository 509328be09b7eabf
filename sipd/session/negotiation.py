"""SDP offer/answer for one call, as pure functions of the call's SDP and a body.

The state table's guards (``AnswerAcceptable``, ``OfferAcceptable``,
``ReofferAcceptable``...) and the actions that apply their result both need
the outcome of negotiating a body; these functions compute it without side
effects, so a guard stays a pure function of the session's data and the
event. The session memoises the result per event so that the action does not
negotiate twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sipd.errors import SdpError
from sipd.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    Direction,
    NegotiationResult,
    SessionDescription,
    build_offer,
    is_remote_hold,
    negotiate_answer,
    parse_sdp,
    process_answer,
)
from sipd.sdp.crypto import NegotiatedSrtp

__all__ = [
    "Answered",
    "SdpContext",
    "answer_offer",
    "codecs_for",
    "make_offer",
    "media_changed",
    "offer_is_hold",
    "read_answer",
    "same_session",
]

_CODECS = {"PCMU": PCMU, "PCMA": PCMA}


@dataclass(frozen=True, slots=True)
class SdpContext:
    """What our side of the negotiation needs: where our media is and how we name it."""

    host: str
    port: int
    codecs: tuple[Codec, ...]
    session_id: int
    session_version: int
    #: The call's SRTP policy ("off", "optional", "required").
    srtp: str = "off"
    #: The SRTP keys in use (a re-answer keeps ours), None before or without SRTP.
    srtp_keys: NegotiatedSrtp | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    """A negotiated offer: the peer's SDP and the result (our answer included)."""

    remote: SessionDescription
    result: NegotiationResult


def codecs_for(names: list[str], dtmf: bool) -> tuple[Codec, ...]:
    """Our codecs in preference order, with telephone-event when DTMF is on."""
    codecs = [_CODECS[name.upper()] for name in names]
    if dtmf:
        codecs.append(TELEPHONE_EVENT)
    return tuple(codecs)


def make_offer(ctx: SdpContext) -> SessionDescription:
    """Our initial offer (UAC INVITE, or the 200 to an INVITE without SDP)."""
    return build_offer(
        ctx.host,
        ctx.port,
        list(ctx.codecs),
        session_id=ctx.session_id,
        session_version=ctx.session_version,
        srtp=ctx.srtp,
    )


def answer_offer(
    body: bytes, ctx: SdpContext, direction: Direction = Direction.SENDRECV
) -> Answered | SdpError:
    """Negotiate our answer to the peer's offer ``body``, or say why we cannot."""
    try:
        offer = parse_sdp(body, strict=False)  # a broken stream is rejected, not the offer
        result = negotiate_answer(
            offer,
            ctx.host,
            ctx.port,
            list(ctx.codecs),
            direction=direction,
            session_id=ctx.session_id,
            session_version=ctx.session_version,
            srtp=ctx.srtp,
            previous_srtp=ctx.srtp_keys,
        )
    except SdpError as exc:
        # A returned exception keeps its traceback, whose frame holds the
        # exception: a cycle per refused offer. The reason is in the message.
        return exc.with_traceback(None)
    return Answered(offer, result)


def read_answer(offer: SessionDescription, body: bytes, what: str) -> Answered | SdpError:
    """Take the peer's answer ``body`` to our ``offer``; ``what`` names the message."""
    try:
        if not body:
            raise SdpError(f"the {what} carried no SDP answer")
        answer = parse_sdp(body, strict=False)
        return Answered(answer, process_answer(offer, answer))
    except SdpError as exc:
        return exc.with_traceback(None)  # see answer_offer


def offer_is_hold(body: bytes) -> bool:
    """True for an offer that puts us on hold (sendonly/inactive, or c=0.0.0.0)."""
    if not body:
        return False
    try:
        return is_remote_hold(parse_sdp(body, strict=False))
    except SdpError:
        return False


def same_session(a: SessionDescription, b: SessionDescription) -> bool:
    """True when two SDPs differ at most in their version (RFC 3264 §8: nothing changed)."""
    if dataclasses.replace(a.origin, session_version=0) != dataclasses.replace(
        b.origin, session_version=0
    ):
        return False
    return _text_without_version(a) == _text_without_version(b)


def _text_without_version(sdp: SessionDescription) -> bytes:
    original = sdp.origin
    sdp.origin = dataclasses.replace(original, session_version=0)
    try:
        return sdp.to_bytes()
    finally:
        sdp.origin = original


def media_changed(old: NegotiationResult | None, new: NegotiationResult) -> bool:
    """True when a re-negotiation changes what media sends or where."""
    if old is None:
        return True
    return (
        old.codec != new.codec
        or old.remote_address != new.remote_address
        or old.remote_port != new.remote_port
        or old.direction != new.direction
        or old.telephone_event_pt != new.telephone_event_pt
    )
