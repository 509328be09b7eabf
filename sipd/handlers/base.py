"""Shared plumbing for handlers and their plugin factories."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from sipd import Accept, ISignalingHandler, ISignalingHandlerFactory, ResponseView
from sipd.logs import Logger

__all__ = ["HandlerBase", "HandlerFactory"]

_log = Logger()


@implementer(ISignalingHandler)
class HandlerBase(abc.ABC):
    """A handler that lets responses through; subclasses decide on INVITEs."""

    def __init__(self, coordinator: Any, settings: dict[str, Any]) -> None:
        self.coordinator = coordinator
        self.settings = settings

    @abc.abstractmethod
    def on_incoming_invite(self, invite: Any) -> Any:
        """Decide about a new INVITE (every handler says what it does)."""

    def on_response(self, dialog_id: str, response: ResponseView) -> Any:
        return Accept()


@implementer(IPlugin, ISignalingHandlerFactory)
class HandlerFactory:
    """A named plugin that builds one handler class."""

    def __init__(self, name: str, build: Callable[[Any, dict[str, Any]], Any], doc: str) -> None:
        self.name = name
        self._build = build
        self.description = doc

    def build(self, coordinator: Any, settings: dict[str, Any]) -> Any:
        return self._build(coordinator, settings)

    def __repr__(self) -> str:
        return f"<HandlerFactory {self.name}>"
