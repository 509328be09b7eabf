"""SIP requests and responses, their parser and serialiser (RFC 3261 §7, §20, §25).

Parsing is split in two on purpose: :func:`parse_message` checks the start line
and the few headers every layer needs (Via, From, To, Call-ID, CSeq and
Content-Length) and keeps every header value as text; the typed accessors
(:attr:`Message.from_`, :attr:`Message.vias`...) parse a value when asked. A
message that is not changed after parsing serialises back to the very bytes
it came from; a changed one serialises canonically (full header names,
``Name: value``, CRLF, a Content-Length that matches the body).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipd.sip.address import NameAddr, parse_name_addr
from sipd.sip.address import clear_cache as _clear_address_cache
from sipd.sip.errors import BadRequest, VersionNotSupported
from sipd.sip.grammar import is_token, parse_digits
from sipd.sip.headers import _KEY, CSeq, Headers, canonical_name, parse_cseq
from sipd.sip.uri import Uri, parse_uri
from sipd.sip.via import Via, parse_via
from sipd.sip.via import clear_cache as _clear_via_cache

__all__ = [
    "REASON_PHRASES",
    "SIP_VERSION",
    "Message",
    "Request",
    "Response",
    "make_response",
    "parse_message",
]

SIP_VERSION = "SIP/2.0"

#: Default reason phrases (RFC 3261 §21 and later RFCs for the common extras).
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_CONTENT_LENGTH_KEY = "content-length"
_ESSENTIAL = frozenset({"Via", "From", "To", "Call-ID", "CSeq"})
_REQUIRED_KEYS = ("via", "from", "to", "call-id", "cseq")
_REQUIRED_SET = frozenset(_REQUIRED_KEYS)


class Message:
    """Behaviour shared by :class:`Request` and :class:`Response`."""

    __slots__ = ()

    headers: Headers
    body: bytes

    # -- typed views of the common headers (parsed on demand) -------------
    # CSeq, From, To and the top Via are parsed once per header block and
    # memoised on it (Headers drops the memo on any change): the transaction,
    # dialog and session layers each read them again for the same message.

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        index = self.headers._index
        value = index.get("call-id") if index is not None else self.headers.get("call-id")
        if value is None:
            raise BadRequest("missing Call-ID header")
        return value

    @property
    def cseq(self) -> CSeq:
        """The CSeq as a :class:`CSeq`."""
        headers = self.headers
        memo = headers.parsed_views()
        cseq: CSeq | None = memo.get("cseq")
        if cseq is None:
            value = headers.get("cseq")
            if value is None:
                raise BadRequest("missing CSeq header")
            cseq = memo["cseq"] = parse_cseq(value)
        return cseq

    @property
    def from_(self) -> NameAddr:
        """The From address (``from`` is a keyword, hence the underscore)."""
        return _address(self.headers, "from")

    @property
    def to(self) -> NameAddr:
        """The To address."""
        return _address(self.headers, "to")

    @property
    def vias(self) -> list[Via]:
        """Every Via, top first."""
        return [parse_via(v) for v in self.headers.values("Via")]

    @property
    def top_via(self) -> Via:
        """The top Via: it names the transaction (branch) and the reply address."""
        headers = self.headers
        memo = headers.parsed_views()
        via: Via | None = memo.get("via")
        if via is None:
            # The parser's index holds stripped values: one without a comma
            # is the top Via as it stands.
            index = headers._index
            value = index.get("via") if index is not None else None
            if value is None or "," in value:
                value = headers.first_value("via")
            if value is None:
                raise BadRequest("missing Via header")
            via = memo["via"] = parse_via(value)
        return via

    @property
    def contacts(self) -> list[NameAddr]:
        """The Contact addresses (empty for ``Contact: *`` or none)."""
        return [parse_name_addr(v) for v in self.headers.values("Contact") if v != "*"]

    @property
    def content_type(self) -> str | None:
        """The media type of the body, lower-cased, without parameters."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()

    def to_bytes(self) -> bytes:
        """Serialise; an unmodified parsed message yields its original bytes."""
        raise NotImplementedError  # pragma: no cover - overridden by both subclasses

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def _serialise(self, start_line: str) -> bytes:
        lines = [start_line]
        length_written = False
        for name, value in self.headers:
            if name == "Content-Length":
                if length_written:
                    continue
                value = str(len(self.body))
                length_written = True
            lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8") + self.body


def _address(headers: Headers, key: str) -> NameAddr:
    memo = headers.parsed_views()
    addr: NameAddr | None = memo.get(key)
    if addr is None:
        index = headers._index
        value = index.get(key) if index is not None else headers.get(key)
        if value is None:
            raise BadRequest(f"missing {canonical_name(key)} header")
        addr = memo[key] = parse_name_addr(value)
    return addr


@dataclass(slots=True, eq=False)
class Request(Message):
    """A SIP request. ``uri`` is the parsed Request-URI."""

    method: str
    uri: Uri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    # What the message was parsed from, to re-emit it unchanged.
    _raw: bytes | None = field(default=None, repr=False)
    _raw_state: tuple[object, ...] | None = field(default=None, repr=False)

    @property
    def start_line(self) -> str:
        """``METHOD Request-URI SIP/2.0``."""
        return f"{self.method} {self.uri} {self.version}"

    @property
    def max_forwards(self) -> int:
        """Max-Forwards, 70 when absent (RFC 3261 §8.1.1.6)."""
        value = self.headers.get("Max-Forwards")
        if value is None:
            return 70
        number = parse_digits(value.strip(), 255)
        if number is None:
            raise BadRequest(f"malformed Max-Forwards {value.strip()[:40]!r}")
        return number

    def essentials(self) -> Request:
        """A copy with only Via, From, To, Call-ID and CSeq, and no body.

        Enough to answer or match the request; transactions keep this once
        their final response is out, since they outlive the call.
        """
        kept = Headers([(n, v) for n, v in self.headers if n in _ESSENTIAL])
        return Request(self.method, self.uri, kept)

    def _state(self) -> tuple[object, ...]:
        return (self.method, self.uri, self.body, self.headers, self.headers.version)

    def to_bytes(self) -> bytes:
        raw, st = self._raw, self._raw_state
        if (
            raw is not None
            and st is not None
            and self.method == st[0]
            and self.uri is st[1]
            and self.body is st[2]
            and self.headers is st[3]
            and self.headers.version == st[4]
        ):
            return raw
        return self._serialise(self.start_line)


@dataclass(slots=True, eq=False)
class Response(Message):
    """A SIP response."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    _raw: bytes | None = field(default=None, repr=False)
    _raw_state: tuple[object, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = REASON_PHRASES.get(self.status, "Unknown")

    @property
    def start_line(self) -> str:
        """``SIP/2.0 status reason``."""
        return f"{self.version} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        """1xx."""
        return self.status < 200

    @property
    def is_success(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    def _state(self) -> tuple[object, ...]:
        return (self.status, self.reason, self.body, self.headers, self.headers.version)

    def to_bytes(self) -> bytes:
        raw, st = self._raw, self._raw_state
        if (
            raw is not None
            and st is not None
            and self.status == st[0]
            and self.reason == st[1]
            and self.body is st[2]
            and self.headers is st[3]
            and self.headers.version == st[4]
        ):
            return raw
        return self._serialise(self.start_line)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2 :]
    # A datagram whose header block is not followed by the blank line: accept
    # it when it at least ends with a line break (common in hand-made tests).
    if data.endswith(b"\n"):
        return data.rstrip(b"\r\n"), b""
    raise BadRequest("message has no blank line after the headers")


#: Header names as they arrive (trailing blanks included) -> (lookup key,
#: canonical name). Almost every message repeats the same dozen spellings,
#: so this saves validating and case-folding each name on every datagram.
_NAME_CACHE: dict[str, tuple[str, str]] = {}
_NAME_CACHE_MAX = 512


def clear_cache() -> None:
    """Forget cached header-name and address lookups (see :func:`sipd.sip.uri.clear_cache`)."""
    _NAME_CACHE.clear()
    _clear_address_cache()
    _clear_via_cache()


def _header_name(raw: str) -> tuple[str, str]:
    """Validate a raw header name and return its (key, canonical name)."""
    name = raw.rstrip(" \t")
    if not name or not is_token(name):
        raise BadRequest(f"malformed header name {name[:40]!r}")
    low = name.lower()
    entry = (_KEY.get(low, low), canonical_name(name))
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[raw] = entry
    return entry


def _header_lines(lines: list[str]) -> list[tuple[str, str, str]]:
    """Parse header lines one by one, joining folded continuation lines."""
    items: list[tuple[str, str, str]] = []
    append = items.append
    names = _NAME_CACHE
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":  # folded continuation (RFC 3261 §7.3.1)
            if not items:
                raise BadRequest("continuation line before the first header")
            k, n, v = items[-1]
            items[-1] = (k, n, f"{v} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise BadRequest(f"malformed header line {line[:40]!r}")
        entry = names.get(name)
        if entry is None:
            entry = _header_name(name)
        append((entry[0], entry[1], value.strip()))
    return items


def _index_of(items: list[tuple[str, str, str]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for key, _, value in reversed(items):
        index[key] = value
    return index


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram into a :class:`Request` or :class:`Response`.

    Raises a :class:`SipParseError` subclass whose ``status`` is the response
    to send (for requests) and whose message names the problem.
    """
    # RFC 3261 §7.5: ignore empty lines before the start line (keep-alives).
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
        if not data:
            raise BadRequest("empty message")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, body = data[:end], data[end + 4 :]
    else:
        head, body = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("header block is not valid UTF-8") from None
    lines = text.split("\r\n" if "\r\n" in text else "\n")
    lines.reverse()
    start = lines.pop()

    # The everyday header block in one pass, last line first so that plain
    # assignment leaves each key's *first* value in the index. Anything
    # unusual (an empty or folded line, no colon, a name not seen before)
    # goes to the general walk. Names are cached only once validated, and a
    # folded line's "name" starts with a blank, so none slips through here.
    items: list[tuple[str, str, str]] = []
    index: dict[str, str] = {}
    append = items.append
    names = _NAME_CACHE.get
    for line in lines:
        name, colon, value = line.partition(":")
        entry = names(name)
        if entry is None or not colon:
            lines.reverse()
            items = _header_lines(lines)
            index = _index_of(items)
            break
        key, canonical = entry
        index[key] = value = value.strip()
        append((key, canonical, value))
    else:
        items.reverse()
    headers = Headers._from_parsed(items, index)

    if not index.keys() >= _REQUIRED_SET:
        for key in _REQUIRED_KEYS:
            if key not in index:
                raise BadRequest(f"missing {canonical_name(key)} header")

    raw_length = index.get(_CONTENT_LENGTH_KEY)
    if raw_length == "0":
        if body:
            body = data = b""
    elif raw_length is not None:
        if not (raw_length.isascii() and raw_length.isdigit()):
            raise BadRequest(f"malformed Content-Length {raw_length[:40]!r}")
        content_length = parse_digits(raw_length, 2**32)
        if content_length is None:
            raise BadRequest(f"Content-Length {raw_length[:40]!r} is too large")
        if len(body) < content_length:
            raise BadRequest(
                f"body is {len(body)} bytes, shorter than Content-Length {content_length}"
            )
        if len(body) > content_length:
            # RFC 3261 §18.3: octets past Content-Length are discarded.
            body = body[:content_length]
            data = b""

    cseq = parse_cseq(index["cseq"])
    headers._memo = {"cseq": cseq}
    raw = data or None
    # The message is built with its "unchanged since parsing" stamp (what
    # ``_state()`` would return) in one constructor call.
    if start.startswith("SIP/"):
        status, reason = _parse_status_line(start)
        return Response(
            status, reason, headers, body, SIP_VERSION, raw, (status, reason, body, headers, 0)
        )
    method, uri = _parse_request_line(start)
    if cseq.method != method:
        raise BadRequest(f"CSeq method {cseq.method} does not match {method}")
    return Request(method, uri, headers, body, SIP_VERSION, raw, (method, uri, body, headers, 0))


def _parse_status_line(start: str) -> tuple[int, str]:
    """Status code and reason phrase (never empty: Response would fill it in)."""
    parts = start.split(" ", 2)
    if len(parts) == 3 and parts[0] == SIP_VERSION:
        # ``SIP/2.0 180 Ringing``: the checks below, in short.
        code, reason = parts[1], parts[2]
        if len(code) == 3 and code.isdigit() and code.isascii() and reason:
            status = int(code)
            if 100 <= status <= 699:
                return status, reason
    if len(parts) < 2:
        raise BadRequest(f"malformed status line {start[:60]!r}")
    version = parts[0]
    if version.upper() != SIP_VERSION:
        raise VersionNotSupported(f"SIP version {version!r} not supported")
    code = parts[1]
    if len(code) != 3 or not (code.isascii() and code.isdigit()) or not 100 <= int(code) <= 699:
        raise BadRequest(f"bad status code {code!r}")
    reason = parts[2] if len(parts) == 3 else ""
    return int(code), reason or REASON_PHRASES.get(int(code), "Unknown")


#: Methods known to be tokens, so the request line need not run the regex.
_KNOWN_METHODS = frozenset(
    {
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "INVITE",
        "MESSAGE",
        "NOTIFY",
        "OPTIONS",
        "PRACK",
        "PUBLISH",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "UPDATE",
    }
)


def _parse_request_line(start: str) -> tuple[str, Uri]:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise BadRequest(f"malformed request line {start[:60]!r}")
    method, uri_text, version = parts
    if method not in _KNOWN_METHODS and not is_token(method):
        raise BadRequest(f"malformed method {method[:20]!r}")
    if version != SIP_VERSION and version.upper() != SIP_VERSION:
        raise VersionNotSupported(f"SIP version {version!r} not supported")
    return method, parse_uri(uri_text)


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to ``request`` as RFC 3261 §8.2.6.2 says.

    Via, From, To, Call-ID and CSeq are copied as text, so this works even for
    a request whose From or To would not parse (the 400 path). A ``to_tag`` is
    added to To when it has none; 100 Trying never gets one.
    """
    h = Headers()
    for via in request.headers.get_all("Via"):
        h.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is not None:
            if name == "To" and to_tag and status != 100 and ";tag=" not in value.lower():
                value = f"{value};tag={to_tag}"
            h.add(name, value)
    if status == 100 and "Timestamp" in request.headers:
        h.add("Timestamp", request.headers.get("Timestamp") or "")
    if content_type is not None:
        h.add("Content-Type", content_type)
    return Response(status, reason or REASON_PHRASES.get(status, "Unknown"), h, body)
