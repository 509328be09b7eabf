"""``GET /status`` (JSON) and ``GET /metrics`` (Prometheus text) over twisted.web."""

from __future__ import annotations

import json
from typing import Any, Protocol

from twisted.web.resource import Resource

__all__ = ["StatusSource", "build_site_root"]


class StatusSource(Protocol):
    """What the resources read (the daemon's ``SipdService``)."""

    def status(self) -> dict[str, Any]:
        """The JSON object ``GET /status`` returns."""
        ...

    def metrics_text(self) -> str:
        """The Prometheus text ``GET /metrics`` returns."""
        ...


class _Status(Resource):
    isLeaf = True

    def __init__(self, service: StatusSource) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.service.status(), indent=2).encode("utf-8")


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, service: StatusSource) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.service.metrics_text().encode("utf-8")


def build_site_root(service: StatusSource) -> Resource:
    """The resource tree: ``/status`` and ``/metrics``."""
    root = Resource()
    root.putChild(b"status", _Status(service))
    root.putChild(b"metrics", _Metrics(service))
    return root
