"""Addresses and sockets of a user agent: where we are reached, what a target means.

Small functions the coordinator uses when it binds and when it places calls,
kept apart so that it only creates sessions and routes events.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

from sipd.config import SipdConfig
from sipd.errors import CallFailed, CallStateError
from sipd.logs import Logger
from sipd.sip.uri import Uri, parse_uri

__all__ = [
    "WILDCARDS",
    "ip_address_of",
    "learn_local_host",
    "local_address_towards",
    "release_memory",
    "sip_uri",
    "target_uri",
    "widen_receive_buffer",
]

_log = Logger()

#: Bind addresses that are no address to advertise.
WILDCARDS = ("0.0.0.0", "", "::")

#: Bytes of kernel receive buffer asked for on the SIP socket (see widen_receive_buffer).
_SIP_RECEIVE_BUFFER = 4 * 1024 * 1024


def local_address_towards(towards: str) -> str | None:
    """The local address the OS routes to ``towards`` (a UDP ``connect`` sends nothing)."""
    family = socket.AF_INET6 if ":" in towards else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((towards.strip("[]"), 9))
            return str(probe.getsockname()[0])
    except OSError:
        return None


def learn_local_host(config: SipdConfig, towards: str) -> None:
    """Bound to a wildcard address: find the address we are reached at.

    Asks the OS which local address routes to ``towards`` (a UDP
    ``connect`` sends nothing) and uses it in Contact, Via and SDP from
    then on, so a peer never sees 0.0.0.0 or a loopback address it cannot
    reach. Done once; ``advertised_host`` in the config wins.
    """
    if config.advertised_host or config.host not in WILDCARDS:
        return
    local = local_address_towards(towards)
    if local is None:
        return
    config.advertised_host = local
    _log.info("reachable at {host} (route towards {towards})", host=local, towards=towards)


def ip_address_of(host: str) -> str | None:
    """``host`` as an IP address when it is one (or ``localhost``); None for a host name.

    Raises :class:`~sipd.errors.CallFailed` for what looks like an address
    but is none (``999.999.999.999``, a bracketed non-IPv6): no DNS query
    for it. Never blocks: names are for RFC 3263 (:mod:`sipd.session.target_set`).
    """
    bare = host[1:-1] if host.startswith("[") else host
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if bare.lower() == "localhost":
        return "127.0.0.1"
    if bare.replace(".", "").isdigit() or host.startswith("["):
        raise CallFailed(f"cannot resolve host {host!r}: not an IP address; use a valid one")
    return None


def target_uri(target: str, registrar: Uri | None) -> Uri:
    """The URI to call for ``target``.

    Accepts a full URI, ``user@host[:port]``, or a plain number or name,
    which becomes a user at the registrar's domain.
    """
    text = target.strip().strip("<>")
    if ":" not in text.split("@")[0]:
        if "@" not in text:
            if registrar is None:
                raise CallStateError(
                    f"cannot call {target!r}: a plain number needs a registrar "
                    "(or give a full URI such as sip:bob@127.0.0.1:5061)"
                )
            port = f":{registrar.port}" if registrar.port is not None else ""
            text = f"{text}@{registrar.host}{port}"
        text = f"sip:{text}"
    return parse_uri(text, require_supported=False)


def widen_receive_buffer(port: object) -> None:
    """Ask for a large socket receive buffer on the SIP port.

    The default (about 200 KB on Linux) holds a fraction of a second of
    signalling at a few hundred calls per second; a garbage-collection pause
    then overflows it and the kernel drops ACKs and BYEs. The kernel caps
    the value at ``net.core.rmem_max``; failure to set it is harmless.
    """
    sock = getattr(port, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SIP_RECEIVE_BUFFER)


def sip_uri(text: str | None) -> Uri | None:
    if not text:
        return None
    text = text.strip().strip("<>")
    if ":" not in text.split("@")[0]:
        text = f"sip:{text}"
    return parse_uri(text, require_supported=False)


def release_memory() -> None:
    """Collect garbage and ask glibc to return free heap pages (no-op elsewhere)."""
    import ctypes
    import gc

    from sipd.sip import message, uri

    # The parse caches were filled during the burst; their entries pin
    # allocator arenas that could otherwise go back to the OS.
    uri.clear_cache()
    message.clear_cache()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
