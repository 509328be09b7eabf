# mypy: disallow-untyped-calls=False
"""The console over twisted.web: ``/``, ``/api/calls``, ``/calls/<id>`` and ``/calls/<id>.pcap``.

Access: when the HTTP port is bound to an address other than loopback, or
when credentials are configured at all, every console resource wants them:
``console.token`` (``Authorization: Bearer <token>`` or ``?token=``) or one
of ``console.users`` (HTTP basic). Without them: 401 with
``WWW-Authenticate``. ``/status`` and ``/metrics`` are not guarded here.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.web.resource import Resource

from sipd.capture.pcap import pcap_bytes
from sipd.capture.records import RtpRecord, WireMessage
from sipd.console.pages import call_page, calls_json, console_page
from sipd.console.recorder import ConsoleRecorder

__all__ = ["ConsoleAuth", "add_console"]


@dataclass(frozen=True, slots=True)
class ConsoleAuth:
    """Who may read the console: see the module doc."""

    required: bool = False
    token: str | None = None
    users: dict[str, str] = field(default_factory=dict)

    def allows(self, request: Any) -> bool:
        if not self.required:
            return True
        given = request.args.get(b"token", [b""])[0].decode("utf-8", "replace")
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        if self.token and given and hmac.compare_digest(given, self.token):
            return True
        if scheme.lower() == "basic" and self.users:
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                return False
            expected = self.users.get(user)
            return expected is not None and hmac.compare_digest(password, expected)
        return False


class _Denied(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Basic realm="sipd console", charset="UTF-8"')
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (
            b"401: this console needs console.token (Bearer or ?token=) or a console.users login\n"
        )


class _Guarded(Resource):
    def __init__(self, inner: Resource, auth: ConsoleAuth) -> None:
        super().__init__()
        self.inner = inner
        self.auth = auth

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        if not self.auth.allows(request):
            return _Denied()
        return self.inner.getChildWithDefault(path, request)

    def render(self, request: Any) -> bytes:
        if not self.auth.allows(request):
            return _Denied().render(request)
        result: bytes = self.inner.render(request)
        return result


class _Page(Resource):
    isLeaf = True

    def __init__(self, render: Callable[[Any], tuple[bytes, bytes]]) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: Any) -> bytes:
        content_type, body = self._render(request)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"no-store")
        return body


def _arg(request: Any, name: bytes) -> str:
    return str(request.args.get(name, [b""])[0].decode("utf-8", "replace"))


class _Calls(Resource):
    def __init__(self, recorder: ConsoleRecorder, now: Callable[[], float]) -> None:
        super().__init__()
        self.recorder = recorder
        self.now = now

    def getChild(self, path: bytes, request: Any) -> Resource:
        name = path.decode("utf-8", "replace")
        pcap = name.endswith(".pcap")
        record = self.recorder.get(name[:-5] if pcap else name)
        if record is None:
            return _Page(lambda r: _missing(r, name))
        if pcap:
            legs = self.recorder.legs(record)
            records: list[WireMessage | RtpRecord] = [m for leg in legs for m in leg.messages]
            records += [p for leg in legs for p in leg.rtp]
            records.sort(key=lambda r: r.time)
            return _Page(lambda r: _pcap(r, record.id, records))
        token = _arg(request, b"token")
        return _Page(
            lambda r: (
                b"text/html; charset=utf-8",
                call_page(self.recorder, record, self.now(), token).encode("utf-8"),
            )
        )


def _missing(request: Any, name: str) -> tuple[bytes, bytes]:
    request.setResponseCode(404)
    return b"text/plain; charset=utf-8", f"no call {name!r} is held (live or recent)\n".encode()


def _pcap(request: Any, name: str, records: list[WireMessage | RtpRecord]) -> tuple[bytes, bytes]:
    """The call's capture; its messages were redacted when recorded (unless show_secrets)."""
    request.setHeader(b"content-disposition", f'attachment; filename="{name}.pcap"'.encode())
    data: bytes = pcap_bytes(records)
    return b"application/vnd.tcpdump.pcap", data


def add_console(
    root: Resource,
    recorder: ConsoleRecorder,
    auth: ConsoleAuth,
    *,
    now: Callable[[], float],
    title: str = "sipd",
) -> None:
    """Put the console's resources on ``root`` (the site's ``/``), each behind ``auth``."""
    index = _Page(lambda r: (b"text/html; charset=utf-8", console_page(title).encode("utf-8")))
    api = Resource()
    api.putChild(
        b"calls",
        _Page(
            lambda r: (
                b"application/json",
                calls_json(recorder, now(), _arg(r, b"number"), _arg(r, b"outcome")).encode(
                    "utf-8"
                ),
            )
        ),
    )
    root.putChild(b"", _Guarded(index, auth))
    root.putChild(b"api", _Guarded(api, auth))
    root.putChild(b"calls", _Guarded(_Calls(recorder, now), auth))
