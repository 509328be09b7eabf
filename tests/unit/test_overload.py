"""Overload control (RFC 3261 §21.5.4, in the spirit of RFC 7339), on ``task.Clock``.

:class:`OverloadControl` is fed time by a clock: a lagging event loop is a
clock that jumps ahead before the probe timer could run (``clock.rightNow``
moved by hand) or runs it late (``clock.advance`` past its due time). The end
to end tests run a real UA on a fake socket (``Stack``) and show that a new
INVITE is refused with 503 + Retry-After while the requests of a call already
admitted (ACK, BYE) are still served.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from sipd.config import SipdConfig
from sipd.errors import ConfigError
from sipd.metrics import Metrics
from sipd.session import overload as overload_module
from sipd.session.overload import LAG_WEIGHT, PROBE_INTERVAL, OverloadControl, TokenBucket
from sipd.sip.message import Request, Response, parse_message
from tests.unit.test_transport_udp import Stack, sip_request

# A control with only the check under test switched on.
OFF = {
    "max_lag": 0.0,
    "lag_sustain": 0.0,  # the lag tests below that want a sustain window set it
    "max_backlog": 0,
    "max_pending": 0,
    "max_invite_rate": 0.0,
    "source_rate": 0.0,
}


def control(clock: Clock, **settings: float) -> OverloadControl:
    return OverloadControl(clock, **{**OFF, **settings})  # type: ignore[arg-type]


# -- the token bucket -----------------------------------------------------------------------------
def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert bucket.refill(0.0) == 3.0 and bucket.full
    bucket.tokens = 0.0
    assert bucket.refill(0.15) == pytest.approx(1.5)
    assert bucket.refill(100.0) == 3.0  # never more than the burst


# -- lag (RFC 3261 §21.5.4: refuse while the service falls behind) --------------------------------
def test_lag_probe_starts_with_the_first_check_and_stops_for_good() -> None:
    clock = Clock()
    oc = control(clock, max_lag=0.1)
    assert clock.getDelayedCalls() == []
    assert oc.check("192.0.2.1") is None
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1.0)
    assert len(clock.getDelayedCalls()) == 1  # one probe at a time, rescheduled
    oc.stop()
    assert clock.getDelayedCalls() == []
    oc.check("192.0.2.1")
    assert clock.getDelayedCalls() == []  # a stopped control never restarts its probe


def test_one_stall_is_not_an_overload() -> None:
    """A single late probe (a collection, a slow disk) moves the average only a quarter."""
    clock = Clock()
    oc = control(clock, max_lag=0.1)
    oc.check("192.0.2.1")
    clock.advance(PROBE_INTERVAL + 0.3)  # the probe ran 0.3 s late, once
    assert oc.lag == pytest.approx(0.3)
    assert oc.lag_average == pytest.approx(0.3 * LAG_WEIGHT)
    assert oc.check("192.0.2.1") is None


def test_a_loop_that_stays_behind_refuses_until_it_keeps_up_again() -> None:
    """§21.5.4: while the loop keeps running late new INVITEs get 503; then admitted again."""
    clock = Clock()
    oc = control(clock, max_lag=0.1)
    oc.check("192.0.2.1")
    clock.advance(PROBE_INTERVAL + 0.3)
    clock.advance(PROBE_INTERVAL + 0.3)  # late twice: the average is 0.13 s
    assert oc.lag_average == pytest.approx(0.3 * (1 - (1 - LAG_WEIGHT) ** 2))
    assert oc.check("192.0.2.1") == "lag"
    assert oc.refusing == "lag"
    clock.advance(PROBE_INTERVAL)  # on time: the average falls below the bound
    assert oc.lag == pytest.approx(0.0)
    assert oc.lag_average < 0.1
    assert oc.check("192.0.2.1") is None
    assert oc.refusing is None


def test_a_probe_overdue_now_counts_before_it_has_run() -> None:
    """A loop stuck in a long batch has not reached its timers: the overdue probe
    counts as a sample, so the batch itself is refused once the average would pass."""
    clock = Clock()
    oc = control(clock, max_lag=0.1)
    oc.check("192.0.2.1")
    clock.advance(PROBE_INTERVAL + 0.12)  # one late probe: average 0.03
    clock.rightNow += PROBE_INTERVAL + 0.2  # busy: 0.2 s past the next probe's due time
    assert oc.current_lag() == pytest.approx(0.03 + LAG_WEIGHT * (0.2 - 0.03))
    assert oc.check("192.0.2.1") is None  # 0.0725: not yet
    clock.rightNow += 0.2  # 0.4 s past it
    assert oc.current_lag() == pytest.approx(0.03 + LAG_WEIGHT * (0.4 - 0.03))
    assert oc.check("192.0.2.1") == "lag"


def test_lag_must_last_lag_sustain_seconds_before_calls_are_refused() -> None:
    """A stall of 0.9 s (a collection on a busy machine) pushes the average over the
    bound, but the INVITEs that queued behind it are admitted: only a loop that stays
    behind for ``lag_sustain`` seconds is overloaded."""
    clock = Clock()
    oc = control(clock, max_lag=0.2, lag_sustain=1.0)
    oc.check("192.0.2.1")
    clock.rightNow += PROBE_INTERVAL + 0.9  # stalled: the probe is 0.9 s overdue
    assert oc.current_lag() == pytest.approx(0.225)
    assert oc.behind_for() == pytest.approx(0.7)
    assert oc.check("192.0.2.1") is None
    clock.advance(0)  # the probe runs: the average is over the bound, briefly
    for _ in range(3):  # then the loop catches up: probes on time
        clock.advance(PROBE_INTERVAL)
    assert oc.check("192.0.2.1") is None
    assert oc.refused == 0


def test_a_loop_behind_for_lag_sustain_seconds_is_refused() -> None:
    clock = Clock()
    oc = control(clock, max_lag=0.1, lag_sustain=1.0)
    oc.check("192.0.2.1")
    for _ in range(4):
        clock.advance(PROBE_INTERVAL + 0.3)  # every probe 0.3 s late
    assert oc.lag_average > 0.1
    assert 0 < oc.behind_for() < 1.0
    assert oc.check("192.0.2.1") is None  # behind, but not for long enough yet
    for _ in range(3):
        clock.advance(PROBE_INTERVAL + 0.3)
    assert oc.behind_for() >= 1.0
    assert oc.check("192.0.2.1") == "lag"
    for _ in range(10):  # caught up: the average falls below the bound, the clock resets
        clock.advance(PROBE_INTERVAL)
    assert oc.behind_for() == 0.0
    assert oc.check("192.0.2.1") is None


def test_a_loop_stuck_longer_than_lag_sustain_in_one_batch_is_refused() -> None:
    """No probe runs while one long batch is processed: the overdue probe says how long."""
    clock = Clock()
    oc = control(clock, max_lag=0.1, lag_sustain=1.0)
    oc.check("192.0.2.1")
    clock.rightNow += PROBE_INTERVAL + 1.5
    assert oc.behind_for() == pytest.approx(1.4)
    assert oc.check("192.0.2.1") == "lag"


def test_lag_below_the_bound_admits() -> None:
    clock = Clock()
    oc = control(clock, max_lag=0.1)
    oc.check("192.0.2.1")
    for _ in range(20):
        clock.advance(PROBE_INTERVAL + 0.09)  # always 90 ms late
    assert oc.lag_average == pytest.approx(0.09, abs=0.001)
    assert oc.check("192.0.2.1") is None


# -- datagrams waiting unread ---------------------------------------------------------------------
def test_a_growing_receive_queue_refuses_new_invites() -> None:
    """More than overload_max_backlog bytes unread: what arrives now would be answered late."""
    queued = [0]
    oc = control(Clock(), max_backlog=10_000)
    oc.backlog = lambda: queued[0]
    assert oc.check("192.0.2.1") is None
    queued[0] = 10_001
    assert oc.check("192.0.2.1") == "backlog"
    queued[0] = 500
    assert oc.check("192.0.2.1") is None


def test_without_a_reader_the_backlog_check_is_off() -> None:
    oc = control(Clock(), max_backlog=1)
    assert oc.backlog is None
    assert oc.check("192.0.2.1") is None


def test_the_backlog_reader_counts_what_waits_in_a_real_socket() -> None:
    """SO_MEMINFO (Linux): ten unread 500-byte datagrams are several kB of queue."""
    import socket

    from sipd.transport.backlog import receive_backlog

    class Listening:
        def __init__(self, sock: socket.socket) -> None:
            self.socket = sock

    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.1", 0))
        read = receive_backlog(Listening(receiver))
        assert read is not None and read() == 0
        for _ in range(10):
            sender.sendto(b"x" * 500, receiver.getsockname())
        assert read() >= 5000
        assert receive_backlog(object()) is None  # no socket: no reader


# -- pending transactions and the new-INVITE rate -------------------------------------------------
def test_too_many_unanswered_invites_refuse_new_ones() -> None:
    oc = control(Clock(), max_pending=100)
    assert oc.check("192.0.2.1", pending=99) is None
    assert oc.check("192.0.2.1", pending=100) == "pending"


def test_global_invite_rate_is_a_token_bucket() -> None:
    """overload_max_invite_rate=20: a burst of 2 (0.1 s worth), then 20 a second."""
    clock = Clock()
    oc = control(clock, max_invite_rate=20.0)
    results = [oc.check(f"192.0.2.{n}") for n in range(4)]
    assert results == [None, None, "rate", "rate"]
    clock.advance(0.05)
    assert oc.check("192.0.2.9") is None
    assert oc.check("192.0.2.9") == "rate"


# -- per-source limits ----------------------------------------------------------------------------
def test_one_flooding_source_is_refused_while_others_are_admitted() -> None:
    clock = Clock()
    oc = control(clock, source_rate=10.0, source_burst=3)
    flood = [oc.check("203.0.113.66") for _ in range(10)]
    assert flood == [None, None, None] + ["source"] * 7
    assert oc.check("192.0.2.1") is None  # another caller is not starved
    assert oc.refusing is None  # one noisy source is not an overload
    clock.advance(0.1)  # one token back for the flooder
    assert oc.check("203.0.113.66") is None
    assert oc.check("203.0.113.66") == "source"


def test_a_refused_invite_takes_no_token() -> None:
    """Refused for another reason, an INVITE leaves its source's bucket as it was."""
    clock = Clock()
    oc = control(clock, source_rate=1.0, source_burst=1, max_pending=5)
    assert oc.check("192.0.2.1", pending=5) == "pending"
    assert oc.check("192.0.2.1", pending=0) is None
    assert oc.check("192.0.2.1", pending=0) == "source"


def test_source_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spoofed sources cannot grow memory: idle buckets go first, then the oldest."""
    monkeypatch.setattr(overload_module, "MAX_SOURCES", 50)
    clock = Clock()
    oc = control(clock, source_rate=1.0, source_burst=2)
    for n in range(500):
        oc.check(f"10.0.{n // 250}.{n % 250}")
        assert len(oc._sources) <= 50
    clock.advance(10)  # every bucket full again
    oc.check("10.9.9.9")
    assert len(oc._sources) == 1


# -- switches, headers, metrics, config -----------------------------------------------------------
def test_disabled_control_admits_everything_and_starts_no_timer() -> None:
    clock = Clock()
    oc = OverloadControl(clock, enabled=False, max_pending=1, source_rate=1.0, source_burst=1)
    assert all(oc.check("192.0.2.1", pending=10) is None for _ in range(20))
    assert clock.getDelayedCalls() == []


def test_retry_after_header_and_none_for_zero() -> None:
    assert control(Clock()).retry_after_headers == [("Retry-After", "5")]
    oc = OverloadControl(Clock(), retry_after=0)
    assert oc.retry_after_headers == []


def test_refusals_are_counted_by_reason_and_lag_is_a_gauge() -> None:
    clock = Clock()
    metrics = Metrics()
    oc = OverloadControl(
        clock,
        max_lag=0.1,
        lag_sustain=0.0,
        max_pending=1,
        source_rate=1.0,
        source_burst=1,
        metrics=metrics,
    )
    oc.check("192.0.2.1")
    oc.check("192.0.2.1")  # source
    oc.check("192.0.2.2", pending=1)  # pending
    clock.advance(0.45)
    clock.advance(0.45)  # late twice by 0.4 s: average 0.175
    oc.check("192.0.2.3")  # lag
    for reason in ("source", "pending", "lag"):
        assert metrics.get("sipd_overload_rejected_total", reason=reason) == 1
    text = metrics.render()
    assert 'sipd_overload_rejected_total{reason="lag"} 1' in text
    assert "sipd_reactor_lag_seconds 0.175" in text


def test_from_config_takes_the_overload_settings() -> None:
    config = SipdConfig(
        overload_control=True,
        overload_max_lag=0.25,
        overload_max_backlog=4096,
        overload_max_pending=7,
        overload_max_invite_rate=30.0,
        overload_source_rate=4.0,
        overload_source_burst=9,
        overload_retry_after=12,
    )
    oc = OverloadControl.from_config(config, Clock())
    assert (oc.max_lag, oc.max_pending, oc.source_rate, oc.source_burst) == (0.25, 7, 4.0, 9)
    assert oc.max_backlog == 4096
    assert oc.retry_after_headers == [("Retry-After", "12")]
    assert oc._global is not None and oc._global.rate == 30.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("overload_max_lag", -1),
        ("overload_max_invite_rate", "many"),
        ("overload_source_rate", -0.5),
        ("overload_max_pending", 1.5),
        ("overload_max_backlog", -1),
        ("overload_source_burst", -1),
        ("overload_retry_after", True),
    ],
)
def test_bad_overload_settings_are_config_errors_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        SipdConfig(**{key: value})  # type: ignore[arg-type]


# -- end to end on a fake socket ------------------------------------------------------------------
def _invite(call_id: str, branch: str) -> bytes:
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return sip_request(
        "INVITE",
        call_id=call_id,
        via=f"SIP/2.0/UDP 127.0.0.1:40000;branch={branch};rport",
        extra=("Content-Type: application/sdp",),
        body=sdp,
    )


def _final(stack: Stack, sent: list[tuple[bytes, tuple[str, int]]]) -> list[Response]:
    return [r for r, _ in stack.responses(sent) if r.status >= 200]


def test_under_lag_a_new_invite_gets_503_but_the_admitted_call_completes() -> None:
    """The call admitted before the loop fell behind gets its ACK and BYE served;
    a new INVITE meanwhile gets 503 with Retry-After and leaves nothing behind."""
    stack = Stack(overload_lag_sustain=0)  # refuse at the first sign of lag
    try:
        sent = stack.receive(_invite("admitted@test", "z9hG4bKadm1"))
        stack.reactor.advance(0)  # the default handler answers on the next turn
        sent += stack.wire.sent[len(sent) :]
        [ok] = [r for r, _ in stack.responses(stack.wire.sent) if r.status == 200]
        to_tag = ok.to.tag
        assert to_tag
        stack.receive(
            sip_request(
                "ACK",
                call_id="admitted@test",
                cseq="1 ACK",
                to=f"Bob <sip:bob@127.0.0.1>;tag={to_tag}",
                via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKack1;rport",
            )
        )
        [session] = stack.coordinator.sessions()
        assert session.state == "Active"

        layer = stack.coordinator.layer
        assert layer is not None
        transactions = len(layer)
        stack.reactor.rightNow += 1.0  # the event loop falls behind
        refused = _final(stack, stack.receive(_invite("new@test", "z9hG4bKnew1")))
        assert [(r.status, r.headers.get("Retry-After")) for r in refused] == [(503, "5")]
        assert refused[0].top_via.received == "127.0.0.1"  # stamped as any response
        assert len(stack.coordinator.sessions()) == 1  # no session for the refused INVITE
        assert len(layer) == transactions  # answered statelessly (RFC 3261 §8.2.7)
        assert stack.metrics.get("sipd_overload_rejected_total", reason="lag") == 1
        # A retransmission gets the same To tag; the ACK for the 503 is absorbed.
        again = _final(stack, stack.receive(_invite("new@test", "z9hG4bKnew1")))
        assert again[0].to.tag == refused[0].to.tag
        ack = sip_request(
            "ACK",
            call_id="new@test",
            cseq="1 ACK",
            to=f"Bob <sip:bob@127.0.0.1>;tag={refused[0].to.tag}",
            via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKnew1;rport",
        )
        assert stack.receive(ack) == []
        assert stack.metrics.get("sipd_sip_requests_received_total", method="ACK") == 2

        bye = sip_request(
            "BYE",
            call_id="admitted@test",
            cseq="2 BYE",
            to=f"Bob <sip:bob@127.0.0.1>;tag={to_tag}",
            via="SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKbye1;rport",
        )
        assert [r.status for r in _final(stack, stack.receive(bye))] == [200]
        assert stack.coordinator.sessions() == []
    finally:
        stack.close()


def test_a_source_over_its_rate_gets_503_and_another_source_is_answered() -> None:
    stack = Stack(handler=None, overload_source_rate=1.0, overload_source_burst=2)
    try:
        statuses = []
        for n in range(5):
            sent = stack.receive(_invite(f"flood{n}@test", f"z9hG4bKfl{n}"), ("203.0.113.9", 5060))
            statuses += [r.status for r in _final(stack, sent)]
        assert statuses == [503, 503, 503]  # the first two were admitted (no final yet)
        sent = stack.receive(_invite("real@test", "z9hG4bKreal"), ("192.0.2.20", 5060))
        assert _final(stack, sent) == []
        stack.reactor.advance(0)
        answered = [
            r for r, addr in stack.responses(stack.wire.sent)
            if r.status == 200 and r.call_id == "real@test"
        ]  # fmt: skip
        assert len(answered) == 1
        assert stack.metrics.get("sipd_overload_rejected_total", reason="source") == 3
    finally:
        for session in stack.coordinator.sessions():
            session.hangup()
        stack.close()


def test_an_invite_the_screen_admitted_is_not_decided_twice() -> None:
    """The dialog adapter's check lets the INVITE the screen admitted through,
    without taking a second token from its source."""
    clock = Clock()
    oc = control(clock, source_rate=1.0, source_burst=1)
    invite = parse_message(_invite("once@test", "z9hG4bKonce"))
    assert isinstance(invite, Request)
    assert oc.screen(invite, ("192.0.2.1", 5060)) is False  # admitted: carry on
    assert oc.check("192.0.2.1", 0, invite) is None
    assert oc.check("192.0.2.1", 0) == "source"  # the one token was taken once


def test_without_a_screen_the_dialog_adapter_refuses_with_503() -> None:
    """An INVITE that reaches the dialog adapter another way is checked there."""
    stack = Stack(overload_source_rate=1.0, overload_source_burst=1)
    try:
        stack.protocol.screen = None
        stack.receive(_invite("first@test", "z9hG4bKst1"))
        refused = _final(stack, stack.receive(_invite("second@test", "z9hG4bKst2")))
        assert [(r.status, r.headers.get("Retry-After")) for r in refused] == [(503, "5")]
        assert stack.metrics.get("sipd_overload_rejected_total", reason="source") == 1
    finally:
        for session in stack.coordinator.sessions():
            session.hangup()
        stack.close()


def test_a_refused_invite_with_a_broken_header_gets_400_not_503() -> None:
    """The screen echoes nothing that would not be valid SIP: a bad From is a 400."""
    stack = Stack(overload_source_rate=1.0, overload_source_burst=1)
    try:
        stack.receive(_invite("first@test", "z9hG4bKst1"))  # takes the one token
        bad = _invite("bad@test", "z9hG4bKbad").replace(
            b"From: Alice <sip:alice@127.0.0.1>;tag=a1b2c3", b"From: Alice <sip:alice@127.0.0.1"
        )
        assert [r.status for r in _final(stack, stack.receive(bad))] == [400]
        assert stack.metrics.get("sipd_overload_rejected_total", reason="source") == 0
    finally:
        for session in stack.coordinator.sessions():
            session.hangup()
        stack.close()


def test_the_daemon_config_maps_its_overload_section() -> None:
    from sipd.daemon.config import parse_config

    cfg = parse_config(
        "overload:\n  enabled: false\n  max_lag: 0.25\n  lag_sustain: 0.5\n  max_backlog: 0\n"
        "  max_pending: 10\n"
        "  max_invite_rate: 300\n  source_rate: 0\n  source_burst: 7\n  retry_after: 30\n"
    )
    sip = cfg.sip
    assert sip.overload_lag_sustain == 0.5
    assert (sip.overload_control, sip.overload_max_lag, sip.overload_max_pending) == (
        False,
        0.25,
        10,
    )
    assert (sip.overload_max_invite_rate, sip.overload_source_rate) == (300, 0)
    assert sip.overload_max_backlog == 0
    assert (sip.overload_source_burst, sip.overload_retry_after) == (7, 30)
    with pytest.raises(ConfigError, match=r"<string>:3: overload\.max_lag: .*at least 0"):
        parse_config("overload:\n  enabled: true\n  max_lag: -1\n")
    with pytest.raises(ConfigError, match=r"<string>:2: overload\.max_pending: .*integer"):
        parse_config("overload:\n  max_pending: 2.5\n")


def test_a_refused_invite_retransmitted_later_gets_the_same_503() -> None:
    """A stateless UAS answers every copy of a request alike (RFC 3261 §8.2.7): an
    INVITE refused while the loop lagged is refused again when retransmitted after
    the loop caught up, for 64*T1; admitting the copy would answer a caller that
    already took the 503 as final."""
    stack = Stack(overload_lag_sustain=0)
    try:
        stack.reactor.advance(0)
        oc = stack.coordinator.dialogs.overload
        oc.check("192.0.2.1")  # start the probe
        stack.reactor.rightNow += 1.0  # behind
        [first] = _final(stack, stack.receive(_invite("late@test", "z9hG4bKlate")))
        assert first.status == 503
        for _ in range(40):
            stack.reactor.advance(PROBE_INTERVAL)  # the loop keeps up again
        assert oc.current_lag() < 0.01
        again = stack.receive(_invite("late@test", "z9hG4bKlate"))
        assert [(r.status, r.to.tag) for r, _ in stack.responses(again)] == [(503, first.to.tag)]
        assert stack.metrics.get("sipd_overload_rejected_total", reason="lag") == 1
        for _ in range(int(64 * 0.5 / PROBE_INTERVAL)):
            stack.reactor.advance(PROBE_INTERVAL)  # 64*T1 on: the caller gave up on it
        later = stack.receive(_invite("late@test", "z9hG4bKlate"))
        assert [r.status for r, _ in stack.responses(later)] == [180]
    finally:
        for session in stack.coordinator.sessions():
            session.hangup()
        stack.close()


def test_refused_invites_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overload_module, "MAX_REMEMBERED", 10)
    clock = Clock()
    sent: list[bytes] = []
    oc = OverloadControl(clock, **{**OFF, "max_pending": 1}, send=lambda d, a: sent.append(d))  # type: ignore[arg-type]
    oc.pending = lambda: 1  # every INVITE is refused
    for n in range(50):
        invite = parse_message(_invite(f"many{n}@test", f"z9hG4bKm{n}"))
        assert oc.screen(invite, ("192.0.2.1", 5060)) is True
        assert len(oc._refused) <= 10
    assert len(sent) == 50
    clock.advance(oc.remember + 1)
    oc.screen(parse_message(_invite("last@test", "z9hG4bKlast")), ("192.0.2.1", 5060))
    assert list(oc._refused) == ["last@test\na1b2c3\n1"]  # the expired ones are gone


def test_a_retransmitted_invite_admitted_before_the_lag_is_not_refused() -> None:
    """An INVITE admitted (its server transaction exists) and retransmitted once the loop
    lags is answered by its transaction (RFC 3261 §17.2.1), never refused with 503: a
    503 would end a call the caller is about to be answered for."""
    stack = Stack()
    try:
        stack.receive(_invite("early@test", "z9hG4bKearly1"))
        stack.reactor.rightNow += 1.0  # the event loop falls behind before the answer
        again = stack.receive(_invite("early@test", "z9hG4bKearly1"))
        assert [r.status for r, _ in stack.responses(again) if r.status >= 300] == []
        assert stack.metrics.get("sipd_overload_rejected_total", reason="lag") == 0
        stack.reactor.advance(0)
        assert any(r.status == 200 for r, _ in stack.responses(stack.wire.sent))
        for _ in range(100):  # no ACK and no answer to our BYE: the timers end it all
            stack.reactor.advance(1)
        assert stack.coordinator.sessions() == []
    finally:
        stack.close()


def test_a_retransmission_of_an_admitted_invite_is_never_refused() -> None:
    """The loop falls behind after an INVITE was admitted: its retransmission still
    belongs to its transaction (which repeats its last response), not to a 503."""
    stack = Stack(overload_lag_sustain=0)
    try:
        first = stack.responses(stack.receive(_invite("kept@test", "z9hG4bKkept")))
        assert [r.status for r, _ in first] == [180]
        stack.reactor.rightNow += 1.0  # behind: a new INVITE now would get 503
        again = stack.responses(stack.receive(_invite("kept@test", "z9hG4bKkept")))
        assert [(r.status, r.to.tag) for r, _ in again] == [(180, first[0][0].to.tag)]
        refused = _final(stack, stack.receive(_invite("other@test", "z9hG4bKother")))
        assert [r.status for r in refused] == [503]
    finally:
        stack.reactor.advance(0)
        for session in stack.coordinator.sessions():
            session.hangup()
        stack.close()
