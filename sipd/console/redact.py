"""Taking secrets out of SIP messages before the console or a capture keeps them.

Digest credentials (``Authorization``, ``Proxy-Authorization``) can be
replayed within their nonce's life and give away the user name; SDES keys
(``a=crypto:... inline:<key>``, RFC 4568) decrypt the call's SRTP. Both are
replaced when a message is recorded, so they are in neither the console's
memory nor its pages nor its pcap files, unless ``console.show_secrets``.
A key is masked with as many ``X`` as it had characters, so the body keeps
its length and the Content-Length stays right for Wireshark.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact"]

REDACTED = b"<redacted>"

_AUTH = re.compile(
    rb"^((?:proxy-)?authorization[ \t]*:[ \t]*)[^\r\n]*", re.IGNORECASE | re.MULTILINE
)
_ANY = re.compile(rb"authorization|a=crypto", re.IGNORECASE)
_KEY = re.compile(rb"(a=crypto:[^\r\n]*?inline:)([^|\s]+)", re.IGNORECASE)


def redact(data: bytes) -> bytes:
    """``data`` with credential header values and SDES keys replaced (see the module doc)."""
    if _ANY.search(data) is None:
        return data
    end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if end < 0 else (data[:end], data[end:])
    head = _AUTH.sub(lambda m: m.group(1) + REDACTED, head)
    body = _KEY.sub(lambda m: m.group(1) + b"X" * len(m.group(2)), body)
    return head + body
