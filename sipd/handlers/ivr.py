"""``ivr``: a small voicemail — prompt, DTMF menu, message after the tone.

Settings (paths relative to the config file's folder):

``prompt``
    WAV played when the call is answered (default: a short two-tone chime).
``digits``
    Map of digit to WAV played when the caller presses it (optional).
``digit_timeout``
    Seconds to wait for a digit after the prompt (default 5).
``record_dir``
    Where messages go: ``<time>-<call>.wav`` plus a ``.json`` sidecar with
    caller, callee, start time, duration and the digits pressed.
``max_message``
    Longest message in seconds (default 60); ``#`` also ends it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from twisted.internet import defer

from sipd import Defer, InviteDetails, UnifiedSession
from sipd.errors import CallStateError, ConfigError
from sipd.handlers.base import HandlerBase
from sipd.logs import Logger
from sipd.media.frame import AudioFrame
from sipd.media.tones import tone

__all__ = ["IvrHandler"]

_log = Logger()


class IvrHandler(HandlerBase):
    """Plays a prompt, reads a digit, records a message after the beep."""

    def __init__(self, coordinator: Any, settings: dict[str, Any]) -> None:
        super().__init__(coordinator, settings)
        base = str(settings.get("_config_dir") or os.getcwd())

        def path(value: object, key: str) -> str:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"handler.settings.{key}: {value!r} must be a file path")
            full = value if os.path.isabs(value) else os.path.join(base, value)
            if not os.path.exists(full):
                raise ConfigError(f"handler.settings.{key}: file {full!r} does not exist")
            return full

        self.prompt = path(settings["prompt"], "prompt") if settings.get("prompt") else None
        digits = settings.get("digits") or {}
        if not isinstance(digits, dict):
            raise ConfigError("handler.settings.digits: must map digits to WAV files")
        self.digit_prompts = {str(d): path(p, f"digits.{d}") for d, p in digits.items()}
        self.digit_timeout = float(settings.get("digit_timeout", 5))
        self.max_message = float(settings.get("max_message", 60))
        record_dir = settings.get("record_dir") or "messages"
        if not isinstance(record_dir, str):
            raise ConfigError("handler.settings.record_dir: must be a folder path")
        self.record_dir = (
            record_dir if os.path.isabs(record_dir) else os.path.join(base, record_dir)
        )
        os.makedirs(self.record_dir, exist_ok=True)
        self.messages: list[str] = []

    def on_incoming_invite(self, invite: InviteDetails) -> Defer:
        invite.accept().addCallbacks(
            lambda s: defer.ensureDeferred(self.serve(s)).addErrback(self._failed, s),
            lambda f: None,
        )
        return Defer()

    def _failed(self, failure: Any, session: UnifiedSession) -> None:
        if not failure.check(CallStateError):
            _log.failure("ivr call {call_id} failed", failure, call_id=session.call_id)

    async def _play(self, session: UnifiedSession, wav: str | None) -> None:
        if wav is not None:
            await session.play_wav(wav)
        else:
            chime = np.concatenate([tone(660, 0.4), tone(880, 0.4)])
            await session.send_audio(AudioFrame(chime))

    async def _digit(self, session: UnifiedSession, timeout: float) -> str | None:
        d = session.recv_dtmf()
        timer = self.coordinator.clock.callLater(timeout, d.cancel)
        try:
            return await d
        except defer.CancelledError:
            return None
        finally:
            if timer.active():
                timer.cancel()

    async def serve(self, session: UnifiedSession) -> None:
        """The call flow for one caller."""
        clock = self.coordinator.clock
        await self._play(session, self.prompt)
        pressed: list[str] = []
        digit = await self._digit(session, self.digit_timeout)
        if digit is not None:
            pressed.append(digit)
            if digit in self.digit_prompts:
                await self._play(session, self.digit_prompts[digit])
        await session.send_audio(AudioFrame(tone(1000, 0.25, amplitude=0.4)))  # the beep
        started = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
        name = f"{stamp}-{session.id}"
        wav_path = os.path.join(self.record_dir, name + ".wav")
        recording = session.record_wav(wav_path)
        start = clock.seconds()
        ended = session.wait_for_end()
        while True:
            remaining = self.max_message - (clock.seconds() - start)
            if remaining <= 0 or ended.called:
                break
            digit = await self._digit(session, min(remaining, 1.0))
            if digit is not None:
                pressed.append(digit)
                if digit == "#":
                    break
        session.stop_recording(wav_path)
        await recording
        duration = clock.seconds() - start
        sidecar = {
            "caller": session.remote_uri,
            "callee": session.local_uri,
            "call_id": session.call_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration": round(duration, 3),
            "digits": "".join(pressed),
            "file": os.path.basename(wav_path),
        }
        with open(os.path.join(self.record_dir, name + ".json"), "w", encoding="utf-8") as fh:
            json.dump(sidecar, fh, indent=2)
        self.messages.append(wav_path)
        _log.info(
            "ivr message from {caller} saved to {path} ({duration:.1f}s)",
            caller=session.remote_uri,
            path=wav_path,
            duration=duration,
            call_id=session.call_id,
        )
        if not session.is_ended:
            await session.hangup()


def build(coordinator: Any, settings: dict[str, Any]) -> IvrHandler:
    return IvrHandler(coordinator, settings)
