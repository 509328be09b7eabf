"""The daemon's console and HEP export, wired onto its service (kept out of service.py).

:func:`build_console` makes the recorder (unless ``console.enabled`` is
false) and its live feed; :func:`start_console` starts recording once the
SIP socket is bound and opens the HEP sender when ``hep.address`` is set;
:func:`console_resources` puts the console's pages on the HTTP site,
guarded as :mod:`sipd.daemon.console_config` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource

from sipd.console.live import ConsoleLive
from sipd.console.recorder import ConsoleRecorder
from sipd.console.web import ConsoleAuth, add_console
from sipd.daemon.console_config import check_console_bind, is_loopback
from sipd.errors import ConfigError

__all__ = ["build_console", "console_resources", "start_console"]


def build_console(service: Any) -> tuple[ConsoleRecorder | None, ConsoleLive]:
    """The recorder and its feed for ``service`` (a SipdService); nothing runs yet."""
    config = service.config
    console = config.console
    # http.listen is checked when the file is read; --http can change it after.
    why = check_console_bind(console, config.http_host)
    if why is not None:
        raise ConfigError(f"--http: {why}")
    recorder = None
    if console.enabled:
        recorder = ConsoleRecorder(
            recent_calls=console.recent_calls,
            max_messages=console.max_messages,
            show_secrets=console.show_secrets,
            handler=config.handler,
        )
    live = ConsoleLive(service.coordinator, recorder, capture_rtp=console.capture_rtp)
    return recorder, live


def start_console(service: Any) -> None:
    """Start recording (and the HEP export, when configured)."""
    config, live = service.config, service.console_live
    if config.hep is not None:
        from sipd.capture.hep import HepSender
        from sipd.console.redact import redact

        sender = HepSender(service.coordinator.reactor, config.hep.address, config.hep.node_id)
        show = config.console.show_secrets

        def export(record: Any) -> None:
            if not show and hasattr(record, "call_id"):
                data = redact(record.data)
                if data is not record.data:
                    record = type(record)(
                        record.time,
                        record.direction,
                        record.transport,
                        record.local,
                        record.remote,
                        data,
                        record.call_id,
                    )
            sender.send(record, getattr(record, "call_id", None) or None)

        live.sinks.append(export)
    if live.recorder is not None or live.sinks:
        live.start()


def console_resources(service: Any) -> Callable[[Resource], None] | None:
    """What adds the console to the HTTP site's root, or None when it is disabled."""
    recorder = service.console
    if recorder is None:
        return None
    config = service.config
    console = config.console
    auth = ConsoleAuth(
        required=console.has_credentials or not is_loopback(config.http_host or "127.0.0.1"),
        token=console.token,
        users=dict(console.users),
    )

    def add(root: Resource) -> None:
        add_console(root, recorder, auth, now=service.console_live.now, title="sipd")

    return add
