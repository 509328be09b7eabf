"""SIP message framing on a byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1), sans-I/O.

A datagram is one message; a TCP or TLS connection is a stream of bytes in
which messages follow each other, so their edges must be found: the header
block ends at the first blank line and the body is exactly ``Content-Length``
octets long. That is why §18.3 makes Content-Length mandatory on streams: a
message without one cannot be delimited, so everything after it is
unreadable and the connection has to go.

:class:`StreamFramer` is fed the bytes as they arrive, in any split, and
returns events: :class:`FramedMessage` for each complete message (handed to
:func:`~sipd.sip.message.parse_message` by the caller), :class:`Ping` and
:class:`Pong` for RFC 5626 keep-alives, and :class:`FramingError` when the
stream cannot be framed any more. After a :class:`FramingError` the framer
takes nothing more; the caller answers the broken request if it can (the
event carries its header block and the status to use) and closes the
connection.

Nothing here buffers without limit: a header block longer than
``max_header_bytes`` or a Content-Length above ``max_body_bytes`` is a
:class:`FramingError` as soon as it is seen, so a peer sending an endless
header costs at most those bytes (plus one read) before it is cut off.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "PING",
    "PONG",
    "FramedMessage",
    "FramingError",
    "Ping",
    "Pong",
    "StreamEvent",
    "StreamFramer",
]

#: The longest header block accepted (start line and headers, up to the blank line).
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
#: The largest Content-Length accepted.
DEFAULT_MAX_BODY_BYTES = 64 * 1024

#: RFC 5626 §3.5.1: a client's keep-alive "ping" is a double CRLF...
PING = b"\r\n\r\n"
#: ...and the server's "pong" a single CRLF.
PONG = b"\r\n"

_CONTENT_LENGTH_NAMES = frozenset({b"content-length", b"l"})


@dataclass(frozen=True, slots=True)
class FramedMessage:
    """One complete SIP message: its header block, blank line and exactly its body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A double CRLF between messages (RFC 5626 §3.5.1): answer with :data:`PONG`."""


@dataclass(frozen=True, slots=True)
class Pong:
    """A single CRLF between messages: the answer to our :data:`PING`.

    RFC 3261 §7.5 also lets a sender put CRLFs before a start line, so a
    stray CRLF is reported as a pong too; it is harmless either way.
    """


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any more; the caller closes the connection.

    ``status`` is the response a request in this state deserves (400 for a
    missing or malformed Content-Length or an overlong header block, 413 for
    a body over the limit); ``head`` is the message's complete header block when one was read (so a
    request can still be answered), else empty.
    """

    reason: str
    status: int = 400
    head: bytes = b""


StreamEvent = FramedMessage | Ping | Pong | FramingError


class StreamFramer:
    """Cuts a byte stream into SIP messages and keep-alives (see the module doc).

    Between messages the framer is idle: CRLFs there are keep-alives, and
    the first other byte starts a message. A lone CRLF at the very end of
    what has arrived is reported as a :class:`Pong` at once (a client waits
    for it), and if the next bytes turn out to be a second CRLF the pair is
    reported as the :class:`Ping` it was.
    """

    __slots__ = (
        "_body_needed",
        "_buffer",
        "_failed",
        "_half_ping",
        "_head_end",
        "_scan_from",
        "max_body_bytes",
        "max_header_bytes",
    )

    def __init__(
        self,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_header_bytes < 64 or max_body_bytes < 0:
            raise ValueError(
                f"max_header_bytes must be at least 64 and max_body_bytes at least 0, "
                f"not {max_header_bytes} and {max_body_bytes}"
            )
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buffer = bytearray()
        #: Where to look for the blank line next (what was scanned has none).
        self._scan_from = 0
        #: Length of the header block with its blank line, once found (else -1).
        self._head_end = -1
        self._body_needed = 0
        self._half_ping = False
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a message."""
        return len(self._buffer)

    @property
    def in_message(self) -> bool:
        """True while part of a message has arrived but not all of it."""
        return bool(self._buffer.strip(b"\r\n"))

    @property
    def failed(self) -> bool:
        """True once a :class:`FramingError` was returned: nothing more is framed."""
        return self._failed

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Take the next bytes of the stream; return what they completed, in order."""
        if self._failed:
            return []
        events: list[StreamEvent] = []
        if self._half_ping:
            self._half_ping = False
            if not self._buffer and data.startswith(PONG):
                # The lone CRLF reported as a pong was the first half of a ping.
                events.append(Ping())
                data = data[2:]
        self._buffer += data
        while self._buffer and not self._failed:
            if self._head_end < 0 and not (
                self._skip_keepalives(events) and self._find_head(events)
            ):
                break
            if not self._take_message(events):
                break
        return events

    # -- between messages ---------------------------------------------------------
    def _skip_keepalives(self, events: list[StreamEvent]) -> bool:
        """Consume CRLFs before a start line; True when a message has begun."""
        buf = self._buffer
        while buf:
            first = buf[0]
            if first != 0x0D and first != 0x0A:
                return True
            if buf.startswith(PING):
                events.append(Ping())
                del buf[:4]
            elif buf.startswith(PONG):
                if len(buf) == 3 and buf[2] == 0x0D:
                    return False  # maybe the first three bytes of a ping
                events.append(Pong())
                del buf[:2]
                self._half_ping = not buf
            elif len(buf) == 1 and first == 0x0D:
                return False  # a CR whose LF has not arrived yet
            else:
                del buf[:1]  # a bare CR or LF: tolerated and ignored (§7.5)
        return False

    # -- the header block ---------------------------------------------------------
    def _find_head(self, events: list[StreamEvent]) -> bool:
        """Find the blank line ending the header block; True once its length is known."""
        buf = self._buffer
        start = self._scan_from
        crlf = buf.find(b"\r\n\r\n", start)
        lf = buf.find(b"\n\n", start)
        if crlf >= 0 and (lf < 0 or crlf < lf):
            end = crlf + 4
        elif lf >= 0:
            end = lf + 2
        else:
            if len(buf) > self.max_header_bytes:
                self._fail(events, f"header block longer than {self.max_header_bytes} bytes")
                return False
            self._scan_from = max(0, len(buf) - 3)
            return False
        if end > self.max_header_bytes:
            self._fail(events, f"header block longer than {self.max_header_bytes} bytes")
            return False
        head = bytes(buf[:end])
        length = _content_length(head)
        if isinstance(length, str):
            self._fail(events, length, head=head)
            return False
        if length > self.max_body_bytes:
            self._fail(
                events,
                f"Content-Length {length} is over the limit of {self.max_body_bytes} bytes",
                status=413,
                head=head,
            )
            return False
        self._head_end = end
        self._body_needed = length
        return True

    def _take_message(self, events: list[StreamEvent]) -> bool:
        """Emit the message once its body is complete; True when one was emitted."""
        total = self._head_end + self._body_needed
        if len(self._buffer) < total:
            return False
        events.append(FramedMessage(bytes(self._buffer[:total])))
        del self._buffer[:total]
        self._head_end = -1
        self._body_needed = 0
        self._scan_from = 0
        return True

    def _fail(
        self, events: list[StreamEvent], reason: str, *, status: int = 400, head: bytes = b""
    ) -> None:
        events.append(FramingError(reason, status, head))
        self._failed = True
        self._buffer = bytearray()  # nothing more will be read: free it now


def _content_length(head: bytes) -> int | str:
    """The Content-Length of a header block, or the reason it has none that works.

    The compact form ``l`` counts (§7.3.3) and folded lines are joined
    (§7.3.1). Several Content-Length headers are accepted only when they
    agree; a value that is not plain digits cannot frame anything.
    """
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    found: set[int] = set()
    raw_values: list[bytes] = []
    previous_was_length = False
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if previous_was_length:
                raw_values[-1] += b" " + line.strip()
            continue
        name, colon, value = line.partition(b":")
        previous_was_length = bool(colon) and name.strip().lower() in _CONTENT_LENGTH_NAMES
        if previous_was_length:
            raw_values.append(value.strip())
    if not raw_values:
        return "missing Content-Length header (required on TCP and TLS, RFC 3261 18.3)"
    for raw in raw_values:
        text = raw.strip()
        if not text.isdigit() or len(text) > 10:
            shown = text[:20].decode("ascii", "replace")
            return f"malformed Content-Length {shown!r}"
        found.add(int(text))
    if len(found) > 1:
        return f"conflicting Content-Length values {sorted(found)}"
    return found.pop()
