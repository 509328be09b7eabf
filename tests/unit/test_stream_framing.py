"""SIP framing on a byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1): sipd.transport.stream.

The framer is pure, so every split of the bytes can be tried: a message
must come out whole and exactly once whatever the reads look like, and a
peer that never ends its header must be cut off at the limit with the
buffer bounded.
"""

from __future__ import annotations

import pytest

from sipd.sip.message import Request, parse_message
from sipd.transport.stream import (
    DEFAULT_MAX_HEADER_BYTES,
    FramedMessage,
    FramingError,
    Ping,
    Pong,
    StreamEvent,
    StreamFramer,
)


def _request(body: bytes = b"", *, length_header: str | None = "Content-Length") -> bytes:
    lines = [
        "OPTIONS sip:bob@127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-1",
        "From: <sip:alice@127.0.0.1>;tag=a",
        "To: <sip:bob@127.0.0.1>",
        "Call-ID: frame-test",
        "CSeq: 1 OPTIONS",
        "Max-Forwards: 70",
    ]
    if length_header is not None:
        lines.append(f"{length_header}: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _messages(events: list[StreamEvent]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, FramedMessage)]


def test_a_message_in_one_read_comes_out_whole() -> None:
    data = _request(b"v=0\r\n")
    events = StreamFramer().feed(data)
    assert events == [FramedMessage(data)]
    parsed = parse_message(events[0].data)  # type: ignore[union-attr]
    assert isinstance(parsed, Request) and parsed.body == b"v=0\r\n"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_a_message_split_into_small_reads_comes_out_once(size: int) -> None:
    data = _request(b"x" * 100)
    framer = StreamFramer()
    out: list[StreamEvent] = []
    for i in range(0, len(data), size):
        out += framer.feed(data[i : i + size])
    assert out == [FramedMessage(data)]
    assert framer.buffered == 0 and not framer.in_message


def test_coalesced_messages_are_split_at_content_length() -> None:
    first, second = _request(b"hello"), _request(b"")
    third = _request(b"a\r\n\r\nb")  # a blank line inside a body does not end anything
    events = StreamFramer().feed(first + second + third)
    assert _messages(events) == [first, second, third]


def test_a_message_and_the_start_of_the_next_keep_the_rest_buffered() -> None:
    first, second = _request(b"body"), _request(b"more")
    framer = StreamFramer()
    assert _messages(framer.feed(first + second[:30])) == [first]
    assert framer.in_message and framer.buffered == 30
    assert _messages(framer.feed(second[30:])) == [second]


def test_the_compact_l_header_frames_the_body() -> None:
    data = _request(b"12345", length_header="l")
    assert _messages(StreamFramer().feed(data + _request())) == [data, _request()]


def test_agreeing_duplicate_content_lengths_are_accepted_conflicting_ones_not() -> None:
    same = _request(b"abc").replace(b"Content-Length: 3", b"Content-Length: 3\r\nl: 3")
    assert _messages(StreamFramer().feed(same)) == [same]
    conflicting = _request(b"abc").replace(b"Content-Length: 3", b"Content-Length: 3\r\nl: 4")
    (event,) = StreamFramer().feed(conflicting)
    assert isinstance(event, FramingError) and "conflicting" in event.reason


def test_missing_content_length_is_a_framing_error_carrying_the_head() -> None:
    """§18.3: on a stream the length is mandatory; the head lets the caller answer 400."""
    data = _request(length_header=None)
    framer = StreamFramer()
    (event,) = framer.feed(data + _request())
    assert isinstance(event, FramingError)
    assert event.status == 400 and "Content-Length" in event.reason
    assert event.head == data  # the whole header block, blank line included
    assert framer.failed and framer.buffered == 0
    assert framer.feed(_request()) == []  # nothing is framed after an error


def test_a_malformed_content_length_is_a_framing_error() -> None:
    data = _request(b"ab").replace(b"Content-Length: 2", b"Content-Length: two")
    (event,) = StreamFramer().feed(data)
    assert isinstance(event, FramingError) and "malformed Content-Length" in event.reason


def test_a_body_over_the_limit_is_refused_before_it_is_read() -> None:
    framer = StreamFramer(max_body_bytes=1000)
    head = _request(b"x" * 1001)[:-1001]
    (event,) = framer.feed(head)  # only the head has arrived
    assert isinstance(event, FramingError) and event.status == 413
    assert event.head == head and framer.buffered == 0


def test_a_body_at_the_limit_is_accepted() -> None:
    data = _request(b"x" * 1000)
    assert _messages(StreamFramer(max_body_bytes=1000).feed(data)) == [data]


def test_a_header_block_over_the_limit_is_a_framing_error() -> None:
    data = _request().replace(b"Max-Forwards: 70", b"Subject: " + b"s" * 2000)
    (event,) = StreamFramer(max_header_bytes=1024).feed(data)
    assert isinstance(event, FramingError) and "header block longer than 1024" in event.reason


def test_an_endless_header_is_cut_off_at_the_limit_with_the_buffer_bounded() -> None:
    """1 MB without a blank line: an error once the limit is passed, never 1 MB held."""
    framer = StreamFramer()
    chunk = b"X-Junk: " + b"j" * 4088 + b"\r\n"  # 4 KiB, never a blank line
    fed = 0
    peak = 0
    events: list[StreamEvent] = []
    while fed < 1024 * 1024 and not events:
        events = framer.feed(chunk)
        fed += len(chunk)
        peak = max(peak, framer.buffered)
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert fed <= DEFAULT_MAX_HEADER_BYTES + len(chunk)
    assert peak <= DEFAULT_MAX_HEADER_BYTES + len(chunk)
    assert framer.buffered == 0
    assert framer.feed(chunk * 64) == [] and framer.buffered == 0


def test_an_endless_header_in_one_read_is_dropped_at_once() -> None:
    framer = StreamFramer()
    (event,) = framer.feed(b"INVITE sip:x SIP/2.0\r\n" + b"a" * 1024 * 1024)
    assert isinstance(event, FramingError) and framer.buffered == 0


def test_a_double_crlf_between_messages_is_a_ping() -> None:
    data = _request()
    assert StreamFramer().feed(b"\r\n\r\n" + data + b"\r\n\r\n") == [
        Ping(),
        FramedMessage(data),
        Ping(),
    ]


def test_a_lone_crlf_is_a_pong_reported_at_once() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == [Pong()]
    assert framer.feed(_request()) == [FramedMessage(_request())]


def test_a_ping_split_in_two_reads_is_reported_as_a_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == [Pong()]
    assert framer.feed(b"\r\n") == [Ping()]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n\r\n") == [Ping()]


def test_leading_crlfs_before_a_message_are_skipped() -> None:
    """§7.5: CRLFs before a start line are ignored (reported as keep-alives, never a message)."""
    data = _request(b"z")
    events = StreamFramer().feed(b"\r\n\r\n\r\n" + data)
    assert _messages(events) == [data]
    assert all(isinstance(e, Ping | Pong | FramedMessage) for e in events)


def test_bare_lf_line_ends_are_framed_as_the_parser_accepts_them() -> None:
    data = _request(b"ok").replace(b"\r\n", b"\n")
    assert _messages(StreamFramer().feed(data)) == [data]


def test_folded_content_length_counts() -> None:
    data = _request(b"abcd").replace(b"Content-Length: 4", b"Content-Length:\r\n 4")
    assert _messages(StreamFramer().feed(data)) == [data]


def test_events_are_frozen_slotted_dataclasses() -> None:
    event = FramedMessage(b"x")
    with pytest.raises(AttributeError):
        event.data = b"y"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert not hasattr(FramingError("r"), "__dict__")


def test_limits_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="max_header_bytes"):
        StreamFramer(max_header_bytes=10)
