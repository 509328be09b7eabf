"""RFC 3264 offer/answer for one audio stream, on the SDP model of :mod:`sipd.sdp.model`.

Our offers, our answers to a peer's offer (codec choice, telephone-event,
direction, rejecting extra streams with port 0), reading the answer to our
offer, re-offers for hold and resume, and recognising a peer's hold.

SRTP keyed by SDES (RFC 4568, :mod:`sipd.sdp.crypto`) is part of the same
exchange: an offer carries our ``a=crypto`` lines under the call's policy, an
answer picks one of the peer's, and :attr:`NegotiationResult.srtp` holds the
keys the media path needs. Reading an answer needs no state beyond our offer:
the policy and our keys are read back from the offer's own ``m=`` line.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sipd.errors import SdpError, SdpNegotiationError
from sipd.sdp.addresses import is_usable_connection_address
from sipd.sdp.crypto import (
    RTP_AVP,
    RTP_SAVP,
    CryptoAttribute,
    NegotiatedSrtp,
    SrtpOffer,
    SrtpPolicy,
    answer_srtp,
    crypto_attributes,
    offer_srtp,
    process_srtp_answer,
)
from sipd.sdp.model import (
    AUDIO_PROTO,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
)

__all__ = [
    "NegotiationResult",
    "build_offer",
    "is_remote_hold",
    "negotiate_answer",
    "process_answer",
    "reoffer",
]


@dataclass(frozen=True, slots=True)
class NegotiationResult:
    """What one offer/answer exchange settled for the audio stream.

    ``answer`` is the answer SDP (ours on the UAS side, the peer's on the UAC side);
    ``codec`` is None only when the audio stream is disabled (port 0), in which case
    ``remote_port`` is 0 and ``direction`` is inactive. ``direction`` is from our side.
    ``srtp`` holds both directions' SRTP keys when the stream is encrypted, else None.
    """

    answer: SessionDescription
    codec: Codec | None
    telephone_event_pt: int | None
    remote_address: str | None
    remote_port: int
    remote_ptime: int | None
    direction: Direction
    srtp: NegotiatedSrtp | None = None

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
    srtp: SrtpPolicy | str = SrtpPolicy.OFF,
) -> SessionDescription:
    """An offer for one audio stream listing ``codecs`` in our preference order.

    ``srtp`` decides its proto and keys (:func:`~sipd.sdp.crypto.offer_srtp`): RTP/AVP
    in the clear, RTP/AVP with ``a=crypto`` lines (optional), or RTP/SAVP (required).
    """
    if not 0 <= port <= 65535:
        raise SdpError(f"cannot offer RTP port {port}: it must be within 0..65535")
    if not codecs:
        raise SdpError("cannot build an SDP offer without at least one codec")
    if not address or any(c.isspace() for c in address):
        raise SdpError(f"cannot build an SDP offer for address {address!r}")
    media = _audio_media(port, codecs, ptime, Direction(direction))
    offer_srtp(srtp).apply(media)
    return SessionDescription(
        origin=_origin(username, session_id, session_version, address),
        connection=Connection.for_address(address),
        media=[media],
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
    srtp: SrtpPolicy | str = SrtpPolicy.OFF,
    previous_srtp: NegotiatedSrtp | None = None,
) -> NegotiationResult:
    """Answer ``offer`` as the UAS (RFC 3264 §6).

    The audio stream is the first enabled RTP/AVP (or, unless ``srtp`` is off,
    RTP/SAVP) one we can use, its SRTP decided by
    :func:`~sipd.sdp.crypto.answer_srtp` (a stream refused for its keys counts as
    unusable; ``previous_srtp`` keeps our key in a re-answer); an audio stream we
    cannot use (no common codec, no usable c=, a broken attribute noted by a lenient
    parse) is rejected with port 0 in its place and the next one is tried. The codec is
    the first of the *offerer's* list that we support, matched by name and clock rate and
    answered with the offerer's payload type number. We answer with that one codec (plus
    telephone-event) so the peer cannot switch codec mid-call. Every other m= line is
    rejected with port 0. Raises :class:`SdpNegotiationError` (488), for the first
    audio stream's fault, when no audio stream is usable.
    """
    answer = SessionDescription(
        origin=_origin(username, session_id, session_version, local_address),
        connection=Connection.for_address(local_address),
        media=[_rejected(m) for m in offer.media],
    )
    policy = SrtpPolicy.parse(srtp)
    candidates = _audio_candidates(offer, "offer", _protos(policy))
    if not candidates:
        return NegotiationResult(answer, None, None, None, 0, None, Direction.INACTIVE)
    first_failure: SdpNegotiationError | None = None
    for index in candidates:
        try:
            return _answer_stream(
                answer,
                offer,
                index,
                (local_port, ptime),
                supported,
                Direction(direction),
                (policy, previous_srtp),
            )
        except SdpNegotiationError as exc:
            first_failure = first_failure or exc  # RFC 3264 §6: reject it, try the next
    assert first_failure is not None
    raise first_failure


def _answer_stream(
    answer: SessionDescription,
    offer: SessionDescription,
    index: int,
    local: tuple[int, int | None],
    supported: Sequence[Codec],
    direction: Direction,
    srtp: tuple[SrtpPolicy, NegotiatedSrtp | None],
) -> NegotiationResult:
    """Accept the offer's audio stream ``index`` in ``answer``, or raise why it is unusable.

    ``local`` is our (RTP port, ptime); ``srtp`` the policy and the keys in use so far.
    """
    local_port, ptime = local
    offered = offer.media[index]
    if offered.problems:
        raise SdpNegotiationError(f"offer's audio stream is unusable: {offered.problems[0]}")
    decision = answer_srtp(srtp[0], offered, previous=srtp[1])
    if decision.refused:
        raise decision.error()
    common = [(o, s) for o in offered.codecs for s in supported if o.matches(s) and not _is_dtmf(o)]
    if not common:
        raise SdpNegotiationError(
            f"no common codec: offered {_names(offered.codecs)}, supported {_names(supported)}"
        )
    chosen, ours = common[0]
    # Our fmtp says what we want to receive; without one, echo the offerer's.
    # Our channel count too: Opus is answered as opus/48000/2 even when the offer
    # left the /2 out (RFC 7587 §7).
    chosen = dataclasses.replace(chosen, fmtp=ours.fmtp or chosen.fmtp, channels=ours.channels)
    dtmf = _pick_dtmf(offered.codecs, supported, chosen.clock_rate)
    result = _result(answer, offer, offered, direction, chosen, dtmf, "offer")
    answered = [chosen] if dtmf is None else [chosen, dtmf]
    media = answer.media[index] = _audio_media(local_port, answered, ptime, result.direction)
    decision.apply(media)
    return dataclasses.replace(result, srtp=decision.keys)


def process_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiationResult:
    """Read the peer's answer to our ``offer`` as the UAC (RFC 3264 §7).

    The codec is the first in the answer that we offered; the payload type numbers are the
    answer's. Raises :class:`SdpNegotiationError` if the answer rejects or breaks the
    audio stream, names no codec we offered, or answers our SRTP offer with keys we
    cannot use (:func:`~sipd.sdp.crypto.process_srtp_answer`).
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
    if theirs.problems:
        raise SdpNegotiationError(f"answer's audio stream is unusable: {theirs.problems[0]}")
    offered = [c for c in ours.codecs if not _is_dtmf(c)]
    chosen = next((c for c in theirs.codecs if not _is_dtmf(c) and _find(c, offered)), None)
    if chosen is None:
        raise SdpNegotiationError(
            f"no common codec: offered {_names(ours.codecs)}, answered {_names(theirs.codecs)}"
        )
    decision = process_srtp_answer(_our_srtp_offer(ours), theirs)
    if decision.refused:
        raise decision.error()
    dtmf = _pick_dtmf(theirs.codecs, ours.codecs, chosen.clock_rate)
    result = _result(answer, answer, theirs, offer.direction_of(ours), chosen, dtmf, "answer")
    return dataclasses.replace(result, srtp=decision.keys)


def _our_srtp_offer(ours: MediaDescription) -> SrtpOffer:
    """The SRTP side of our own offer, read back from its ``m=`` line: RTP/SAVP means
    ``required``, RTP/AVP with crypto lines ``optional``, without them ``off``."""
    lines = tuple(line for line in crypto_attributes(ours) if isinstance(line, CryptoAttribute))
    if not lines:
        return SrtpOffer(SrtpPolicy.OFF, ours.proto)
    required = ours.proto.upper() == RTP_SAVP
    return SrtpOffer(SrtpPolicy.REQUIRED if required else SrtpPolicy.OPTIONAL, ours.proto, lines)


def _protos(policy: SrtpPolicy) -> tuple[str, ...]:
    """The audio protos an offer may use under ``policy``."""
    return (RTP_AVP,) if policy is SrtpPolicy.OFF else (RTP_AVP, RTP_SAVP)


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
    media = MediaDescription("audio", port, AUDIO_PROTO, [], ptime=ptime, direction=direction)
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
    candidates = _audio_candidates(sdp, role, (RTP_AVP, RTP_SAVP))
    return candidates[0] if candidates else None


def _audio_candidates(
    sdp: SessionDescription, role: str, protos: tuple[str, ...] = (RTP_AVP,)
) -> list[int]:
    """Indexes of the enabled audio streams over ``protos``, in order; empty if all are
    disabled."""
    audio = [i for i, m in enumerate(sdp.media) if m.media == "audio"]
    if not audio:
        kinds = ", ".join(m.media for m in sdp.media) or "none"
        raise SdpNegotiationError(f"{role} has no audio stream (m= lines: {kinds})")
    enabled = [i for i in audio if sdp.media[i].port != 0]
    usable = [i for i in enabled if sdp.media[i].proto.upper() in protos]
    if enabled and not usable:
        offered = ", ".join(sdp.media[i].proto for i in enabled)
        needed = " or ".join(protos)
        hint = "" if RTP_SAVP in protos else " (RTP/SAVP needs srtp='optional' or 'required')"
        raise SdpNegotiationError(
            f"{role} offers audio only over {offered}; we need {needed}{hint}"
        )
    return usable


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
    if not is_usable_connection_address(connection.address):
        raise SdpNegotiationError(
            f"{role} has no usable address in c= for its audio stream: {connection.address!r}"
        )
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
