"""The daemon's YAML config (``etc/sipd.yaml``), checked with file, line and key.

Every mistake is reported as ``path:line: key: what is wrong`` before any
port is bound, so an operator fixes the file rather than reading a
traceback. The sections map onto :class:`~sipd.config.SipdConfig` plus the
daemon's own settings (handler, HTTP address, shutdown grace).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sipd import TlsConfig
from sipd.config import SRTP_POLICIES, TRANSPORTS, SipdConfig
from sipd.daemon.console_config import ConsoleConfig, HepConfig, parse_console
from sipd.errors import ConfigError
from sipd.handlers import find_handler_factory
from sipd.logs import LEVELS

__all__ = ["DaemonConfig", "RegistrarConfig", "load_config", "parse_config", "parse_hostport"]


@dataclass(slots=True)
class DaemonConfig:
    """What ``twistd sipd`` runs with."""

    sip: SipdConfig = field(default_factory=SipdConfig)
    handler: str = "echo"
    handler_settings: dict[str, Any] = field(default_factory=dict)
    http_host: str | None = "127.0.0.1"
    http_port: int = 8080
    grace: float = 10.0
    source: str = "<defaults>"
    #: Line of ``handler.settings`` in :attr:`source`, for the handler's own errors.
    handler_settings_line: int | None = None
    #: Minimum level of sipd's own log events (debug, info, warn, error).
    log_level: str = "info"
    #: The registrar, when the ``registrar`` section is present.
    registrar: RegistrarConfig | None = None
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    hep: HepConfig | None = None  # ``hep:`` (sipd.daemon.console_config)

    @property
    def transports(self) -> list[str]:
        """``sip.transports``: UDP, and the one stream transport the library serves with it."""
        return ["udp"] if self.sip.transport == "udp" else ["udp", self.sip.transport]


@dataclass(slots=True)
class RegistrarConfig:
    """The daemon as registrar: realm, users (HA1 hashes) and policy."""

    realm: str = "sipd"
    #: user -> HA1 hex (MD5 if 32 digits, SHA-256 if 64) or {algorithm: HA1}.
    users: dict[str, object] = field(default_factory=dict)
    authenticate_invites: bool = True
    min_expires: int = 60
    max_expires: int = 7200


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``[v6]:PORT`` or ``:PORT`` to (host, port)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 address in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return _ip(host), default_port
        if not rest.startswith(":"):
            raise ValueError(f"junk after IPv6 address in {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        return _ip(text), default_port  # bare IPv6
    else:
        return _ip(text), default_port
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} in {text!r}")
    return _ip(host) if host else "0.0.0.0", int(port_text)


def _ip(host: str) -> str:
    # Twisted binds IP literals only; catching a bad one here keeps the
    # mistake a config error (file, line, key) instead of a traceback after
    # the HTTP port is already bound.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv4 or IPv6 address") from None
    return host


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: Node, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.source}:{node.start_mark.line + 1}: {key}: {why}")

    def mapping(self, node: Node, key: str, allowed: set[str]) -> dict[str, Node]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, key or "<top>", "must be a mapping of keys to values")
        out: dict[str, Node] = {}
        for knode, vnode in node.value:
            name = str(knode.value)
            full = f"{key}.{name}" if key else name
            if name not in allowed:
                raise self.fail(knode, full, f"unknown key (known: {', '.join(sorted(allowed))})")
            if name in out:
                raise self.fail(knode, full, "appears twice")
            out[name] = vnode
        return out

    def scalar(self, node: Node, key: str) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, key, "must be a single value")
        return yaml.safe_load(yaml.serialize(node))

    def number(self, node: Node, key: str, *, low: float = 0.0, integer: bool = False) -> Any:
        value = self.scalar(node, key)
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if not ok or isinstance(value, bool):
            kind = "an integer" if integer else "a number"
            raise self.fail(node, key, f"must be {kind}, got {value!r}")
        if value < low:
            raise self.fail(node, key, f"must be at least {low:g}, got {value!r}")
        return value

    def string(self, node: Node, key: str, *, nullable: bool = False) -> str | None:
        value = self.scalar(node, key)
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(node, key, f"must be a non-empty string, got {value!r}")
        return value

    def boolean(self, node: Node, key: str) -> bool:
        value = self.scalar(node, key)
        if not isinstance(value, bool):
            raise self.fail(node, key, f"must be true or false, got {value!r}")
        return value

    def strings(self, node: Node, key: str) -> list[str]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, key, "must be a list")
        return [str(self.string(item, f"{key}[{i}]")) for i, item in enumerate(node.value)]


def _ha1(c: _Checker, node: Node, key: str) -> str:
    value = str(c.string(node, key)).lower()
    if len(value) not in (32, 64) or any(ch not in "0123456789abcdef" for ch in value):
        raise c.fail(
            node,
            key,
            "must be an HA1 hash (32 hex digits for MD5, 64 for SHA-256), not a password; "
            "make one with: python -m sipd.daemon.ha1 USER REALM",
        )
    return value


#: A ``key:`` at the start of a line (after its indentation and any ``- ``).
_KEY_LINE = re.compile(r"^\s*(?:-\s+)?([^\s#:'\"\[\]{}][^:#]*?)\s*:(?:\s|$)")
#: Openings the parser reports only where it notices they were never closed.
_UNCLOSED = {
    "while parsing a flow sequence": "a '[' list that is never closed with ']'",
    "while parsing a flow mapping": "a '{' mapping that is never closed with '}'",
    "while scanning a quoted scalar": "a quoted string that is never closed",
}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _key_path(lines: list[str], index: int) -> str:
    """The dotted key of ``lines[index]`` (``sip.name``), from the indentation above it."""
    parts: list[str] = []
    match = _KEY_LINE.match(lines[index])
    if match:
        parts.append(match.group(1))
    elif lines[index].strip() and not lines[index].lstrip().startswith(("-", "#")):
        # A key without its ':' (``listen 127.0.0.1``): its first word.
        parts.append(lines[index].split()[0])
    indent = _indent(lines[index])
    for line in reversed(lines[:index]):
        if indent == 0:
            break
        if not line.strip() or line.lstrip().startswith("#") or _indent(line) >= indent:
            continue
        indent = _indent(line)
        match = _KEY_LINE.match(line)
        if match:
            parts.append(match.group(1))
    return ".".join(reversed([p for p in parts if p]))


def _syntax_error(exc: yaml.YAMLError, text: str, source: str) -> ConfigError:
    """One line for a YAML syntax error: the line the mistake is on, and its key.

    The parser reports where it noticed the problem, often a line later than
    the mistake: an unclosed ``[``, ``{`` or quote is pointed at where it
    opened, and a key missing its ``:`` (which YAML reads as a value going
    on over the next lines) at that key's line.
    """
    problem = str(getattr(exc, "problem", None) or exc).strip()
    mark = getattr(exc, "problem_mark", None)
    context = str(getattr(exc, "context", None) or "")
    context_mark = getattr(exc, "context_mark", None)
    if context in _UNCLOSED and context_mark is not None:
        mark, problem = context_mark, f"{_UNCLOSED[context]} ({problem})"
    lines = text.splitlines()
    if mark is None or not lines:
        return ConfigError(f"{source}: not valid YAML: {problem}")
    index = min(mark.line, len(lines) - 1)
    while index > 0 and not lines[index].strip():
        index -= 1  # the end of the file: the last line with something on it
    if problem == "mapping values are not allowed here":
        start = index
        while start > 0:
            above = lines[start - 1]
            plain = above.strip() and not above.lstrip().startswith(("#", "-"))
            if not plain or _indent(above) != _indent(lines[index]) or _KEY_LINE.match(above):
                break
            start -= 1
        if start != index:
            index = start
            problem = f"{lines[index].strip()!r} is not a 'key: value' line (missing ':'?)"
    key = _key_path(lines, index)
    where = f"{source}:{index + 1}: {key}: " if key else f"{source}:{index + 1}: "
    return ConfigError(f"{where}not valid YAML: {problem}")


#: ``tls:`` keys that name PEM files (resolved against the config file's folder).
_TLS_FILES = ("certificate", "private_key", "ca_certificates")
_TLS_KEYS = {*_TLS_FILES, "verify", "require_client_certificate", "server_name"}


def _transports(c: _Checker, node: Node, key: str, port: int) -> list[str]:
    """``sip.transports``: UDP plus at most one stream transport, as the library serves."""
    if not isinstance(node, SequenceNode) or not node.value:
        raise c.fail(node, key, "must be a list of transports, e.g. [udp, tls]")
    names: list[str] = []
    for i, item in enumerate(node.value):
        # The raw text: YAML would read some words (off, no) as booleans.
        name = str(item.value).strip().lower() if isinstance(item, ScalarNode) else None
        if name not in TRANSPORTS:
            shown = item.value if isinstance(item, ScalarNode) else "a list or mapping"
            raise c.fail(item, f"{key}[{i}]", f"{shown!r} is not one of {', '.join(TRANSPORTS)}")
        if name in names:
            raise c.fail(item, f"{key}[{i}]", f"{name} is listed twice")
        names.append(name)
    if "udp" not in names:
        raise c.fail(
            node,
            key,
            "udp is always served (sipd answers SIP over UDP too): list it, e.g. [udp, tls]",
        )
    if "tcp" in names and "tls" in names:
        raise c.fail(
            node,
            key,
            f"tcp and tls would both need TCP port {port} (the SIP port): sipd serves one "
            "stream transport per daemon, so list only one of them (or run a second daemon)",
        )
    return names


def _tls(c: _Checker, node: Node, base_dir: str) -> tuple[dict[str, Any], dict[str, Node]]:
    """The ``tls:`` mapping as TlsConfig keywords, and each key's node (for errors)."""
    nodes = c.mapping(node, "tls", _TLS_KEYS)
    values: dict[str, Any] = {}
    for name, vnode in nodes.items():
        key = f"tls.{name}"
        if name in _TLS_FILES or name == "server_name":
            text = c.string(vnode, key, nullable=True)
            if text is None:
                continue  # null: the default (no file, the system's CAs, the dialled host)
        if name == "server_name":
            values[name] = text
        elif name in _TLS_FILES:
            path = str(text)
            full = path if os.path.isabs(path) else os.path.join(base_dir, path)
            if not os.path.isfile(full):
                what = "is a directory, not a PEM file" if os.path.isdir(full) else "does not exist"
                raise c.fail(vnode, key, f"file {full!r} {what}")
            values[name] = full
        else:
            values[name] = c.boolean(vnode, key)
    return values, nodes


def _tls_config(
    c: _Checker, node: Node, values: dict[str, Any], nodes: dict[str, Node]
) -> TlsConfig:
    """A checked TlsConfig. What is in the files is read when the listener starts."""
    for given, needed in (("private_key", "certificate"), ("certificate", "private_key")):
        if needed not in values:
            if given in values:
                why = f"missing: tls.{given} is set, and one needs the other"
            else:
                why = (
                    "missing: sip.transports lists tls, and a TLS listener needs its "
                    "certificate and private_key (PEM files)"
                )
            raise c.fail(node, f"tls.{needed}", why)
    try:
        config = TlsConfig(**values)
        config.check_files()
    except ConfigError as exc:
        # The library's messages start with the key ("tls.require_client_certificate needs ...").
        match = re.match(r"tls\.(\w+):?\s+(.*)", str(exc), re.DOTALL)
        if match is None:
            raise c.fail(node, "tls", str(exc)) from None
        name, why = match.groups()
        raise c.fail(nodes.get(name, node), f"tls.{name}", why) from None
    return config


def parse_config(text: str, source: str = "<string>") -> DaemonConfig:
    """Parse and check a config document; raise :class:`ConfigError` naming the line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text, source) from None
    cfg = DaemonConfig(source=source)
    if root is None:
        return cfg
    c = _Checker(source)
    sections = "sip timers media state_table handler http shutdown registrar log overload tls"
    top = c.mapping(root, "", {*sections.split(), "console", "hep"})
    sip: dict[str, Any] = {}
    where: dict[str, tuple[Node, str]] = {}
    base_dir = os.path.dirname(os.path.abspath(source)) if os.path.exists(source) else os.getcwd()

    def each(section: str, fields: dict[str, Callable[[Node, str], Any]]) -> None:
        node = top.get(section)
        if node is None or (isinstance(node, ScalarNode) and node.value in ("", "null", "~")):
            return
        for name, vnode in c.mapping(node, section, set(fields)).items():
            fields[name](vnode, f"{section}.{name}")

    def listen(node: Node, key: str) -> None:
        text = c.string(node, key)
        try:
            sip["host"], sip["port"] = parse_hostport(str(text), 5060)
        except ValueError as exc:
            raise c.fail(node, key, str(exc)) from None

    def srtp(node: Node, key: str) -> None:
        # The raw text: YAML reads an unquoted ``off`` as the boolean false.
        if not isinstance(node, ScalarNode):
            raise c.fail(node, key, "must be a single value")
        value = str(node.value).strip().lower()
        if value not in SRTP_POLICIES:
            raise c.fail(
                node, key, f"must be one of {', '.join(SRTP_POLICIES)}, got {node.value!r}"
            )
        sip["srtp"], where["srtp"] = value, (node, key)

    streams: list[Node] = []

    def transports_and_tls(node: Node | None) -> None:
        names = ["udp"]
        if node is not None:
            names = _transports(c, node, "sip.transports", sip.get("port", 5060))
            where["transport"] = (node, "sip.transports")
        kind = next((t for t in names if t != "udp"), "udp")
        sip["transport"] = kind
        tls_node = top.get("tls")
        if isinstance(tls_node, ScalarNode) and tls_node.value in ("", "null", "~"):
            tls_node = None
        # Errors about the section as a whole point at its ``tls:`` line.
        tls_key = next((k for k, _ in getattr(root, "value", ()) if k.value == "tls"), root)
        if tls_node is not None and kind != "tls":
            raise c.fail(
                tls_key,
                "tls",
                "set, but sip.transports does not list tls: add tls there, or remove this section",
            )
        if kind == "tls":
            values, nodes = _tls(c, tls_node, base_dir) if tls_node is not None else ({}, {})
            here = tls_key if tls_node is not None else node or root
            sip["tls"] = _tls_config(c, here, values, nodes)
            where["tls"] = (here, "tls")

    def put(name: str, kind: str) -> Callable[[Node, str], None]:
        def set_(node: Node, key: str) -> None:
            where[name] = (node, key)
            if kind == "float":
                sip[name] = c.number(node, key)
            elif kind == "int":
                sip[name] = c.number(node, key, integer=True)
            elif kind == "bool":
                sip[name] = c.boolean(node, key)
            elif kind == "str":
                sip[name] = c.string(node, key)
            elif kind == "str?":
                sip[name] = c.string(node, key, nullable=True)
            elif kind == "list":
                sip[name] = c.strings(node, key)

        return set_

    each(
        "sip",
        {
            "listen": listen,
            "name": put("name", "str"),
            "advertised_host": put("advertised_host", "str?"),
            "user_agent": put("user_agent", "str"),
            "send_ringing": put("send_ringing", "bool"),
            "transports": lambda node, key: streams.append(node),
            "tcp_idle_timeout": put("tcp_idle_timeout", "float"),
            "dns_servers": put("dns_servers", "list"),
            "dns_timeout": put("dns_timeout", "float"),
        },
    )
    each(
        "timers",
        {
            "t1": put("t1", "float"),
            "t2": put("t2", "float"),
            "t4": put("t4", "float"),
            "ring_timeout": put("ring_timeout", "float"),
            "defer_timeout": put("defer_timeout", "float"),
            "defer_status": put("defer_status", "int"),
            "session_expires": put("session_expires", "int"),
            "min_se": put("min_se", "int"),
        },
    )
    each(
        "media",
        {
            "port_min": put("media_port_min", "int"),
            "port_max": put("media_port_max", "int"),
            "codecs": put("codecs", "list"),
            "sample_rate": put("sample_rate", "int"),
            "dtmf": put("dtmf", "bool"),
            "jitter_depth": put("jitter_depth", "int"),
            "silence_when_idle": put("silence_when_idle", "bool"),
            "timeout": put("media_timeout", "float"),
            "unreachable_timeout": put("media_unreachable_timeout", "float"),
            "srtp": srtp,
        },
    )
    transports_and_tls(streams[0] if streams else None)
    each(
        "overload",
        {
            "enabled": put("overload_control", "bool"),
            "max_lag": put("overload_max_lag", "float"),
            "lag_sustain": put("overload_lag_sustain", "float"),
            "max_backlog": put("overload_max_backlog", "int"),
            "max_pending": put("overload_max_pending", "int"),
            "max_invite_rate": put("overload_max_invite_rate", "float"),
            "source_rate": put("overload_source_rate", "float"),
            "source_burst": put("overload_source_burst", "int"),
            "retry_after": put("overload_retry_after", "int"),
        },
    )
    if "state_table" in top:
        node = top["state_table"]
        path = c.string(node, "state_table", nullable=True)
        if path is not None:
            full = path if os.path.isabs(path) else os.path.join(base_dir, path)
            if not os.path.exists(full):
                raise c.fail(node, "state_table", f"file {full!r} does not exist")
            sip["state_table_path"] = full

    def handler_name(node: Node, key: str) -> None:
        name = str(c.string(node, key))
        try:
            find_handler_factory(name)
        except ConfigError as exc:
            raise c.fail(node, key, str(exc).removeprefix(f"{key}: ")) from None
        cfg.handler = name

    def handler_settings(node: Node, key: str) -> None:
        if not isinstance(node, MappingNode):
            raise c.fail(node, key, "must be a mapping")
        value = yaml.safe_load(yaml.serialize(node))
        cfg.handler_settings = dict(value or {})
        cfg.handler_settings["_config_dir"] = base_dir
        cfg.handler_settings_line = node.start_mark.line + 1

    each("handler", {"name": handler_name, "settings": handler_settings})

    def http_listen(node: Node, key: str) -> None:
        text = c.string(node, key, nullable=True)
        if text is None or text in ("off", "none"):
            cfg.http_host = None
            return
        try:
            cfg.http_host, cfg.http_port = parse_hostport(text, 8080)
        except ValueError as exc:
            raise c.fail(node, key, str(exc)) from None

    each("http", {"listen": http_listen})

    def grace(node: Node, key: str) -> None:
        cfg.grace = float(c.number(node, key))

    each("shutdown", {"grace": grace})

    def level(node: Node, key: str) -> None:
        value = str(c.string(node, key)).lower()
        if value not in LEVELS:
            raise c.fail(node, key, f"must be one of {', '.join(LEVELS)}, got {value!r}")
        cfg.log_level = value

    each("log", {"level": level})
    parse_console(c, top, cfg)  # console: and hep:, and the console's bind rule

    if "registrar" in top:
        reg = RegistrarConfig()
        rnode = top["registrar"]
        fields = c.mapping(
            rnode,
            "registrar",
            {"realm", "users", "authenticate_invites", "min_expires", "max_expires"},
        )
        if "realm" in fields:
            reg.realm = str(c.string(fields["realm"], "registrar.realm"))
        if "authenticate_invites" in fields:
            reg.authenticate_invites = c.boolean(
                fields["authenticate_invites"], "registrar.authenticate_invites"
            )
        for name in ("min_expires", "max_expires"):
            if name in fields:
                value = int(c.number(fields[name], f"registrar.{name}", low=1, integer=True))
                setattr(reg, name, value)
        if reg.max_expires < reg.min_expires:
            raise c.fail(
                fields.get("max_expires", rnode),
                "registrar.max_expires",
                f"{reg.max_expires} is below min_expires {reg.min_expires}",
            )
        if "users" in fields:
            unode = fields["users"]
            if not isinstance(unode, MappingNode):
                raise c.fail(unode, "registrar.users", "must map user names to HA1 hashes")
            for knode, vnode in unode.value:
                user = str(knode.value)
                key = f"registrar.users.{user}"
                if isinstance(vnode, MappingNode):
                    hashes: dict[str, str] = {}
                    for anode, hnode in vnode.value:
                        algorithm = str(anode.value)
                        if algorithm not in ("MD5", "SHA-256"):
                            raise c.fail(anode, f"{key}.{algorithm}", "use MD5 or SHA-256")
                        hashes[algorithm] = _ha1(c, hnode, f"{key}.{algorithm}")
                    reg.users[user] = hashes
                else:
                    reg.users[user] = _ha1(c, vnode, key)
        cfg.registrar = reg

    try:
        cfg.sip = SipdConfig(**sip)
    except ConfigError as exc:
        # Map the settings key the check names back to its line in the file.
        names, _, why = str(exc).partition(": ")
        for name in names.split("/"):
            if name in where:
                node, key = where[name]
                raise c.fail(node, key, why) from None
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def load_config(path: str) -> DaemonConfig:
    """Read and check ``path``."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror}") from None
    return parse_config(text, path)
