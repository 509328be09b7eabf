"""The ``console:`` and ``hep:`` sections of the daemon's config, and the safe-by-default rule.

The console shows every SIP message of every call, so it is open only on
loopback: when ``http.listen`` is any other address, the console, the call
pages, the JSON API and the captures want ``console.token`` or one of
``console.users``. Such a bind with neither (and the console enabled) is
refused when the config is read, with the file, line and key, rather than
serving call data to the network; ``/status`` and ``/metrics`` alone can be
served anywhere with ``console.enabled: false``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import MappingNode, Node

__all__ = ["ConsoleConfig", "HepConfig", "check_console_bind", "is_loopback", "parse_console"]


@dataclass(slots=True)
class ConsoleConfig:
    """``console:``: the operator's console on the HTTP port (docs/console.md)."""

    enabled: bool = True
    #: Ended calls kept for the console (the oldest is forgotten first).
    recent_calls: int = 200
    #: SIP messages kept per call (the earliest are dropped first).
    max_messages: int = 500
    token: str | None = None
    #: Basic-auth logins: name -> password.
    users: dict[str, str] = field(default_factory=dict)
    #: Keep Authorization values and SDES keys in the console and captures.
    show_secrets: bool = False
    #: Record each call's RTP and RTCP too (for its pcap and HEP).
    capture_rtp: bool = False

    @property
    def has_credentials(self) -> bool:
        return bool(self.token) or bool(self.users)


@dataclass(slots=True)
class HepConfig:
    """``hep:``: export every SIP message (and RTP with capture_rtp) to a Homer collector."""

    address: tuple[str, int]
    node_id: int = 2001


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name or address is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_console_bind(console: ConsoleConfig, http_host: str | None) -> str | None:
    """Why ``http_host`` may not serve the console as configured, or None when it may."""
    if http_host is None or not console.enabled or is_loopback(http_host):
        return None
    if console.has_credentials:
        return None
    return (
        f"the HTTP port is bound to {http_host}, not loopback: set console.token or "
        "console.users so the console and captures need credentials (or console.enabled: "
        "false to serve only /status and /metrics, or bind http.listen to 127.0.0.1)"
    )


def parse_console(c: Any, top: dict[str, Node], cfg: Any) -> None:
    """Read ``console:`` and ``hep:`` from ``top`` into ``cfg``; ``c`` is config.py's checker."""
    console = ConsoleConfig()
    node = top.get("console")
    if isinstance(node, MappingNode):
        keys = {
            "enabled",
            "recent_calls",
            "max_messages",
            "token",
            "users",
            "show_secrets",
            "capture_rtp",
        }
        for name, vnode in c.mapping(node, "console", keys).items():
            key = f"console.{name}"
            if name in ("enabled", "show_secrets", "capture_rtp"):
                setattr(console, name, c.boolean(vnode, key))
            elif name in ("recent_calls", "max_messages"):
                setattr(console, name, int(c.number(vnode, key, low=1, integer=True)))
            elif name == "token":
                console.token = c.string(vnode, key, nullable=True)
                if console.token is not None and len(console.token) < 16:
                    raise c.fail(vnode, key, "use at least 16 characters (a random string)")
            else:
                if not isinstance(vnode, MappingNode):
                    raise c.fail(vnode, key, "must map user names to passwords")
                for unode, pnode in vnode.value:
                    console.users[str(unode.value)] = str(c.string(pnode, f"{key}.{unode.value}"))
    elif node is not None and getattr(node, "value", None) not in ("", "null", "~"):
        raise c.fail(node, "console", "must be a mapping of keys to values")
    cfg.console = console
    http = top.get("http")
    why = check_console_bind(console, cfg.http_host)
    if why is not None:
        where = http
        if isinstance(http, MappingNode):
            where = next((v for k, v in http.value if k.value == "listen"), http)
        raise c.fail(where if where is not None else node, "http.listen", why)
    hnode = top.get("hep")
    if isinstance(hnode, MappingNode):
        fields = c.mapping(hnode, "hep", {"address", "node_id"})
        if "address" not in fields:
            raise c.fail(hnode, "hep.address", "is required (host:port of the HEP collector)")
        text = str(c.string(fields["address"], "hep.address"))
        host, _, port = text.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(port)
        except ValueError:
            raise c.fail(
                fields["address"], "hep.address", f"{text!r} must be IP:PORT, e.g. 10.0.0.5:9060"
            ) from None
        node_id = 2001
        if "node_id" in fields:
            node_id = int(c.number(fields["node_id"], "hep.node_id", low=0, integer=True))
        cfg.hep = HepConfig((host.strip("[]"), int(port)), node_id)
    elif hnode is not None and getattr(hnode, "value", None) not in ("", "null", "~"):
        raise c.fail(hnode, "hep", "must be a mapping with address (and node_id)")
