"""RFC 4733 telephone-events: payload codec, sender and receiver."""

from __future__ import annotations

import pytest

from sipd.errors import MediaValueError, RtpParseError
from sipd.media.dtmf import DtmfEvent, DtmfReceiver, DtmfSender
from sipd.media.rtp import RtpPacket, RtpSender


def test_event_payload_layout_matches_rfc_4733() -> None:
    """Digit 5, End bit, volume 10, duration 800 packs to 05 8a 03 20 (§2.3)."""
    event = DtmfEvent(5, end=True, volume=10, duration=800)
    assert bytes(event) == bytes.fromhex("058a0320")
    assert DtmfEvent.parse(bytes.fromhex("058a0320")) == event


def test_parse_ignores_the_reserved_bit() -> None:
    """The R bit is ignored by receivers (§2.3)."""
    assert DtmfEvent.parse(bytes.fromhex("0b4700a0")) == DtmfEvent(11, False, 7, 160)


def test_event_codes_map_to_digits() -> None:
    """Codes 0-9 are digits, 10 is *, 11 is #, 12-15 are A-D; 16 (flash) is no digit."""
    assert [DtmfEvent(i).digit for i in range(16)] == list("0123456789*#ABCD")
    assert DtmfEvent(16).digit is None
    assert DtmfEvent.from_digit("#").event == 11
    assert DtmfEvent.from_digit("d").event == 15


def test_invalid_events_are_refused() -> None:
    """Out-of-range fields, non-digits and short payloads raise sipd errors."""
    with pytest.raises(MediaValueError):
        DtmfEvent(3, volume=64)
    with pytest.raises(MediaValueError):
        DtmfEvent(3, duration=70000)
    with pytest.raises(MediaValueError, match="'x'"):
        DtmfEvent.from_digit("x")
    with pytest.raises(RtpParseError):
        DtmfEvent.parse(b"\x01\x02")


def _sender(**kwargs: int) -> tuple[RtpSender, DtmfSender]:
    rtp = RtpSender(0, ssrc=0xABCD, sequence=100, timestamp=8000)
    return rtp, DtmfSender(rtp, **kwargs)


def test_one_digit_is_a_growing_event_with_three_end_packets() -> None:
    """A 100 ms digit: 4 updates every 160 units, then the End packet three times."""
    rtp, sender = _sender()
    sender.send("7")
    ticks = sender.drain()
    packets = [p for tick in ticks for p in tick]
    events = [DtmfEvent.parse(p.payload) for p in packets]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {7}
    assert {p.timestamp for p in packets} == {8000}
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert [p.sequence for p in packets] == list(range(100, 107))
    assert {p.payload_type for p in packets} == {101}
    # five tone ticks (the last carries the three End copies), then a 60 ms gap
    assert [len(t) for t in ticks] == [1, 1, 1, 1, 3, 0, 0, 0]
    assert rtp.timestamp == 8000 + 8 * 160


def test_each_digit_starts_a_new_event_after_the_gap() -> None:
    """Event timestamps are spaced by tone + gap; durations and gap are configurable."""
    _, sender = _sender(duration_ms=40, gap_ms=40, payload_type=96)
    sender.send("12")
    packets = [p for tick in sender.drain() for p in tick]
    starts = sorted({p.timestamp for p in packets})
    assert starts == [8000, 8000 + 4 * 160]
    assert [p.marker for p in packets] == [True, False, False, False, True, False, False, False]
    assert {p.payload_type for p in packets} == {96}


def test_tick_leaves_free_slots_for_audio() -> None:
    """tick() returns None when idle and in the gap, so the caller sends audio there."""
    rtp, sender = _sender(duration_ms=20, gap_ms=20)
    assert sender.tick() is None
    sender.send("9")
    first = sender.tick()
    assert first is not None and len(first) == 3
    assert sender.tick() is None  # gap slot
    audio = rtp.packetize(b"\xff" * 160)
    assert audio.sequence == 103 and audio.timestamp == 8000 + 160  # the slot after the event
    assert not sender.busy


def test_bad_digit_string_is_refused_before_sending() -> None:
    """A string with a non-DTMF character queues nothing."""
    _, sender = _sender()
    with pytest.raises(MediaValueError):
        sender.send("12x")
    assert not sender.busy


def _receive_all(packets: list[RtpPacket]) -> str:
    receiver = DtmfReceiver()
    return "".join(d for p in packets if (d := receiver.receive(p)) is not None)


def test_round_trip_gives_each_digit_once() -> None:
    """Sender then receiver reproduces the digit string, one digit per event."""
    _, sender = _sender()
    sender.send("123#*ABCD0")
    packets = [p for tick in sender.drain() for p in tick]
    assert _receive_all(packets) == "123#*ABCD0"


def test_receiver_tolerates_lost_start_packets() -> None:
    """A digit is still reported when its marked first packets never arrive."""
    _, sender = _sender()
    sender.send("4567")
    ticks = sender.drain()
    survivors = [p for tick in ticks for p in tick if not p.marker]
    assert _receive_all(survivors) == "4567"


def test_receiver_ignores_repeated_and_late_packets_of_an_event() -> None:
    """Retransmitted End packets and stragglers of an earlier event do not repeat it."""
    _, sender = _sender()
    sender.send("89")
    packets = [p for tick in sender.drain() for p in tick]
    eight = [p for p in packets if DtmfEvent.parse(p.payload).event == 8]
    nine = [p for p in packets if DtmfEvent.parse(p.payload).event == 9]
    replayed = eight + nine + eight[-3:] + nine + [eight[0]]
    assert _receive_all(replayed) == "89"


def test_same_digit_twice_is_two_events() -> None:
    """Two presses of one key differ by timestamp, so both are reported."""
    _, sender = _sender()
    sender.send("55")
    packets = [p for tick in sender.drain() for p in tick]
    assert _receive_all(packets) == "55"
