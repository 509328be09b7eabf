"""``ResponseView``: the read-only response a signalling handler is shown."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from sipd.session.views import HeadersView, ResponseView
from sipd.sip.message import Response, parse_message

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n"

# Compact forms (v, f, t, i, m, c, l) and odd capitalisation, as a peer may send them.
WIRE = (
    "SIP/2.0 200 OK Then\r\n"
    "v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;received=192.0.2.1\r\n"
    "VIA: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-0\r\n"
    "f: <sip:alice@example.com>;tag=a1\r\n"
    "t: <sip:bob@example.com>;tag=b2\r\n"
    "i: call-7@192.0.2.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "m: <sip:bob@192.0.2.2:5062>\r\n"
    "x-custom-thing: one\r\n"
    "X-Custom-Thing: two\r\n"
    "Allow: INVITE, ACK\r\n"
    "Allow: BYE\r\n"
    "c: application/sdp\r\n"
    f"l: {len(SDP)}\r\n"
    "\r\n"
).encode() + SDP


def parsed() -> Response:
    message = parse_message(WIRE)
    assert isinstance(message, Response)
    return message


def test_fields_come_from_the_parsed_response() -> None:
    view = ResponseView.of(parsed())
    assert view.status == 200
    assert view.reason == "OK Then"
    assert view.call_id == "call-7@192.0.2.1"
    assert view.body == SDP
    assert view.is_success and not view.is_provisional


@pytest.mark.parametrize(
    ("status", "success", "provisional"),
    [
        (100, False, True),
        (183, False, True),
        (200, True, False),
        (299, True, False),
        (302, False, False),
        (486, False, False),
        (603, False, False),
    ],
)
def test_status_classes(status: int, success: bool, provisional: bool) -> None:
    view = ResponseView(status, "x", "c", HeadersView(), b"")
    assert view.is_success is success
    assert view.is_provisional is provisional


def test_headers_are_case_insensitive_and_know_compact_forms() -> None:
    headers = ResponseView.of(parsed()).headers
    assert headers.get("Call-ID") == headers.get("call-id") == headers.get("i")
    assert headers.get("I") == "call-7@192.0.2.1"
    assert headers.get("Contact") == headers.get("m") == "<sip:bob@192.0.2.2:5062>"
    assert headers.get("content-type") == "application/sdp"
    assert headers.get("Content-Length") == str(len(SDP))
    assert headers.get_all("via") == headers.get_all("v") == headers.get_all("VIA")
    assert len(headers.get_all("Via")) == 2
    assert headers.get_all("X-CUSTOM-THING") == ["one", "two"]
    assert headers.values("Allow") == ["INVITE", "ACK", "BYE"]
    assert headers.get("Subject") is None
    assert headers.get_all("Subject") == []
    for name in ("Via", "v", "from", "F", "To", "t", "x-custom-thing"):
        assert name in headers
    assert "Subject" not in headers and "s" not in headers
    assert 3 not in headers


def test_iteration_gives_canonical_names_in_order() -> None:
    headers = ResponseView.of(parsed()).headers
    pairs = list(headers)
    assert len(pairs) == len(headers) == 13
    assert pairs[0] == ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;received=192.0.2.1")
    assert [n for n, _ in pairs[:6]] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]
    assert ("Contact", "<sip:bob@192.0.2.2:5062>") in pairs
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in pairs)


def test_view_is_immutable() -> None:
    view = ResponseView.of(parsed())
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.status = 486  # type: ignore[misc]
    with pytest.raises(AttributeError):
        view.extra = 1  # type: ignore[attr-defined]
    headers = view.headers
    for mutator in ("set", "add", "prepend", "remove", "pop_first_value", "copy", "version"):
        assert not hasattr(headers, mutator)
    with pytest.raises(AttributeError):
        headers._headers = None  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        del headers._headers
    with pytest.raises(AttributeError):
        headers.extra = 1
    assert not hasattr(view, "__dict__") and not hasattr(headers, "__dict__")
    with pytest.raises(TypeError):
        view.body[0] = 0  # type: ignore[index]
    # get_all hands out a fresh list: changing it changes nothing.
    headers.get_all("Via").clear()
    assert len(headers.get_all("Via")) == 2


def test_view_is_a_snapshot_of_the_wire_response() -> None:
    response = parsed()
    view = ResponseView.of(response)
    response.headers.set("Call-ID", "changed")
    response.headers.add("Subject", "later")
    response.headers.remove("Via")
    response.status = 500
    assert view.call_id == "call-7@192.0.2.1"
    assert view.headers.get("i") == "call-7@192.0.2.1"
    assert "Subject" not in view.headers
    assert len(view.headers.get_all("Via")) == 2
    assert view.status == 200


def test_views_compare_hash_copy_and_pickle_by_value() -> None:
    a, b = ResponseView.of(parsed()), ResponseView.of(parsed())
    assert a == b and hash(a) == hash(b)
    assert a != dataclasses.replace(a, status=180)
    assert copy.copy(a) == a and copy.deepcopy(a) == a
    assert pickle.loads(pickle.dumps(a)) == a
    assert HeadersView([("i", "x")]) == HeadersView([("Call-ID", "x")])
    assert repr(HeadersView([("i", "x")])) == "HeadersView([('Call-ID', 'x')])"


def test_a_built_response_without_call_id() -> None:
    view = ResponseView.of(Response(180))
    assert (view.status, view.reason, view.call_id, view.body) == (180, "Ringing", "", b"")
    assert view.is_provisional
    assert list(view.headers) == []


def test_exported_from_the_package_root() -> None:
    import sipd

    assert sipd.ResponseView is ResponseView
    assert "ResponseView" in sipd.__all__
