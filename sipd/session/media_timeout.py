"""The media timeout: when an answered call's silent peer is given up, and how that reads.

``Active`` owns the ``MediaTimeout`` timer (the state table's ``media_timeout``
delay). Its deadline is ``media_timeout`` seconds after the last RTP or RTCP
from the peer, or after entering the state if that was later. ICMP "port
unreachable" for what we send the peer (:mod:`sipd.media.icmp`) is evidence
that it has gone, its process dead: the deadline is then at most
``media_unreachable_timeout`` seconds after the first such error, so a dead
peer's call ends in seconds instead of a minute. A packet heard clears the
evidence (the peer is alive), and so does a new SDP negotiation.

Pure functions of what the stream recorded, so the rule is tested without a
reactor and the session only asks.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["HeardStream", "media_deadline", "media_failure_context"]


class HeardStream(Protocol):
    """What the media timeout reads of a :class:`~sipd.media.stream.MediaStream`."""

    @property
    def last_heard(self) -> float | None:
        """When RTP or RTCP from the peer last arrived."""

    @property
    def unreachable_since(self) -> float | None:
        """When ICMP first said the peer's port is unreachable since it was last heard."""

    @property
    def unreachable_addr(self) -> tuple[str, int] | None:
        """The address that ICMP error was about."""


def media_deadline(
    stream: HeardStream, entered_at: float, timeout: float, unreachable_timeout: float
) -> float | None:
    """When the media timeout fires (None: ``timeout`` is 0, it is off).

    ``entered_at`` is when the call entered the state that owns the timer:
    silence before that (on hold, say) does not count, and neither does ICMP
    evidence older than it (the peer gets ``unreachable_timeout`` from then).
    ``unreachable_timeout`` 0 ignores ICMP evidence.
    """
    if not timeout:
        return None
    heard = stream.last_heard
    deadline = max(entered_at, heard if heard is not None else entered_at) + timeout
    since = stream.unreachable_since
    if since is not None and unreachable_timeout:
        deadline = min(deadline, max(entered_at, since) + unreachable_timeout)
    return deadline


def media_failure_context(
    stream: HeardStream | None, answered_at: float | None, now: float
) -> dict[str, object]:
    """The template fields of the media timeout's failure text.

    ``{media_silence}``: seconds the peer has been silent, since its last RTP
    or RTCP or, if none came, since the call was answered (empty before
    that); ``{media_evidence}``: `` (ICMP port unreachable for host:port)``
    when the stream holds such evidence, else empty.
    """
    if stream is None:
        return {"media_silence": "", "media_evidence": ""}
    heard = stream.last_heard
    start = heard if heard is not None else answered_at
    silence = f"{round(max(0.0, now - start), 1):g}" if start is not None else ""
    evidence = ""
    addr = stream.unreachable_addr
    if stream.unreachable_since is not None and addr is not None:
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        evidence = f" (ICMP port unreachable for {host}:{addr[1]})"
    return {"media_silence": silence, "media_evidence": evidence}
