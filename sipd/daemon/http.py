"""``GET /status`` (JSON) and ``GET /metrics`` (Prometheus text) over twisted.web."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.web.resource import Resource

if TYPE_CHECKING:
    from sipd.daemon.service import SipdService

__all__ = ["build_site_root"]


class _Status(Resource):
    isLeaf = True

    def __init__(self, service: SipdService) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.service.status(), indent=2).encode("utf-8")


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, service: SipdService) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.service.metrics_text().encode("utf-8")


def build_site_root(service: SipdService) -> Resource:
    """The resource tree: ``/status`` and ``/metrics``."""
    root = Resource()
    root.putChild(b"status", _Status(service))
    root.putChild(b"metrics", _Metrics(service))
    return root
