"""The receive path's shortcuts give the answers of the general parsers.

parse_message indexes each header's first value and memoises the typed views
(CSeq, From, To, top Via) on the header block; From/To and Via cache the part
before their parameters; frozen values are built without their __init__.
Every change to the headers must show in the views, and every shortcut must
agree with the long way round.
"""

from __future__ import annotations

import dataclasses

import pytest

from sipd.sip import address, message, via
from sipd.sip.address import NameAddr, parse_name_addr
from sipd.sip.errors import BadRequest
from sipd.sip.grammar import parse_params
from sipd.sip.headers import CSeq, Headers, parse_cseq
from sipd.sip.message import Request, Response, parse_message
from sipd.sip.uri import parse_uri
from sipd.sip.via import Via, parse_via


def wire(text: str, body: bytes = b"") -> bytes:
    return text.replace("\n", "\r\n").encode() + body


def trying(branch: str = "z9hG4bK1", to_tag: str = "") -> bytes:
    return wire(
        "SIP/2.0 100 Trying\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport=5060\n"
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=f1\n'
        f"To: <sip:bob@biloxi.example.com>{to_tag}\n"
        "Call-ID: c1@192.0.2.10\n"
        "CSeq: 7 INVITE\n"
        "Content-Length: 0\n\n"
    )


def test_typed_views_are_parsed_once_per_message() -> None:
    msg = parse_message(trying())
    assert msg.from_ is msg.from_
    assert msg.to is msg.to
    assert msg.top_via is msg.top_via
    assert msg.cseq is msg.cseq
    assert msg.cseq == CSeq(7, "INVITE")


def test_changed_headers_show_in_the_typed_views() -> None:
    msg = parse_message(trying())
    assert (msg.from_.tag, msg.to.tag, msg.cseq.number) == ("f1", None, 7)
    assert msg.top_via.branch == "z9hG4bK1"
    msg.headers.set("To", "<sip:bob@biloxi.example.com>;tag=t9")
    assert msg.to.tag == "t9"
    msg.headers.set("From", "<sip:carol@example.com>;tag=f2")
    assert msg.from_.tag == "f2"
    assert msg.from_.uri == parse_uri("sip:carol@example.com")
    msg.headers.set("CSeq", "8 INVITE")
    assert msg.cseq == CSeq(8, "INVITE")
    msg.headers.prepend("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKtop")
    assert msg.top_via.branch == "z9hG4bKtop"
    assert msg.headers.pop_first_value("Via") is not None
    assert msg.top_via.branch == "z9hG4bK1"
    msg.headers.add("Call-ID", "ignored-second@x")
    assert msg.call_id == "c1@192.0.2.10"
    msg.headers.remove("Call-ID")
    with pytest.raises(BadRequest, match="missing Call-ID"):
        _ = msg.call_id
    msg.headers.remove("From")
    with pytest.raises(BadRequest, match="missing From"):
        _ = msg.from_


def test_replaced_header_block_shows_in_the_typed_views() -> None:
    msg = parse_message(trying())
    assert msg.from_.tag == "f1"
    headers = msg.headers.copy()
    headers.set("From", "<sip:alice@atlanta.example.com>;tag=other")
    assert msg.from_.tag == "f1"  # the copy is independent
    msg.headers = headers
    assert msg.from_.tag == "other"
    assert msg.to_bytes() != trying()


def test_copied_headers_keep_first_values_apart() -> None:
    original = parse_message(trying()).headers
    copy = original.copy()
    copy.set("Call-ID", "new@x")
    assert original.get("Call-ID") == "c1@192.0.2.10"
    assert copy.get("call-id") == "new@x"
    assert "Call-ID" in original and "i" in copy and "X-Nope" not in copy


def test_first_value_wins_whatever_the_spelling() -> None:
    data = wire(
        "OPTIONS sip:bob@biloxi.example.com SIP/2.0\n"
        "v: SIP/2.0/UDP first.example.com;branch=z9hG4bKa, SIP/2.0/UDP second.example.com\n"
        "VIA: SIP/2.0/UDP third.example.com;branch=z9hG4bKc\n"
        "f: <sip:alice@atlanta.example.com>;tag=1\n"
        "t: <sip:bob@biloxi.example.com>\n"
        "i: one@x\n"
        "call-id: two@x\n"
        "CSeq: 1 OPTIONS\n"
        "l: 0\n\n"
    )
    msg = parse_message(data)
    assert msg.call_id == "one@x"
    assert msg.top_via.host == "first.example.com"
    assert [v.host for v in msg.vias] == [
        "first.example.com",
        "second.example.com",
        "third.example.com",
    ]
    assert msg.headers.get_all("Call-ID") == ["one@x", "two@x"]
    assert parse_message(data).to_bytes() == data


def test_new_header_names_parse_the_same_the_second_time() -> None:
    data = wire(
        "SIP/2.0 180 Ringing\n"
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\n"
        "X-Never-Seen-Before-1: a\n"
        "From: <sip:a@b>;tag=1\n"
        "To: <sip:c@d>;tag=2\n"
        "Call-ID: x\n"
        "CSeq: 1 INVITE\n"
        "x-never-seen-before-1 :  b \n\n"
    )
    message.clear_cache()
    first = parse_message(data)
    second = parse_message(data)
    assert list(first.headers) == list(second.headers)
    assert second.headers.get_all("X-Never-Seen-Before-1") == ["a", "b"]
    assert second.to_bytes() == data


def test_unknown_status_without_reason_round_trips() -> None:
    data = wire(
        "SIP/2.0 299\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\n"
        "To: <sip:c@d>\nCall-ID: x\nCSeq: 1 INVITE\n\n"
    )
    msg = parse_message(data)
    assert isinstance(msg, Response) and msg.reason == "Unknown"
    assert msg.to_bytes() == data


def test_zero_content_length_drops_extra_octets() -> None:
    data = trying() + b"junk"
    msg = parse_message(data)
    assert msg.body == b""
    assert b"junk" not in msg.to_bytes()


def test_request_fields_and_raw_bytes_after_parsing() -> None:
    data = wire(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\n"
        "From: <sip:a@b>;tag=1\nTo: <sip:c@d>\nCall-ID: x\nCSeq: 1 INVITE\n"
        "Content-Length: 3\n\n",
        b"abc",
    )
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert (msg.method, str(msg.uri), msg.body) == ("INVITE", "sip:bob@biloxi.example.com", b"abc")
    assert msg.to_bytes() == data
    msg.method = "BYE"
    assert msg.to_bytes().startswith(b"BYE sip:bob@biloxi.example.com SIP/2.0\r\n")


@pytest.mark.parametrize(
    "value",
    [
        '"Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
        "<sip:bob@biloxi.example.com>",
        "Bob <sip:bob@b.example.com> ; tag = x ;lr",
        '"a>b" <sip:x@y>;tag=1',
        '"quote \\" inside" <sip:x@y>;tag=2',
        "<sip:a@b>;tag=",
        "<sip:a@b>;tag=a;tag=b",
        '<sip:a@b>;tag="q;r"',
        "sip:carol@c.example.com;tag=3",
        "<tel:+15551234>;tag=4",
    ],
)
def test_cached_address_heads_give_the_general_answer(value: str) -> None:
    address.clear_cache()
    fresh = parse_name_addr(value)
    again = parse_name_addr(value)  # the head cache is filled by now
    assert again == fresh
    other_tag = value.replace("tag=", "tag=zz", 1)
    address.clear_cache()
    expected = parse_name_addr(other_tag)
    parse_name_addr(value)
    assert parse_name_addr(other_tag) == expected


@pytest.mark.parametrize(
    "value",
    ['"unterminated <sip:a@b>', "<sip:a@b", "<sip:a@b>;=x", '<sip:a@b>;tag="open', "<foo:a>"],
)
def test_bad_addresses_stay_bad(value: str) -> None:
    for _ in range(2):
        with pytest.raises(BadRequest):
            parse_name_addr(value)


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport",
        "SIP/2.0/TCP host.example.com;branch=z9hG4bK2",
        "sip/2.0/udp h:1;received=1.2.3.4;rport=5",
        "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK3",
        "SIP / 2.0 / UDP   host:05060 ; branch = x",
        "SIP/2.0/WSS a.b:65535",
    ],
)
def test_cached_sent_by_gives_the_general_answer(value: str) -> None:
    via.clear_cache()
    fresh = parse_via(value)
    assert parse_via(value) == fresh
    assert parse_via(value + ";x=1").params == (*fresh.params, ("x", "1"))


@pytest.mark.parametrize(
    "value", ["SIP/2.0/UDP h:70000", "SIP/2.0/UDP h:0;branch=x", "SIP/2.0/UDP :5060", "SIP/2.0/UDP"]
)
def test_bad_vias_stay_bad(value: str) -> None:
    for _ in range(2):
        with pytest.raises(BadRequest):
            parse_via(value)


def test_values_built_without_init_equal_constructed_ones() -> None:
    built = parse_via("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1")
    assert type(built) is Via
    assert dataclasses.asdict(built) == dataclasses.asdict(
        Via("UDP", "192.0.2.10", 5060, (("branch", "z9hG4bK1"),))
    )
    assert hash(built) == hash(Via("UDP", "192.0.2.10", 5060, (("branch", "z9hG4bK1"),)))
    parse_name_addr("<sip:a@b>;tag=1")
    addr = parse_name_addr("<sip:a@b>;tag=2")
    assert type(addr) is NameAddr
    assert addr == NameAddr(parse_uri("sip:a@b"), None, (("tag", "2"),))
    assert dataclasses.replace(addr, display_name="A").display_name == "A"
    cseq = parse_cseq("42 BYE")
    assert type(cseq) is CSeq and cseq == CSeq(42, "BYE") and hash(cseq) == hash(CSeq(42, "BYE"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cseq.number = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "params"),
    [
        (
            ";branch=z9hG4bK1;RPort;received=192.0.2.1",
            (("branch", "z9hG4bK1"), ("rport", None), ("received", "192.0.2.1")),
        ),
        ("; a = b ;c", (("a", "b"), ("c", None))),
        (';x="a;b";y', (("x", '"a;b"'), ("y", None))),
        (";x=", (("x", ""),)),
        (";;lr", (("lr", None),)),
        ("tag=1\x0b", (("tag", "1"),)),
    ],
)
def test_parameters_parse_alike_on_both_paths(text: str, params: tuple[object, ...]) -> None:
    assert parse_params(text) == params


def test_empty_parameter_name_is_400_on_both_paths() -> None:
    for text in (";=x", "; =x"):
        with pytest.raises(BadRequest, match="empty parameter name"):
            parse_params(text)


def test_clear_cache_forgets_address_and_sent_by_parses() -> None:
    parse_message(trying()).top_via  # noqa: B018 - fills the caches
    parse_name_addr("<sip:a@b>;tag=1")
    message.clear_cache()
    assert not address._HEAD_CACHE
    assert not via._SENT_BY_CACHE


def test_headers_built_in_code_have_no_index() -> None:
    headers = Headers([("Call-ID", "a"), ("i", "b")])
    assert headers.get("Call-ID") == "a" and headers.get_all("call-id") == ["a", "b"]
    headers.set("Call-ID", "c")
    assert headers.get("i") == "c"
