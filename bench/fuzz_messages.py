"""The messages ``bench/fuzz.py`` sends: valid seeds of every method, and their mutations.

:class:`Peer` plays a SIP peer of the target at a bounded level of
sanity: it writes well-formed requests of every method (with fresh
Call-IDs, tags and branches), remembers the calls the target answered so
that in-dialog requests (ACK, BYE, re-INVITE, UPDATE, REFER, NOTIFY,
CANCEL) carry the right identifiers, answers some of the target's own
requests and writes responses to others, and hands most messages to
:func:`mutate` first. Everything is text built here by hand (not with
sipd's serialiser), so the target meets what a foreign stack could send.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sipd.sip.message import Request, Response

__all__ = ["INTERESTING", "Peer", "mutate"]

#: Values that found bugs before, or sit on a boundary of some parser.
INTERESTING: list[bytes] = [
    b"",
    b" ",
    b"0",
    b"-1",
    b"1",
    b"70",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"99999",
    b"2147483648",
    b"4294967296",
    b"18446744073709551616",
    b"9" * 4300,
    b"\x00",
    b"a\x00b",
    b"\r",
    b"\t",
    b"\xff\xfe",
    b"[::1]",
    b"::1",
    b"999.999.999.999",
    b"bogus",
    b"media.example.invalid",
    b"255.255.255.255",
    b"0.0.0.0",
    b"127.0.0.1",
    b"sip:",
    b"sip:@",
    b"<>",
    b"x" * 300,
    b"%00",
    b'"',
    b";;",
    b",,",
    b"sip:a@999.999.999.999:99999",
    b"<sip:b@[::1]:5060;maddr=[::1]>",
    b"<sips:x@127.0.0.1;transport=tcp>",
    b"a b c",
]

VIA_PARAMS: list[bytes] = [
    b"rport=65536",
    b"rport=0",
    b"rport=99999999999",
    b"maddr=[::1]",
    b"maddr=999.999.999.999",
    b"maddr=bogus",
    b"received=bogus",
    b"received=1.2.3.4\x00",
    b"received=[::1]",
    b"branch=",
    b"branch",
    b"ttl=300",
    b"maddr=127.0.0.1",
    b"rport",
    b"received=127.0.0.1;rport=1",
]

SDP_LINES: list[bytes] = [
    b"c=IN IP4 media.example.invalid",
    b"c=IN IP4 127.0.0.1\x00",
    b"c=IN IP4 224.2.1.1/127",
    b"c=IN IP6 ::1",
    b"c=IN IP4 0.0.0.0",
    b"c=IN IP4 ",
    b"m=audio 0 RTP/AVP 0",
    b"m=audio 65536 RTP/AVP 0",
    b"m=audio 9 RTP/SAVP 0",
    b"m=video 4000 RTP/AVP 31",
    b"a=sendonly",
    b"a=inactive",
    b"a=rtpmap:0 PCMU",
    b"a=rtpmap:96 telephone-event/8000",
    b"a=fmtp:101 0-99999",
    b"a=ptime:0",
    b"a=ptime:99999999",
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random mutations of ``data``."""
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        data = rng.choice(_MUTATORS)(data, rng)
    return data


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), (sep + body)


def _flip(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]


def _insert(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data) + 1)
    what = rng.choice([b"\x00", b"\r", b"\n", b" ", b";", b",", b":", b'"', b"<", b">", b"\xff"])
    return data[:i] + what * rng.choice((1, 1, 2, 50)) + data[i:]


def _cut(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 2:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 40) :]


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _dup_line(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    lines.insert(i, lines[i])
    return b"\r\n".join(lines) + rest


def _drop_line(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    del lines[rng.randrange(1, len(lines))]
    return b"\r\n".join(lines) + rest


def _swap_lines(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 3:
        return data
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\r\n".join(lines) + rest


def _header_value(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    name, colon, _ = lines[i].partition(b":")
    if colon:
        lines[i] = name + b": " + rng.choice(INTERESTING)
    return b"\r\n".join(lines) + rest


def _number(data: bytes, rng: random.Random) -> bytes:
    digits = [i for i, c in enumerate(data) if 48 <= c <= 57]
    if not digits:
        return data
    i = rng.choice(digits)
    j = i
    while j < len(data) and 48 <= data[j] <= 57:
        j += 1
    return data[:i] + rng.choice(INTERESTING[1:14]) + data[j:]


def _via_param(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _lines(data)
    for i, line in enumerate(lines):
        if line.lower().startswith((b"via:", b"v:")):
            lines[i] = line + b";" + rng.choice(VIA_PARAMS)
            break
    return b"\r\n".join(lines) + rest


def _sdp_line(data: bytes, rng: random.Random) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not body:
        return data
    lines = body.split(b"\r\n")
    new = rng.choice(SDP_LINES)
    same = [k for k, line in enumerate(lines) if line[:2] == new[:2]]
    if same and rng.random() < 0.7:
        lines[rng.choice(same)] = new
    else:
        lines.insert(rng.randrange(len(lines) + 1), new)
    return _relength(head + sep + b"\r\n".join(lines))


def _content_length(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _lines(data)
    for i, line in enumerate(lines):
        if line.lower().startswith((b"content-length:", b"l:")):
            lines[i] = b"Content-Length: " + rng.choice(INTERESTING[:16])
    return b"\r\n".join(lines) + rest


def _line_endings(data: bytes, rng: random.Random) -> bytes:
    return data.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]), rng.randint(1, 6))


def _garbage(data: bytes, rng: random.Random) -> bytes:
    return data + rng.randbytes(rng.randint(1, 200))


def _relength(data: bytes) -> bytes:
    """Fix Content-Length after an SDP mutation (so the body is what is tested)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = [
        b"Content-Length: %d" % len(body) if line.lower().startswith(b"content-length:") else line
        for line in head.split(b"\r\n")
    ]
    return b"\r\n".join(lines) + sep + body


_MUTATORS: list[Callable[[bytes, random.Random], bytes]] = [
    _flip,
    _insert,
    _cut,
    _truncate,
    _dup_line,
    _dup_line,
    _drop_line,
    _drop_line,
    _swap_lines,
    _header_value,
    _header_value,
    _header_value,
    _number,
    _number,
    _via_param,
    _via_param,
    _via_param,
    _sdp_line,
    _sdp_line,
    _content_length,
    _line_endings,
    _garbage,
]


@dataclass
class _Dialog:
    call_id: str
    from_tag: str
    to_tag: str
    cseq: int
    branch: str
    acked: bool = False


class Peer:
    """Writes the next datagram; learns dialogs from what the target sends back."""

    def __init__(self, rng: random.Random, port: int, target_port: int, rtp_port: int) -> None:
        self.rng = rng
        self.port = port
        self.target_port = target_port
        self.rtp_port = rtp_port
        #: INVITEs we sent, by Call-ID: (From tag, branch, CSeq).
        self.invites: dict[str, tuple[str, str, int]] = {}
        self._invite_order: deque[str] = deque()
        self.dialogs: deque[_Dialog] = deque(maxlen=300)
        self.requests: deque[Request] = deque(maxlen=300)
        self.calls_answered = 0
        self._kinds: list[tuple[Callable[[], bytes], int]] = [
            (self._random_bytes, 6),
            (self._short, 2),
            (self._invite, 5),
            (self._ack, 6),
            (self._bye, 7),
            (self._cancel, 5),
            (self._options, 8),
            (self._register, 6),
            (self._update, 6),
            (self._reinvite, 4),
            (self._refer, 5),
            (self._notify, 5),
            (self._other, 5),
            (self._response, 10),
            (self._stray_response, 4),
        ]
        self._choices = [k for k, _ in self._kinds]
        self._weights = [w for _, w in self._kinds]

    # -- the datagram stream --------------------------------------------------------------
    def next_datagram(self) -> bytes:
        kind = self.rng.choices(self._choices, self._weights)[0]
        data = kind()
        if kind not in (self._random_bytes, self._short) and self.rng.random() < 0.6:
            data = mutate(data, self.rng)
        return data

    def response_received(self, response: Response) -> bytes | None:
        """A 200 to one of our INVITEs: a dialog, and (mostly) its ACK to send back now.

        A fifth of the calls are never ACKed, so the target's wait for the
        ACK runs out (AckTimeout, then BYE) as with a caller that vanished.
        """
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return None
        sent = self.invites.get(response.call_id)
        to_tag = response.to.tag
        if sent is None or not to_tag:
            return None
        from_tag, branch, cseq = sent
        if any(d.call_id == response.call_id and d.to_tag == to_tag for d in self.dialogs):
            return None
        self.calls_answered += 1
        dialog = _Dialog(response.call_id, from_tag, to_tag, cseq, branch)
        self.dialogs.append(dialog)
        if self.rng.random() < 0.2:
            return None
        dialog.acked = True
        return self._request_in(dialog, "ACK")

    def request_received(self, request: Request) -> bytes | None:
        """A request from the target (BYE, NOTIFY...): answered 200 at once, or kept for later."""
        self.requests.append(request)
        if request.method == "ACK" or self.rng.random() < 0.3:
            return None
        return self._reply_to(request, 200)

    # -- helpers --------------------------------------------------------------------------
    def _tok(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def _via(self, branch: str | None = None) -> str:
        return f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{branch or self._tok()};rport"

    def _uri(self) -> str:
        return f"sip:fuzz@127.0.0.1:{self.target_port}"

    def _me(self) -> str:
        return f"sip:fuzzer@127.0.0.1:{self.port}"

    def _sdp(self) -> bytes:
        direction = self.rng.choice(["sendrecv"] * 6 + ["sendonly", "recvonly", "inactive"])
        return (
            "v=0\r\n"
            f"o=fuzz {self.rng.randrange(1 << 30)} 1 IN IP4 127.0.0.1\r\n"
            "s=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP 0 8 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
            f"a=ptime:20\r\na={direction}\r\n"
        ).encode()

    def _message(self, start: str, headers: list[str], body: bytes = b"", ctype: str = "") -> bytes:
        lines = [start, *headers]
        if body:
            lines.append(f"Content-Type: {ctype or 'application/sdp'}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _out_of_dialog(
        self, method: str, body: bytes = b"", extra: list[str] | None = None
    ) -> bytes:
        headers = [
            self._via(),
            "Max-Forwards: 70",
            f"From: <{self._me()}>;tag={self._tok()[:8]}",
            f"To: <{self._uri()}>",
            f"Call-ID: {self._tok()}@127.0.0.1",
            f"CSeq: {self.rng.randint(1, 5000)} {method}",
            f"Contact: <{self._me()}>",
            *(extra or []),
        ]
        return self._message(f"{method} {self._uri()} SIP/2.0", headers, body)

    def _dialog(self) -> _Dialog | None:
        return self.rng.choice(self.dialogs) if self.dialogs else None

    def _in_dialog(
        self, method: str, body: bytes = b"", extra: list[str] | None = None, ctype: str = ""
    ) -> bytes:
        d = self._dialog()
        if d is None:
            return self._out_of_dialog(method, body, extra)
        return self._request_in(d, method, body, extra, ctype)

    def _request_in(
        self,
        d: _Dialog,
        method: str,
        body: bytes = b"",
        extra: list[str] | None = None,
        ctype: str = "",
    ) -> bytes:
        if method == "ACK":
            cseq = d.cseq
        else:
            d.cseq += 1
            cseq = d.cseq
        headers = [
            self._via(),
            "Max-Forwards: 70",
            f"From: <{self._me()}>;tag={d.from_tag}",
            f"To: <{self._uri()}>;tag={d.to_tag}",
            f"Call-ID: {d.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <{self._me()}>",
            *(extra or []),
        ]
        return self._message(f"{method} {self._uri()} SIP/2.0", headers, body, ctype)

    def _reply_to(self, request: Request, status: int) -> bytes:
        h = request.headers
        lines = [f"SIP/2.0 {status} Fuzz"]
        lines += [f"Via: {v}" for v in h.get_all("Via")]
        to = h.get("To") or ""
        if ";tag=" not in to:
            to += f";tag={self._tok()[:8]}"
        lines += [f"From: {h.get('From') or ''}", f"To: {to}"]
        lines += [f"Call-ID: {h.get('Call-ID') or ''}", f"CSeq: {h.get('CSeq') or ''}"]
        lines += ["Content-Length: 0"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    # -- the kinds of datagram ------------------------------------------------------------
    def _random_bytes(self) -> bytes:
        if self.rng.random() < 0.5:
            return self.rng.randbytes(self.rng.randint(0, 1500))
        alphabet = b'INVITE SIP/2.0\r\nVia: ;branch=z9hG4bK:<>@sip127.0.0.1,"\x00'
        return bytes(self.rng.choice(alphabet) for _ in range(self.rng.randint(1, 400)))

    def _short(self) -> bytes:
        return self.rng.choice([b"", b"\r\n", b"\r\n\r\n", b"SIP/2.0", b"INVITE", b"\x00" * 8])

    def _invite(self) -> bytes:
        call_id = f"{self._tok()}@127.0.0.1"
        tag, branch, cseq = self._tok()[:8], self._tok(), self.rng.randint(1, 5000)
        extra = []
        if self.rng.random() < 0.3:
            extra += ["Supported: timer", f"Session-Expires: {self.rng.choice([1, 2, 4])}"]
        headers = [
            self._via(branch),
            "Max-Forwards: 70",
            f'From: "Fuzz" <{self._me()}>;tag={tag}',
            f"To: <{self._uri()}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} INVITE",
            f"Contact: <{self._me()}>",
            *extra,
        ]
        self.invites[call_id] = (tag, branch, cseq)
        self._invite_order.append(call_id)
        if len(self._invite_order) > 2000:
            self.invites.pop(self._invite_order.popleft(), None)
        return self._message(f"INVITE {self._uri()} SIP/2.0", headers, self._sdp())

    def _ack(self) -> bytes:
        d = self._dialog()
        if d is not None and not d.acked:
            d.acked = self.rng.random() < 0.9
        return self._in_dialog("ACK")

    def _bye(self) -> bytes:
        return self._in_dialog("BYE")

    def _cancel(self) -> bytes:
        if not self._invite_order:
            return self._out_of_dialog("CANCEL")
        call_id = self.rng.choice(self._invite_order)
        tag, branch, cseq = self.invites.get(call_id, ("x", self._tok(), 1))
        headers = [
            self._via(branch),
            "Max-Forwards: 70",
            f'From: "Fuzz" <{self._me()}>;tag={tag}',
            f"To: <{self._uri()}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} CANCEL",
        ]
        return self._message(f"CANCEL {self._uri()} SIP/2.0", headers)

    def _options(self) -> bytes:
        if self.rng.random() < 0.3:
            return self._in_dialog("OPTIONS", extra=["Accept: application/sdp"])
        return self._out_of_dialog("OPTIONS", extra=["Accept: application/sdp"])

    def _register(self) -> bytes:
        return self._out_of_dialog("REGISTER", extra=[f"Expires: {self.rng.choice([0, 60, 3600])}"])

    def _update(self) -> bytes:
        body = self._sdp() if self.rng.random() < 0.6 else b""
        return self._in_dialog("UPDATE", body)

    def _reinvite(self) -> bytes:
        return self._in_dialog("INVITE", self._sdp())

    def _refer(self) -> bytes:
        target = self.rng.choice([self._me(), "sip:carol@127.0.0.1:9", f"{self._uri()}"])
        return self._in_dialog(
            "REFER", extra=[f"Refer-To: <{target}>", f"Referred-By: <{self._me()}>"]
        )

    def _notify(self) -> bytes:
        body = self.rng.choice([b"SIP/2.0 200 OK\r\n", b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 x"])
        state = self.rng.choice(["active;expires=60", "terminated;reason=noresource"])
        return self._in_dialog(
            "NOTIFY",
            body,
            extra=["Event: refer", f"Subscription-State: {state}"],
            ctype="message/sipfrag;version=2.0",
        )

    def _other(self) -> bytes:
        method = self.rng.choice(["INFO", "MESSAGE", "SUBSCRIBE", "PRACK", "PUBLISH", "FOO"])
        if self.rng.random() < 0.5:
            return self._in_dialog(method)
        return self._out_of_dialog(method)

    def _response(self) -> bytes:
        """A response to a request the target sent us (its BYE, NOTIFY, an OPTIONS...)."""
        if not self.requests:
            return self._stray_response()
        request = self.rng.choice(self.requests)
        status = self.rng.choice([100, 180, 200, 202, 401, 407, 481, 486, 487, 491, 500, 503, 603])
        return self._reply_to(request, status)

    def _stray_response(self) -> bytes:
        status = self.rng.choice([100, 180, 200, 404, 486, 500])
        method = self.rng.choice(["INVITE", "BYE", "OPTIONS", "REGISTER", "CANCEL"])
        headers = [
            self._via(),
            f"From: <{self._uri()}>;tag={self._tok()[:8]}",
            f"To: <{self._me()}>;tag={self._tok()[:8]}",
            f"Call-ID: {self._tok()}@127.0.0.1",
            f"CSeq: {self.rng.randint(1, 5000)} {method}",
            f"Contact: <{self._me()}>",
        ]
        return self._message(f"SIP/2.0 {status} Stray", headers)
