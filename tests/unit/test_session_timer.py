"""RFC 4028 session timers as pure functions of headers (sipd/session/session_timer.py).

Each test names the section of RFC 4028 it checks. Requests and responses are
parsed from their wire form, as they would arrive. ``refresher=uac``/``uas``
names a side of the transaction the header is in, so the same session reads
differently in a request we send and in one we answer; ``SessionTimer``
keeps it as ``we_refresh``.
"""

from __future__ import annotations

import pytest

from sipd.session.session_timer import (
    MIN_SE_FLOOR,
    SessionTimer,
    answer_headers,
    expiry_margin,
    from_response,
    interval_too_small,
    offer_headers,
    parse_session_expires,
    refresh_headers,
    supports_timer,
    uas_timer,
)
from sipd.sip.message import Request, Response
from tests.unit.session_fakes import sip_request, sip_response


def invite(*lines: str) -> Request:
    """An INVITE from the peer with these header lines."""
    return sip_request("INVITE", extra="\r\n".join(lines))


def ok(*lines: str) -> Response:
    """A 200 from the peer to our request, with these header lines."""
    return sip_response(200, "OK", extra="\r\n".join(lines))


# -- §4: the Session-Expires header ---------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("1800", (1800, None)),
        ("1800;refresher=uac", (1800, "uac")),
        ("90;refresher=uas", (90, "uas")),
        (" 300 ; Refresher = UAS ", (300, "uas")),
        ("300;foo=bar;refresher=uac", (300, "uac")),
        ("300;refresher=proxy", (300, None)),
        ("300;refresher", (300, None)),
        ("0", (0, None)),
        ("999999999", (999999999, None)),
    ],
)
def test_parse_session_expires_reads_delta_seconds_and_refresher(
    value: str, parsed: tuple[int, str | None]
) -> None:
    """RFC 4028 §4: ``Session-Expires = delta-seconds *(SEMI se-params)``, where the
    ``refresher`` parameter is ``uac`` or ``uas`` (case-insensitive) and any other parameter
    is ignored; a refresher of another value reads as none."""
    assert parse_session_expires(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "abc",
        "-90",
        "+90",
        "1.5",
        "1e3",
        "1234567890",
        ";refresher=uac",
        "²",
        "١٢٣",
    ],
)
def test_parse_session_expires_refuses_what_is_not_delta_seconds(value: str | None) -> None:
    """RFC 4028 §4: delta-seconds is 1*DIGIT (ASCII digits; ``²`` and Arabic-Indic digits are
    not, and must not raise); a missing, signed, fractional or absurdly long value (more than
    nine digits) reads as no header at all."""
    assert parse_session_expires(value) is None


def test_the_compact_form_x_is_session_expires() -> None:
    """RFC 4028 §4: ``x`` is the compact form of Session-Expires (and ``k`` of Supported)."""
    request = invite("x: 300;refresher=uac", "k: timer")
    assert supports_timer(request)
    assert uas_timer(request, 1800, 90) == SessionTimer(300, we_refresh=False)


# -- §5: Min-SE ----------------------------------------------------------------------------
def test_min_se_floor_is_90_seconds() -> None:
    """RFC 4028 §5: Min-SE is never below 90 seconds on the wire."""
    assert MIN_SE_FLOOR == 90


# -- §7.1: what our INVITE asks for ---------------------------------------------------------
def test_offer_headers_ask_for_an_interval_and_leave_the_refresher_to_the_answerer() -> None:
    """RFC 4028 §7.1: the INVITE carries Session-Expires (without a refresher: the UAS picks)
    and our Min-SE."""
    assert offer_headers(1800, 90) == [("Session-Expires", "1800"), ("Min-SE", "90")]


# -- §7.4 and §9: which side the refresher parameter names -----------------------------------
@pytest.mark.parametrize(
    ("we_refresh", "we_send_request", "refresher"),
    [(True, True, "uac"), (True, False, "uas"), (False, True, "uas"), (False, False, "uac")],
)
def test_session_timer_header_names_the_refresher_relative_to_the_transaction(
    we_refresh: bool, we_send_request: bool, refresher: str
) -> None:
    """RFC 4028 §7.4 and §9: ``refresher`` names the UAC or UAS of the transaction the header
    is in, so whether it reads ``uac`` depends on who sent the request as well as on who
    refreshes."""
    timer = SessionTimer(300, we_refresh=we_refresh)
    assert timer.header(we_send_request=we_send_request) == f"300;refresher={refresher}"


def test_refresh_headers_name_us_the_refresher() -> None:
    """RFC 4028 §7.4: our refresh repeats the interval with ``refresher=uac`` (we are its
    UAC, and the refresher) and our Min-SE."""
    headers = refresh_headers(SessionTimer(120, we_refresh=True), 90)
    assert headers == [("Session-Expires", "120;refresher=uac"), ("Min-SE", "90")]


@pytest.mark.parametrize(
    ("timer", "lines", "headers"),
    [
        # The caller refreshes and supports timers: Require: timer (it must act on the 2xx).
        (
            SessionTimer(300, we_refresh=False),
            ("Supported: timer",),
            [("Session-Expires", "300;refresher=uac"), ("Require", "timer")],
        ),
        # We refresh for a caller that supports timers: Require: timer all the same.
        (
            SessionTimer(300, we_refresh=True),
            ("Supported: replaces, timer",),
            [("Session-Expires", "300;refresher=uas"), ("Require", "timer")],
        ),
        # A caller without timer support: no Require (it could not comply), we refresh.
        (SessionTimer(1800, we_refresh=True), (), [("Session-Expires", "1800;refresher=uas")]),
    ],
)
def test_answer_headers_say_the_interval_and_who_refreshes(
    timer: SessionTimer, lines: tuple[str, ...], headers: list[tuple[str, str]]
) -> None:
    """RFC 4028 §9: the 2xx carries Session-Expires with the refresher (worded from the
    answered transaction: ``uas`` is us), and ``Require: timer`` only when the request's
    sender supports timers."""
    assert answer_headers(timer, invite(*lines)) == headers


def test_answer_headers_without_a_timer_are_none() -> None:
    """RFC 4028 §9: no session timer, no Session-Expires in the 2xx."""
    assert answer_headers(None, invite("Supported: timer")) == []


# -- §9: the timer we grant as UAS ------------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "timer"),
    [
        # The refresher the request names is kept.
        (("Session-Expires: 300;refresher=uac", "Supported: timer"), SessionTimer(300, False)),
        (("Session-Expires: 300;refresher=uas", "Supported: timer"), SessionTimer(300, True)),
        (("Session-Expires: 300;refresher=uas",), SessionTimer(300, True)),
        # None named: the caller refreshes if it supports timers (Supported or Require) ...
        (("Session-Expires: 300", "Supported: timer"), SessionTimer(300, False)),
        (("Session-Expires: 300", "Require: timer"), SessionTimer(300, False)),
        (
            ("Session-Expires: 300", "Supported: 100rel", "Supported: TIMER"),
            SessionTimer(300, False),
        ),
        # ... and we do otherwise.
        (("Session-Expires: 300",), SessionTimer(300, True)),
        (("Session-Expires: 300", "Supported: timers"), SessionTimer(300, True)),
        # A caller without timer support cannot refresh, whatever a proxy wrote.
        (("Session-Expires: 300;refresher=uac",), SessionTimer(300, True)),
    ],
)
def test_uas_timer_keeps_defaults_or_forces_the_refresher(
    lines: tuple[str, ...], timer: SessionTimer
) -> None:
    """RFC 4028 §9: the UAS keeps a refresher the request names; without one it picks the
    UAC when the UAC supports timers and itself otherwise, and a UAC that does not support
    timers (no ``timer`` in Supported or Require) is never made the refresher."""
    assert uas_timer(invite(*lines), 1800, 90) == timer


def test_uas_timer_takes_a_shorter_requested_interval_and_lowers_a_longer_one() -> None:
    """RFC 4028 §9: a shorter interval than ours is granted as asked; the UAS may lower a
    longer one (to ours: a peer cannot keep a vanished call up for a day), never below a
    Min-SE; with no interval of our own (0) the request's stands."""
    assert uas_timer(invite("Session-Expires: 300"), 1800, 90) == SessionTimer(300, True)
    assert uas_timer(invite("Session-Expires: 3600"), 1800, 90) == SessionTimer(1800, True)
    assert uas_timer(invite("Session-Expires: 3600"), 0, 90) == SessionTimer(3600, True)
    lowered = uas_timer(invite("Session-Expires: 3600", "Min-SE: 2400"), 1800, 90)
    assert lowered == SessionTimer(2400, True)


@pytest.mark.parametrize(
    ("lines", "min_se", "interval"),
    [
        (("Session-Expires: 100",), 200, 200),  # raised to our Min-SE
        (("Session-Expires: 120", "Min-SE: 150"), 90, 150),  # and to the request's Min-SE
        (("Session-Expires: 120", "Min-SE: 150;x=y"), 90, 150),  # Min-SE parameters ignored
        (("Session-Expires: 120", "Min-SE: lots"), 90, 120),  # an unreadable Min-SE is none
        (("Session-Expires: 120", "Min-SE: ²"), 90, 120),  # so is a non-ASCII digit
    ],
)
def test_uas_timer_never_grants_less_than_min_se(
    lines: tuple[str, ...], min_se: int, interval: int
) -> None:
    """RFC 4028 §9: the interval granted is never below our Min-SE nor the Min-SE of the
    request (a request this short is normally refused with 422 first: see
    interval_too_small)."""
    assert uas_timer(invite(*lines), 1800, min_se).interval == interval


@pytest.mark.parametrize(
    ("lines", "interval", "min_se", "timer"),
    [
        # A caller that supports timers and asks for none gets none.
        (("Supported: timer",), 1800, 90, None),
        (("Require: timer",), 1800, 90, None),
        # A caller that does not support them gets our interval, refreshed by us ...
        ((), 1800, 90, SessionTimer(1800, True)),
        ((), 60, 90, SessionTimer(90, True)),  # (never below our Min-SE)
        # ... unless we have no interval of our own.
        ((), 0, 90, None),
    ],
)
def test_uas_timer_without_session_expires(
    lines: tuple[str, ...], interval: int, min_se: int, timer: SessionTimer | None
) -> None:
    """RFC 4028 §9: a request without Session-Expires from a UAC that supports timers asks
    for no timer; from one that does not, the UAS may still time the session with its own
    interval, as the refresher (the UAC just answers the refreshes)."""
    assert uas_timer(invite(*lines), interval, min_se) == timer


def test_uas_timer_ignores_an_unreadable_session_expires() -> None:
    """RFC 4028 §4: an unreadable Session-Expires counts as none (here: our own interval)."""
    assert uas_timer(invite("Session-Expires: soon"), 1800, 90) == SessionTimer(1800, True)


# -- §6 and §9: 422 Session Interval Too Small ------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "too_small"),
    [
        (("Session-Expires: 60",), True),
        (("Session-Expires: 89;refresher=uac", "Supported: timer"), True),
        (("Session-Expires: 90",), False),  # exactly Min-SE is fine
        (("Session-Expires: 1800",), False),
        ((), False),  # no header: nothing to refuse
        (("Session-Expires: soon",), False),  # unreadable: as no header
    ],
)
def test_interval_too_small(lines: tuple[str, ...], too_small: bool) -> None:
    """RFC 4028 §9 (and §6, the 422 response): a request asking for an interval below the
    UAS's Min-SE is refused with 422; one at Min-SE or without Session-Expires is not."""
    assert interval_too_small(invite(*lines), 90) is too_small


# -- §7.2: the 2xx to our INVITE or refresh ----------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "timer"),
    [
        (("Session-Expires: 1800;refresher=uac", "Require: timer"), SessionTimer(1800, True)),
        (("Session-Expires: 1800;refresher=uas",), SessionTimer(1800, False)),
        (("Session-Expires: 1800",), SessionTimer(1800, True)),  # no refresher: the UAC, us
        (("x: 90;refresher=uas",), SessionTimer(90, False)),
        ((), None),  # no Session-Expires: no session expiration
        (("Session-Expires: never",), None),
    ],
)
def test_from_response(lines: tuple[str, ...], timer: SessionTimer | None) -> None:
    """RFC 4028 §7.2: the 2xx settles the timer: its Session-Expires gives the interval and
    ``refresher=uac`` (we sent the request) means we refresh; a 2xx without Session-Expires
    means the session does not expire."""
    assert from_response(ok(*lines)) == timer


@pytest.mark.parametrize("we_refresh", [True, False])
@pytest.mark.parametrize("supported", [True, False])
def test_both_sides_read_the_answer_the_same_way(we_refresh: bool, supported: bool) -> None:
    """RFC 4028 §7.2 and §9: what the UAS puts in its 2xx, the UAC reads back as the same
    refresher: exactly one side refreshes, over the same interval."""
    ours = SessionTimer(600, we_refresh=we_refresh)
    request = invite(*(["Supported: timer"] if supported else []))
    lines = [f"{name}: {value}" for name, value in answer_headers(ours, request)]
    theirs = from_response(ok(*lines))
    assert theirs == SessionTimer(600, we_refresh=not we_refresh)


def test_the_peer_reads_our_refresh_as_ours() -> None:
    """RFC 4028 §7.4 and §9: a UAS answering our refresh keeps us as the refresher."""
    lines = [f"{n}: {v}" for n, v in refresh_headers(SessionTimer(120, True), 90)]
    request = invite("Supported: timer", *lines)
    assert uas_timer(request, 1800, 90) == SessionTimer(120, we_refresh=False)


# -- §10: when the side that does not refresh gives up -----------------------------------------
@pytest.mark.parametrize(
    ("interval", "margin"), [(3, 1.0), (90, 30.0), (96, 32.0), (120, 32.0), (1800, 32.0)]
)
def test_expiry_margin(interval: int, margin: float) -> None:
    """RFC 4028 §10: the side not performing refreshes sends BYE min(32, interval/3) seconds
    before the session expires."""
    assert expiry_margin(interval) == pytest.approx(margin)


# -- supported/required option tags --------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "supported"),
    [
        (("Supported: timer",), True),
        (("Supported: replaces, Timer",), True),
        (("Supported: replaces", "Supported: timer"), True),
        (("Require: timer",), True),
        (("k: timer",), True),
        (("Supported: timers",), False),
        (("Supported: replaces",), False),
        ((), False),
    ],
)
def test_supports_timer(lines: tuple[str, ...], supported: bool) -> None:
    """RFC 4028 §3 and §7.1: a UA supporting session timers lists the option tag ``timer``
    in Supported (or Require); tags are case-insensitive and may come in several headers."""
    assert supports_timer(invite(*lines)) is supported
