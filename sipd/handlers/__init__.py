"""Built-in signalling handlers for the daemon: echo, ivr, reject, queue.

Each is written only against the public handler and call APIs, imported
from the package root ``sipd`` (:class:`sipd.ISignalingHandler`,
``InviteDetails``, ``UnifiedSession``, ``ResponseView``), so each doubles as
an example of writing a handler.
They are found by name through Twisted's plugin system: see
``twisted/plugins/sipd_handlers.py`` and :func:`find_handler_factory`.
"""

from __future__ import annotations

from typing import Any

from twisted.plugin import getPlugins

from sipd import ISignalingHandlerFactory
from sipd.errors import ConfigError

__all__ = ["available_handlers", "find_handler_factory"]


def available_handlers() -> dict[str, Any]:
    """Every handler factory the plugin system can see, by name."""
    import twisted.plugins

    found: dict[str, Any] = {}
    for factory in getPlugins(ISignalingHandlerFactory, twisted.plugins):
        name = getattr(factory, "name", None)
        if isinstance(name, str) and name not in found:
            found[name] = factory
    return found


def find_handler_factory(name: str) -> Any:
    """The factory called ``name``; unknown names list the known ones."""
    factories = available_handlers()
    if name not in factories:
        known = ", ".join(sorted(factories)) or "none"
        raise ConfigError(
            f"handler.name: unknown handler {name!r} (known handlers: {known}); "
            "a third-party handler must be an ISignalingHandlerFactory plugin in a "
            "twisted/plugins/ folder on sys.path"
        )
    return factories[name]
