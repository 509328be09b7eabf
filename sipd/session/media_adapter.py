"""The media side of a session: RTP ports now, the RTP stream once negotiated.

The :class:`MediaAdapter` owns the port allocator and one
:class:`MediaSession` per call. Sessions reach their media only through the
adapter and the registry's media id, so the media layer never holds a
reference to a session.
"""

from __future__ import annotations

import secrets

from sipd.config import SipdConfig
from sipd.media.ports import PortAllocator
from sipd.sdp import NegotiationResult

__all__ = ["MediaAdapter", "MediaSession"]


class MediaSession:
    """One call's media: its local port and, once negotiated, the remote side."""

    __slots__ = ("id", "negotiation", "port", "running")

    def __init__(self, media_id: str, port: int) -> None:
        self.id = media_id
        self.port = port
        self.negotiation: NegotiationResult | None = None
        self.running = False

    def __repr__(self) -> str:
        return f"<MediaSession {self.id} port={self.port} running={self.running}>"


class MediaAdapter:
    """Allocates, starts, stops and releases media sessions."""

    def __init__(self, config: SipdConfig) -> None:
        self.config = config
        self.ports = PortAllocator(config.media_port_min, config.media_port_max)
        self.sessions: dict[str, MediaSession] = {}

    def allocate(self) -> MediaSession:
        """Reserve an RTP/RTCP port pair for a new call."""
        port = self.ports.allocate()
        media = MediaSession(secrets.token_hex(8), port)
        self.sessions[media.id] = media
        return media

    def start(self, media: MediaSession, negotiation: NegotiationResult) -> None:
        """Begin media with the negotiated codec and remote address."""
        media.negotiation = negotiation
        media.running = True

    def stop(self, media: MediaSession) -> None:
        """Stop sending and receiving (the port stays reserved until release)."""
        media.running = False

    def release(self, media: MediaSession) -> None:
        """Stop and give the port back."""
        self.stop(media)
        self.ports.release(media.port)
        self.sessions.pop(media.id, None)

    def close(self) -> None:
        """Release every media session."""
        for media in list(self.sessions.values()):
            self.release(media)
