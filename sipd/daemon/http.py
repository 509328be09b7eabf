"""``GET /status`` (JSON), ``GET /metrics`` (Prometheus text) and the console, over twisted.web."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from twisted.web.resource import IResource, Resource

__all__ = ["StatusSource", "build_site_root"]


class StatusSource(Protocol):
    """What the resources read (the daemon's ``SipdService``)."""

    def status(self) -> dict[str, Any]:
        """The JSON object ``GET /status`` returns."""
        ...

    def metrics_resource(self) -> IResource:
        """The resource ``GET /metrics`` is (prometheus_client's, see sipd.daemon.exposition)."""
        ...


class _Status(Resource):
    isLeaf = True

    def __init__(self, service: StatusSource) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.service.status(), indent=2).encode("utf-8")


def build_site_root(
    service: StatusSource, console: Callable[[Resource], None] | None = None
) -> Resource:
    """The resource tree: ``/status`` and ``/metrics``; ``console`` adds the console's."""
    root = Resource()
    if console is not None:
        console(root)  # /, /api/calls, /calls/<id>, /calls/<id>.pcap (sipd.console.web)
    root.putChild(b"status", _Status(service))
    root.putChild(b"metrics", service.metrics_resource())
    return root
