"""SRTP and SRTCP (RFC 3711) for one call, on libsrtp through ``pylibsrtp``.

An :class:`SrtpContext` holds two libsrtp sessions: the outbound one keyed with the
master key we put in our SDP, the inbound one with the peer's (RFC 4568 §6.1 / SDES,
see :mod:`sipd.sdp.crypto`). The media path protects each RTP/RTCP datagram just
before it is written to the socket and unprotects each one just after it is read,
before any parsing.

Everything that comes from the network is answered with a value, never an exception:
a packet that fails authentication, a replay (libsrtp's replay window, 128 packets,
RFC 3711 §3.3.2) or a malformed one gives None and bumps a counter in
:attr:`SrtpContext.stats`, so a forged or replayed datagram costs one HMAC check
and a counter, and never reaches the reactor. Keys are handed to libsrtp and not kept here;
nothing in ``repr`` or the counters shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pylibsrtp

from sipd.errors import MediaValueError
from sipd.sdp.crypto import NegotiatedSrtp, SrtpKeys, SrtpSuite

__all__ = ["SrtpContext", "SrtpError", "SrtpStats"]

#: libsrtp's profile for each suite (RFC 4568 §6.2 names, RFC 3711 transforms).
_PROFILES: dict[SrtpSuite, int] = {
    SrtpSuite.AES_CM_128_HMAC_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    SrtpSuite.AES_CM_128_HMAC_SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
_AUTH, _REPLAY, _MALFORMED = "auth", "replay", "malformed"
#: libsrtp's messages (pylibsrtp's ``Error`` text) for the two drops we count apart;
#: anything else it reports on a received packet counts as malformed.
_KINDS = {
    "authentication failure": _AUTH,
    "replay check failed (bad index)": _REPLAY,
    "replay check failed (index too old)": _REPLAY,
}
#: The smallest datagram worth handing to libsrtp: an RTP header or an SRTCP one.
_RTP_HEADER = 12
_RTCP_HEADER = 8
#: SRTCP trailer: E flag + 31-bit index, then the 80-bit tag both suites use for RTCP.
SRTCP_TRAILER = 4 + 10


class SrtpError(MediaValueError):
    """An SRTP context cannot be built: keys of different suites, or libsrtp refused them."""


@dataclass(slots=True)
class SrtpStats:
    """Counters of one context, for call statistics and metrics.

    ``auth_failures``, ``replays`` and ``malformed`` count inbound datagrams dropped
    (RTP and RTCP together); ``protect_failures`` counts outbound ones libsrtp would not
    protect (a repeated sequence number, an oversized packet). ``last_drop`` is the
    last reason, for a log line.
    """

    rtp_protected: int = 0
    rtp_unprotected: int = 0
    rtcp_protected: int = 0
    rtcp_unprotected: int = 0
    auth_failures: int = 0
    replays: int = 0
    malformed: int = 0
    protect_failures: int = 0
    last_drop: str | None = None

    @property
    def dropped(self) -> int:
        """Inbound datagrams dropped for any reason."""
        return self.auth_failures + self.replays + self.malformed


class SrtpContext:
    """Protect what we send with our key and check what we receive with the peer's.

    ``local`` and ``remote`` are the master key+salt of the two directions (RFC 3711
    §8.2), both of one suite. ``ssrc`` is not needed: libsrtp keys any outbound SSRC
    with ``local`` and any inbound one with ``remote`` (one stream each, created on the
    first authenticated packet), so a peer that changes SSRC keeps working.
    """

    __slots__ = ("_inbound", "_outbound", "stats", "suite")

    def __init__(self, local: SrtpKeys, remote: SrtpKeys) -> None:
        if local.suite is not remote.suite:
            raise SrtpError(
                f"SRTP keys of one call must share a suite, got {local.suite} (ours) and "
                f"{remote.suite} (the peer's)"
            )
        self.suite: SrtpSuite = local.suite
        self.stats = SrtpStats()
        profile = _PROFILES[self.suite]
        self._outbound = _session(local, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, profile)
        self._inbound = _session(remote, pylibsrtp.Policy.SSRC_ANY_INBOUND, profile)

    @classmethod
    def from_negotiated(cls, keys: NegotiatedSrtp) -> SrtpContext:
        """The context for what an SDES offer/answer settled (``SrtpDecision.keys``)."""
        return cls(keys.local, keys.remote)

    def rekey(self, *, local: SrtpKeys | None = None, remote: SrtpKeys | None = None) -> None:
        """Replace the key of one or both directions after a re-INVITE changed it.

        Only the direction given is rebuilt: rebuilding the other would restart its
        rollover counter (RFC 3711 §3.3.1) while the peer's stays where it is, and after
        65,536 packets the two would disagree. Compare the new ``SrtpDecision.keys`` with
        the old one and pass what differs; the suite cannot change (build a new context).
        """
        for keys in (local, remote):
            if keys is not None and keys.suite is not self.suite:
                raise SrtpError(f"cannot rekey a {self.suite} context with {keys.suite} keys")
        profile = _PROFILES[self.suite]
        if local is not None:
            self._outbound = _session(local, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, profile)
        if remote is not None:
            self._inbound = _session(remote, pylibsrtp.Policy.SSRC_ANY_INBOUND, profile)

    @property
    def tag_length(self) -> int:
        """Bytes an SRTP packet is longer than its RTP packet (the auth tag: 10 or 4)."""
        return self.suite.tag_length

    def protect_rtp(self, packet: bytes) -> bytes | None:
        """The SRTP packet for one RTP packet we send, or None (counted) if libsrtp
        refuses it, e.g. a sequence number sent twice, which would reuse keystream."""
        data = self._protect(self._outbound.protect, packet)
        if data is not None:
            self.stats.rtp_protected += 1
        return data

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        """The SRTCP packet for one RTCP compound packet we send, or None (counted)."""
        data = self._protect(self._outbound.protect_rtcp, packet)
        if data is not None:
            self.stats.rtcp_protected += 1
        return data

    def unprotect_rtp(self, packet: bytes) -> bytes | None:
        """The RTP packet inside a received SRTP packet, or None when it must be dropped:
        forged or damaged (auth failure), replayed, or not SRTP at all."""
        if len(packet) < _RTP_HEADER + self.suite.tag_length:
            self._drop(_MALFORMED, "SRTP packet shorter than a header and a tag")
            return None
        data = self._unprotect(self._inbound.unprotect, packet)
        if data is not None:
            self.stats.rtp_unprotected += 1
        return data

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The RTCP compound packet inside a received SRTCP packet, or None (counted)."""
        if len(packet) < _RTCP_HEADER + SRTCP_TRAILER:
            self._drop(_MALFORMED, "SRTCP packet shorter than a header and a trailer")
            return None
        data = self._unprotect(self._inbound.unprotect_rtcp, packet)
        if data is not None:
            self.stats.rtcp_unprotected += 1
        return data

    def _protect(self, protect: Callable[[bytes], bytes], packet: bytes) -> bytes | None:
        try:
            return protect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            self.stats.protect_failures += 1
            self.stats.last_drop = f"protect failed: {exc}"
            return None

    def _unprotect(self, unprotect: Callable[[bytes], bytes], packet: bytes) -> bytes | None:
        try:
            return unprotect(packet)
        except pylibsrtp.Error as exc:
            self._drop(_KINDS.get(str(exc), _MALFORMED), str(exc))
        except ValueError as exc:  # longer than libsrtp's 1500-byte buffer
            self._drop(_MALFORMED, str(exc))
        return None

    def _drop(self, kind: str, reason: str) -> None:
        stats = self.stats
        if kind == _AUTH:
            stats.auth_failures += 1
        elif kind == _REPLAY:
            stats.replays += 1
        else:
            stats.malformed += 1
        stats.last_drop = reason

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<SrtpContext {self.suite} sent={s.rtp_protected}+{s.rtcp_protected} "
            f"received={s.rtp_unprotected}+{s.rtcp_unprotected} dropped={s.dropped}>"
        )


def _session(keys: SrtpKeys, ssrc_type: int, profile: int) -> pylibsrtp.Session:
    """One libsrtp session for one direction; the Policy (and its key copy) is dropped
    once libsrtp has derived its session keys."""
    try:
        policy = pylibsrtp.Policy(key=keys.key_salt, ssrc_type=ssrc_type, srtp_profile=profile)
        return pylibsrtp.Session(policy)
    except (pylibsrtp.Error, ValueError, TypeError) as exc:
        raise SrtpError(f"libsrtp refused the {keys.suite} keys: {exc}") from None
