"""RFC 3264 §6: an answerer rejects the streams it cannot use, one by one, and uses the rest.

An offer with two audio streams of which one is unusable is answered with
port 0 in that stream's place and the other stream accepted; an odd or
broken attribute in a stream that is rejected anyway (video, or the
unusable audio) does not fail the offer. Checked on the SDP functions and
end to end through a UA on a fake socket.
"""

from __future__ import annotations

import pytest

from sipd.errors import SdpError, SdpNegotiationError
from sipd.sdp import PCMA, PCMU, TELEPHONE_EVENT, negotiate_answer, parse_sdp, process_answer
from sipd.session.negotiation import Answered, SdpContext, answer_offer, read_answer
from tests.unit.test_sdp import crlf, our_offer
from tests.unit.test_transport_udp import Stack, sip_request

HEAD = """
    v=0
    o=peer 1 1 IN IP4 192.0.2.1
    s=-
    c=IN IP4 192.0.2.1
    t=0 0
"""

G729_THEN_PCMU = crlf(
    HEAD
    + """
    m=audio 5000 RTP/AVP 18
    a=rtpmap:18 G729/8000
    m=audio 6000 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
"""
)

BROKEN_THEN_PCMU = crlf(
    HEAD
    + """
    m=audio 5000 RTP/AVP 0 97
    a=rtpmap:97 opus
    m=audio 6000 RTP/AVP 0
"""
)

VIDEO_WITH_ODD_ATTRIBUTES = crlf(
    HEAD
    + """
    m=audio 5000 RTP/AVP 0
    m=video 5002 RTP/AVP 99 100
    a=rtpmap:99 h263
    a=fmtp:100
    a=ptime:soon
    c=IN IP4
    a=x-unknown:@@@
"""
)

CONTEXT = SdpContext("198.51.100.2", 30000, (PCMU, PCMA, TELEPHONE_EVENT), 9, 1)


def answer(body: bytes) -> Answered:
    result = answer_offer(body, CONTEXT)
    assert isinstance(result, Answered), result
    return result


def test_rfc3264_6_unusable_first_audio_stream_is_rejected_and_the_second_used() -> None:
    result = answer(G729_THEN_PCMU).result
    assert (result.codec, result.remote_port) == (PCMU, 6000)
    assert [(m.media, m.port) for m in result.answer.media] == [("audio", 0), ("audio", 30000)]
    assert result.answer.media[0].formats == ["18"]  # the rejected stream keeps its formats


def test_rfc3264_6_broken_attribute_makes_only_its_stream_unusable() -> None:
    result = answer(BROKEN_THEN_PCMU).result
    assert (result.codec, result.remote_port) == (PCMU, 6000)
    assert [m.port for m in result.answer.media] == [0, 30000]


def test_rfc3264_6_odd_attributes_of_a_rejected_video_stream_do_not_matter() -> None:
    result = answer(VIDEO_WITH_ODD_ATTRIBUTES).result
    assert (result.codec, result.remote_port) == (PCMU, 5000)
    assert [(m.media, m.port) for m in result.answer.media] == [("audio", 30000), ("video", 0)]


def test_rfc3264_6_lenient_parse_keeps_broken_lines_and_notes_them() -> None:
    sdp = parse_sdp(VIDEO_WITH_ODD_ATTRIBUTES, strict=False)
    video = sdp.media[1]
    assert len(video.problems) == 3  # rtpmap, ptime, c=
    assert "a=rtpmap:99 h263" in video.problems[0]
    assert b"a=rtpmap:99 h263\r\n" in sdp.to_bytes()
    with pytest.raises(SdpError, match="h263"):
        parse_sdp(VIDEO_WITH_ODD_ATTRIBUTES)  # strict parsing is unchanged


def test_rfc3264_6_no_usable_audio_stream_still_gets_488_naming_the_first_fault() -> None:
    only_broken = crlf(HEAD + "m=audio 5000 RTP/AVP 97\na=rtpmap:97 opus\n")
    result = answer_offer(only_broken, CONTEXT)
    assert isinstance(result, SdpNegotiationError)
    assert "a=rtpmap:97 opus" in str(result)
    g729_only = crlf(HEAD + "m=audio 5000 RTP/AVP 18\nm=audio 6000 RTP/AVP 9\n")
    with pytest.raises(SdpNegotiationError, match="no common codec: offered G729/8000"):
        negotiate_answer(
            parse_sdp(g729_only), "198.51.100.2", 30000, [PCMU], session_id=1, session_version=1
        )


def test_rfc3264_6_answer_with_a_broken_attribute_in_our_audio_stream_is_refused() -> None:
    offer = our_offer()
    body = crlf(HEAD + "m=audio 7000 RTP/AVP 0\na=ptime:fast\n")
    result = read_answer(offer, body, "2xx")
    assert isinstance(result, SdpNegotiationError) and "ptime" in str(result)
    with pytest.raises(SdpNegotiationError):
        process_answer(offer, parse_sdp(body, strict=False))


def test_rfc3264_6_two_audio_offer_on_the_wire_is_answered_with_port_zero_in_place() -> None:
    stack = Stack()
    data = sip_request("INVITE", extra=("Content-Type: application/sdp",), body=G729_THEN_PCMU)
    stack.receive(data)
    stack.reactor.advance(0.1)
    [ok] = [r for r, _ in stack.responses(stack.wire.sent) if r.status == 200]
    answered = parse_sdp(ok.body)
    assert [(m.media, m.port != 0) for m in answered.media] == [("audio", False), ("audio", True)]
    stack.close()
