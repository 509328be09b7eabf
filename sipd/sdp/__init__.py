"""SDP (RFC 8866) parse and serialise, and RFC 3264 offer/answer for one audio stream.

Sans-I/O: text in, dataclasses out, and back. Everything a UA needs for G.711 telephony
is modelled (origin, connection, timing, m= lines, rtpmap, fmtp, ptime, direction); any
other line or attribute is kept verbatim so that re-serialising a peer's SDP loses nothing.
Extra m= lines (video, ...) are kept too, because RFC 3264 §6 makes an answer reject them
one by one with port 0 rather than drop them. The model and parser live in
:mod:`sipd.sdp.model`, offer/answer in :mod:`sipd.sdp.offer_answer`.
"""

from sipd.sdp.model import (
    PCMA,
    PCMU,
    STATIC_PAYLOAD_TYPES,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
    parse_sdp,
)
from sipd.sdp.offer_answer import (
    NegotiationResult,
    build_offer,
    is_remote_hold,
    negotiate_answer,
    process_answer,
    reoffer,
)

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
