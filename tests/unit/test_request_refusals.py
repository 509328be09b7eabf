"""What a UAS refuses before processing a request (RFC 3261 §8.2.2.3, §8.2.3, §21.4.7, §16.3).

Pure checks of :mod:`sipd.session.request_checks` and :mod:`sipd.sip.body`,
then the same rules end to end: through a real stack on a fake socket
(:class:`~tests.unit.test_transport_udp.Stack`), and over real UDP on
127.0.0.1 between a scripted endpoint and a :class:`SimplePeer`.
"""

from __future__ import annotations

import secrets

import pytest
import pytest_twisted

from sipd.sdp import parse_sdp
from sipd.session.request_checks import acceptable, refusal
from sipd.sip.body import multipart_parts, sdp_body, unsupported_body
from sipd.sip.message import Request, Response, parse_message
from tests.conftest import PeerFactory, RawUA, is_response, within
from tests.unit.test_transport_properties import SDP
from tests.unit.test_transport_udp import Stack, sip_request

BOUNDARY = "7a9cbec.3a2f2cc"
# RFC 4475 §3.1.1.11 (mpart01): an SDP part and a signature part.
MULTIPART = (
    f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n".encode()
    + SDP
    + f"\r\n--{BOUNDARY}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
    f"Content-Disposition: attachment; handling=required\r\n\r\nMIIBUgYJKoZIhvcNAQcCoIIBQzCC\r\n"
    f"--{BOUNDARY}--\r\n".encode()
)
MULTIPART_TYPE = f'Content-Type: multipart/mixed;boundary="{BOUNDARY}"'


def _request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def invite(*extra: str, body: bytes = SDP, content_type: str | None = "application/sdp") -> bytes:
    lines = [*extra] + ([f"Content-Type: {content_type}"] if content_type else [])
    return sip_request("INVITE", extra=tuple(lines), body=body)


def statuses(stack: Stack, data: bytes) -> list[Response]:
    """Deliver ``data``, let the UA answer, and return every response it sent."""
    sent = stack.receive(data)
    before = len(stack.wire.sent)
    stack.reactor.advance(0.1)
    sent += stack.wire.sent[before:]
    return [r for r, _ in stack.responses(sent)]


@pytest.fixture
def stack() -> Stack:
    s = Stack()
    yield s  # type: ignore[misc]
    s.close()


# -- §8.2.2.3 Require: 420 Bad Extension ---------------------------------------------------------


def test_rfc3261_8_2_2_3_unknown_require_gets_420_listing_the_unknown_tags() -> None:
    request = _request(invite("Require: replaces, foo", "Require: Bar"))
    status, _, headers = refusal(request) or (0, None, ())
    assert status == 420
    assert dict(headers)["Unsupported"] == "foo, Bar"


@pytest.mark.parametrize("require", ["replaces", "timer", "Timer, REPLACES"])
def test_rfc3261_8_2_2_3_supported_require_tags_pass(require: str) -> None:
    assert refusal(_request(invite(f"Require: {require}"))) is None


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_rfc3261_8_2_2_3_require_of_ack_and_cancel_is_ignored(method: str) -> None:
    assert refusal(_request(sip_request(method, extra=("Require: foo",)))) is None


def test_rfc3261_8_2_2_3_invite_with_unknown_require_is_refused_on_the_wire(stack: Stack) -> None:
    [response] = statuses(stack, invite("Require: 100rel, foo"))
    assert response.status == 420
    assert response.headers.get("Unsupported") == "100rel, foo"
    assert response.to.tag
    assert stack.coordinator.dialogs.legs == {}


def test_rfc3261_8_2_2_3_options_and_bye_with_unknown_require_get_420(stack: Stack) -> None:
    [options] = statuses(stack, sip_request("OPTIONS", extra=("Require: foo",)))
    assert (options.status, options.headers.get("Unsupported")) == (420, "foo")
    bye = sip_request("BYE", to="<sip:bob@127.0.0.1>;tag=x", extra=("Require: foo",))
    [response] = statuses(stack, bye.replace(b"z9hG4bKtransport1", b"z9hG4bKbye1"))
    assert response.status == 420


def test_rfc3261_8_2_2_3_cancel_with_unknown_require_still_cancels(stack: Stack) -> None:
    statuses(stack, invite())
    cancel = sip_request("CANCEL", extra=("Require: foo",))
    replies = {r.status for r in statuses(stack, cancel)}
    assert 200 in replies and 420 not in replies


# -- §8.2.3 Content-Type / Content-Encoding: 415 -------------------------------------------------


def test_rfc3261_8_2_3_invite_with_unknown_body_type_gets_415_with_accept(stack: Stack) -> None:
    [response] = statuses(stack, invite(body=b"hello", content_type="text/plain"))
    assert response.status == 415
    assert response.headers.get("Accept") == "application/sdp"
    assert "text/plain" in response.reason


def test_rfc3261_8_2_3_multipart_without_sdp_gets_415(stack: Stack) -> None:
    body = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nhi\r\n--{BOUNDARY}--\r\n".encode()
    mixed = f"multipart/mixed;boundary={BOUNDARY}"
    [response] = statuses(stack, invite(body=body, content_type=mixed))
    assert response.status == 415
    assert response.headers.get("Accept") == "application/sdp"


def test_rfc3261_8_2_3_unknown_content_encoding_gets_415_with_accept_encoding() -> None:
    status, _, headers = refusal(_request(invite("Content-Encoding: gzip"))) or (0, None, ())
    assert status == 415
    assert dict(headers) == {"Accept-Encoding": "identity"}


def test_rfc3261_8_2_3_bodies_we_do_not_read_are_not_refused() -> None:
    options = _request(sip_request("OPTIONS", extra=("Content-Type: text/plain",), body=b"x"))
    assert refusal(options) is None
    assert refusal(_request(invite(body=b""))) is None


def test_rfc3261_8_2_3_multipart_mixed_sdp_part_is_the_offer(stack: Stack) -> None:
    """RFC 4475 §3.1.1.11: the SDP part of multipart/mixed is used; the call is answered."""
    mixed = MULTIPART_TYPE[len("Content-Type: ") :]
    responses = statuses(stack, invite(body=MULTIPART, content_type=mixed))
    [ok] = [r for r in responses if r.status == 200]
    answer = parse_sdp(ok.body)
    assert answer.audio is not None and answer.audio.port != 0
    assert answer.audio.codecs[0].name == "PCMU"


def test_rfc3261_8_2_3_sdp_body_reads_plain_multipart_and_untyped_bodies() -> None:
    assert sdp_body(_request(invite())) == SDP
    assert sdp_body(_request(invite(content_type=None))) == SDP  # lenient, as before
    mixed = _request(invite(content_type=f"multipart/mixed;boundary={BOUNDARY}", body=MULTIPART))
    assert sdp_body(mixed) == SDP
    assert sdp_body(_request(invite(body=b"hi", content_type="text/plain"))) is None
    assert sdp_body(_request(invite(body=b""))) is None
    assert unsupported_body(mixed) is None


def test_rfc2046_multipart_parts_and_malformed_bodies() -> None:
    parts = multipart_parts(f"multipart/mixed; boundary={BOUNDARY}", b"preamble\r\n" + MULTIPART)
    assert [p.content_type for p in parts or ()] == [
        "application/sdp",
        "application/pkcs7-signature",
    ]
    assert multipart_parts("multipart/mixed", MULTIPART) is None  # no boundary
    assert multipart_parts("multipart/mixed;boundary=zzz", MULTIPART) is None  # never found
    untyped = multipart_parts(
        f"multipart/mixed;boundary={BOUNDARY}", f"--{BOUNDARY}\r\n\r\nx".encode()
    )
    assert [(p.content_type, p.content) for p in untyped or ()] == [("text/plain", b"x")]


def test_rfc3261_8_2_3_ack_with_unusable_body_is_no_answer_and_raises_nothing(
    stack: Stack,
) -> None:
    """A delayed-offer INVITE, then an ACK whose body is not SDP: the call is not answered by it."""
    responses = statuses(stack, invite(body=b"", content_type=None))
    [ok] = [r for r in responses if r.status == 200]
    ack = sip_request(
        "ACK",
        to=f"Bob <sip:bob@127.0.0.1>;tag={ok.to.tag}",
        via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKack415;rport",
        extra=("Content-Type: text/plain",),
        body=b"not an answer",
    )
    stack.receive(ack)
    stack.reactor.advance(1)
    assert stack.metrics.total("sipd_internal_errors_total") == 0


# -- §21.4.7 Accept: 406 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (None, True),
        ("application/sdp", True),
        ("application/*", True),
        ("*/*", True),
        ("text/html, application/sdp;q=0.5", True),
        ("text/plain", False),
        ("application/sdp;q=0", False),
        ("*/*;q=0.0", False),
        ("", False),
    ],
)
def test_rfc3261_20_1_accept_decides_whether_sdp_is_acceptable(
    accept: str | None, ok: bool
) -> None:
    extra = () if accept is None else (f"Accept: {accept}",)
    assert acceptable(_request(invite(*extra))) is ok


def test_rfc3261_21_4_7_invite_that_accepts_no_sdp_gets_406(stack: Stack) -> None:
    [response] = statuses(stack, invite("Accept: text/plain"))
    assert response.status == 406
    assert stack.coordinator.dialogs.legs == {}


def test_rfc3261_21_4_7_delayed_offer_invite_that_accepts_no_sdp_gets_406() -> None:
    """Our 200 would carry an SDP offer, which the caller says it cannot take."""
    status = (refusal(_request(invite("Accept: text/plain", body=b""))) or (0,))[0]
    assert status == 406


# -- §16.3 Max-Forwards 0 is for proxies -----------------------------------------------------------


def test_rfc3261_16_3_invite_with_max_forwards_zero_is_processed(stack: Stack) -> None:
    data = invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    codes = [r.status for r in statuses(stack, data)]
    assert 483 not in codes
    assert 180 in codes and 200 in codes


# -- over real UDP on 127.0.0.1 ------------------------------------------------------------------


def _raw_invite(ua: RawUA, port: int, *extra: str, body: bytes = SDP, ctype: str = "") -> bytes:
    head = (
        f"INVITE sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:raw@127.0.0.1:{ua.port}>;tag=raw1\r\n"
        f"To: <sip:bob@127.0.0.1:{port}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@raw\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:raw@127.0.0.1:{ua.port}>\r\n"
        + "".join(f"{line}\r\n" for line in extra)
        + (f"Content-Type: {ctype or 'application/sdp'}\r\n")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest_twisted.ensureDeferred
async def test_rfc3261_8_2_2_3_and_8_2_3_and_21_4_7_refusals_over_udp(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    """A SimplePeer answers 420, 415 and 406 on a real socket, and offers no call."""
    bob = await peers("bob")
    ua = raw_ua()
    cases = [
        (_raw_invite(ua, bob.port, "Require: foo"), 420),
        (_raw_invite(ua, bob.port, body=b"hello", ctype="text/plain"), 415),
        (_raw_invite(ua, bob.port, "Accept: text/html"), 406),
    ]
    for data, status in cases:
        got = ua.expect(is_response(status, "INVITE"))
        ua.send(data, ("127.0.0.1", bob.port))
        response = await got
        assert isinstance(response, Response)
    assert bob.coordinator.dialogs.legs == {}


@pytest_twisted.ensureDeferred
async def test_rfc3261_8_2_3_multipart_offer_over_udp_is_answered_from_its_sdp_part(
    peers: PeerFactory, raw_ua: type[RawUA]
) -> None:
    bob = await peers("bob")
    ua = raw_ua()
    ua.send(
        _raw_invite(ua, bob.port, body=MULTIPART, ctype=MULTIPART_TYPE[len("Content-Type: ") :]),
        ("127.0.0.1", bob.port),
    )
    incoming = await within(bob.wait_for_incoming(), 5)
    assert incoming.sdp is not None
    assert parse_sdp(incoming.sdp).media[0].port == 49170
    busy = ua.expect(is_response(486, "INVITE"))
    await within(incoming.reject(), 5)
    await busy
