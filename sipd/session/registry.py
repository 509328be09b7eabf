"""The id maps that let every layer find its session.

Signalling knows dialogs, media knows media sessions, the application knows
sessions. :class:`SessionRegistry` maps session ↔ dialog ↔ media ids in both
directions, and :meth:`SessionRegistry.remove_session` drops every mapping of
a session at once, so after the last call ends the registry is empty.
"""

from __future__ import annotations

__all__ = ["DialogKey", "MediaSessionId", "SessionId", "SessionRegistry"]

SessionId = str
DialogKey = str
MediaSessionId = str


class SessionRegistry:
    """Bidirectional session/dialog/media id maps."""

    __slots__ = (
        "_dialog_to_session",
        "_media_to_session",
        "_session_to_dialog",
        "_session_to_media",
    )

    def __init__(self) -> None:
        self._session_to_dialog: dict[SessionId, DialogKey] = {}
        self._dialog_to_session: dict[DialogKey, SessionId] = {}
        self._session_to_media: dict[SessionId, MediaSessionId] = {}
        self._media_to_session: dict[MediaSessionId, SessionId] = {}

    def register_dialog(self, session_id: SessionId, dialog_id: DialogKey) -> None:
        """Map a session to its dialog (replacing an earlier dialog of the session)."""
        old = self._session_to_dialog.get(session_id)
        if old is not None:
            self._dialog_to_session.pop(old, None)
        self._session_to_dialog[session_id] = dialog_id
        self._dialog_to_session[dialog_id] = session_id

    def register_media(self, session_id: SessionId, media_id: MediaSessionId) -> None:
        """Map a session to its media session."""
        old = self._session_to_media.get(session_id)
        if old is not None:
            self._media_to_session.pop(old, None)
        self._session_to_media[session_id] = media_id
        self._media_to_session[media_id] = session_id

    def session_by_dialog(self, dialog_id: DialogKey) -> SessionId | None:
        """The session owning ``dialog_id``, if any."""
        return self._dialog_to_session.get(dialog_id)

    def session_by_media(self, media_id: MediaSessionId) -> SessionId | None:
        """The session owning ``media_id``, if any."""
        return self._media_to_session.get(media_id)

    def dialog_by_session(self, session_id: SessionId) -> DialogKey | None:
        """The dialog of ``session_id``, if any."""
        return self._session_to_dialog.get(session_id)

    def media_by_session(self, session_id: SessionId) -> MediaSessionId | None:
        """The media session of ``session_id``, if any."""
        return self._session_to_media.get(session_id)

    def remove_session(self, session_id: SessionId) -> None:
        """Forget every mapping of ``session_id``."""
        dialog = self._session_to_dialog.pop(session_id, None)
        if dialog is not None:
            self._dialog_to_session.pop(dialog, None)
        media = self._session_to_media.pop(session_id, None)
        if media is not None:
            self._media_to_session.pop(media, None)

    def __len__(self) -> int:
        """How many sessions hold at least one mapping."""
        return len(set(self._session_to_dialog) | set(self._session_to_media))

    def is_empty(self) -> bool:
        """True when no mapping of any kind remains."""
        return not (
            self._session_to_dialog
            or self._dialog_to_session
            or self._session_to_media
            or self._media_to_session
        )
