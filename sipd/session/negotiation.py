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
from sipd.media.codecs import AudioCodec, codec_by_name
from sipd.sdp import (
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
from sipd.sdp.model import TELEPHONE_EVENT_48K

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
    "sdp_codec",
]

#: telephone-event for each RTP clock rate a codec of ours uses (RFC 4733 §2.1).
_EVENTS = {8000: TELEPHONE_EVENT, 48000: TELEPHONE_EVENT_48K}


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


def sdp_codec(codec: AudioCodec) -> Codec:
    """How ``codec`` is written in our SDP: payload type, rtpmap and fmtp."""
    return Codec(codec.payload_type, codec.name, codec.clock_rate, codec.channels, codec.fmtp)


def codecs_for(names: list[str] | tuple[str, ...], dtmf: bool) -> tuple[Codec, ...]:
    """Our codecs in preference order (names in any case), with telephone-event when DTMF
    is on, at every RTP clock rate they use (8000, and 48000 for Opus).

    Names were checked by the config (or by ``call(codecs=...)``); an unknown one raises
    :class:`~sipd.errors.MediaValueError` listing the choices.
    """
    audio = list(dict.fromkeys(codec_by_name(name) for name in names))
    codecs = [sdp_codec(codec) for codec in audio]
    if dtmf:
        rates = dict.fromkeys(codec.clock_rate for codec in audio)
        codecs += [_EVENTS[rate] for rate in rates if rate in _EVENTS]
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
