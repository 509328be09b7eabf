"""Properties of the SIP message layer, checked with hypothesis.

(a) Any well-formed request we can build survives serialise → parse with its
start line, header values and body intact. (b) Whatever bytes arrive, the
parser and the lazy accessors either succeed or raise SipParseError (which
the transport turns into a 400/416/505 or a dropped datagram) and nothing else.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipd.sip.errors import SipParseError
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response, parse_message
from sipd.sip.uri import Uri

BOUNDED = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
tokens = st.text(alphabet=_ALNUM + "-.!%*_+`'~", min_size=1, max_size=12)
words = st.text(alphabet=_ALNUM, min_size=1, max_size=10)
hosts = st.one_of(
    st.lists(words, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.just("[2001:db8::1]"),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
methods = st.one_of(
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
)
# Header values as they stand after parsing: printable, no CR/LF, no outer blanks.
values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t éü€"),
    max_size=40,
).map(str.strip)
extra_headers = st.lists(st.tuples(tokens.map(lambda t: "X-" + t), values), max_size=5)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(methods)
    uri = Uri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        host=draw(hosts),
        user=draw(words),
        port=draw(ports),
    )
    name = draw(st.one_of(st.none(), st.text(alphabet=_ALNUM + ' "\\,;<>', max_size=15)))
    quoted = "" if not name else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '" '
    items = [
        ("Via", f"SIP/2.0/UDP {draw(hosts)}:{draw(ports) or 5060};branch=z9hG4bK{draw(words)}"),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
        ("From", f"{quoted}<sip:{draw(words)}@{draw(hosts)}>;tag={draw(tokens)}"),
        ("To", f"sip:{draw(words)}@{draw(hosts)}"),
        ("Call-ID", f"{draw(tokens)}@{draw(hosts)}"),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
        *draw(extra_headers),
    ]
    body = draw(st.binary(max_size=200))
    return Request(method, uri, Headers(items), body)


@BOUNDED
@given(requests())
def test_built_requests_round_trip(req: Request) -> None:
    """parse(serialise(msg)) keeps the start line, every header value and the body."""
    data = req.to_bytes()
    back = parse_message(data)
    assert isinstance(back, Request)
    assert back.start_line == req.start_line
    assert back.uri == req.uri
    sent = [(n, v) for n, v in req.headers if n != "Content-Length"]
    got = [(n, v) for n, v in back.headers if n != "Content-Length"]
    assert got == sent
    assert back.headers.get("Content-Length") == str(len(req.body))
    assert back.body == req.body
    assert back.to_bytes() == data
    # The typed views agree with what was built.
    assert back.cseq.method == req.method
    assert back.from_ == req.from_
    assert back.top_via == req.top_via


def _touch_everything(data: bytes) -> None:
    """Parse, then read every lazy accessor; only SipParseError may escape."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    for attr in ("from_", "to", "vias", "top_via", "cseq", "contacts", "call_id", "content_type"):
        try:
            value = getattr(msg, attr)
        except SipParseError:
            continue
        for via in value if attr == "vias" else []:
            for prop in ("rport", "ttl", "sent_by", "branch", "is_rfc3261"):
                with contextlib.suppress(SipParseError):
                    getattr(via, prop)
    if isinstance(msg, Request):
        assert isinstance(msg.uri, Uri)
        with contextlib.suppress(SipParseError):
            msg.max_forwards  # noqa: B018
    else:
        assert isinstance(msg, Response)
    # Whatever parsed can be serialised, and that parses again.
    out = msg.to_bytes()
    assert isinstance(out, bytes)


@BOUNDED
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_sip_parse_error(data: bytes) -> None:
    _touch_everything(data)


SEED = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.com:5060;branch=z9hG4bK776asdhds;rport;ttl=3\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Al \\"ice\\"" <sip:alice@atlanta.com>;tag=1928301774\r\n'
    b"To: sip:bob@biloxi.com\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@[2001:db8::1]:5070>;expires=60, <sips:a@b>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)

# Bytes that are likely to upset a SIP parser where they land.
_NASTY = [
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"@",
    b"[",
    b"]",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n ",
    b"%",
    b"%zz",
    b"=",
    b"?",
    b"&",
    b"/",
    b"0",
    b"9" * 12,
    b"-1",
    b"\xff",
    b"\xc3\xa9",
    "²".encode(),
    "٣".encode(),
    b"\x00",
    b"SIP/2.0",
    b"sip:",
    b"tel:",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(st.sampled_from(_NASTY) | st.binary(min_size=1, max_size=4))
        if op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


@BOUNDED
@given(mutated())
def test_mutated_messages_parse_or_raise_sip_parse_error(data: bytes) -> None:
    _touch_everything(data)


def test_seed_message_is_valid() -> None:
    """The mutation seed itself parses fully, so mutations start from a valid message."""
    msg = parse_message(SEED)
    assert isinstance(msg, Request)
    assert msg.from_.display_name == 'Al \\"ice\\"'.replace('\\"', '"')
    assert msg.top_via.rport is True
    assert [c.uri.port for c in msg.contacts] == [5070, None]
