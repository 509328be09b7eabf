"""Calls that never leak: RFC 4028 session timers and the media timeout, against sipp.

sipp runs scenarios of ours (tests/interop/scenarios/): a caller that vanishes
after the ACK, one that asks to refresh and never does, a callee that makes us
refresh, and 422 Session Interval Too Small both ways. sipp's exit status says
whether the other side behaved as the scenario demands (BYE received, UPDATE
with Session-Expires received, INVITE retried with the larger interval...).
Intervals are seconds long (min_se below RFC 4028's 90 is allowed for tests).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pytest_twisted

from sipd import CallFailed, CallState
from tests.conftest import PeerFactory, SippFactory, eventually, within

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).parent / "scenarios"


def scenario(name: str) -> str:
    return str(SCENARIOS / name)


@pytest_twisted.ensureDeferred
async def test_a_caller_that_vanishes_after_the_ack_gets_bye_within_the_media_timeout(
    peers: PeerFactory, sipp: SippFactory
) -> None:
    """No RTP and no RTCP from the caller: the callee ends the call with BYE."""
    bob = await peers("bob", media_timeout=1.5, session_expires=0)
    run, _ = sipp(scenario("uac_vanish.xml"), remote=f"127.0.0.1:{bob.port}", timeout=20)
    incoming = await within(bob.wait_for_incoming(), 10)
    call = await within(incoming.accept(), 10)
    started = time.monotonic()
    await within(call.wait_for_end(), 10)
    waited = time.monotonic() - started
    assert 1.0 <= waited <= 4.0, f"ended after {waited:.1f}s, media_timeout is 1.5s"
    assert call.state is CallState.TERMINATED
    assert isinstance(call.failure, CallFailed)
    assert "no RTP or RTCP" in str(call.failure)
    code = await run.wait(10)
    assert code == 0, f"sipp did not get its BYE\n{run.report()}"


@pytest_twisted.ensureDeferred
async def test_a_caller_that_stops_refreshing_is_ended_at_the_session_interval(
    peers: PeerFactory, sipp: SippFactory
) -> None:
    """refresher=uac and no refresh: BYE at 4 s - min(32, 4/3) s (RFC 4028 §10)."""
    bob = await peers("bob", media_timeout=0, min_se=2)
    run, _ = sipp(scenario("uac_timer_no_refresh.xml"), remote=f"127.0.0.1:{bob.port}")
    incoming = await within(bob.wait_for_incoming(), 10)
    call = await within(incoming.accept(), 10)
    started = time.monotonic()
    await within(call.wait_for_end(), 10)
    waited = time.monotonic() - started
    assert 2.0 <= waited <= 4.0, f"ended after {waited:.1f}s; expected about 2.7s"
    assert "not refreshed in time" in str(call.failure)
    code = await run.wait(10)
    assert code == 0, f"sipp: wrong Session-Expires in our 200, or no BYE\n{run.report()}"


@pytest_twisted.ensureDeferred
async def test_we_refresh_with_update_when_the_callee_makes_us_the_refresher(
    peers: PeerFactory, sipp: SippFactory
) -> None:
    """Our INVITE asks for a timer; the 200 says refresher=uac: we send UPDATE in time."""
    alice = await peers("alice", session_expires=4, min_se=2, media_timeout=0)
    run, port = sipp(scenario("uas_timer_refresh.xml"), timeout=20)
    call = await alice.call(f"sip:timer@127.0.0.1:{port}")
    await within(call.wait_for_answer(), 10)
    first = call.session.refreshed_at
    assert call.session.session_timer is not None and call.session.session_timer.we_refresh
    assert await eventually(lambda: call.session.refreshed_at > first, 5.0)
    assert call.is_active()
    await within(call.hangup(), 10)
    code = await run.wait(10)
    assert code == 0, f"sipp did not see our UPDATE refresh\n{run.report()}"


@pytest_twisted.ensureDeferred
async def test_a_422_makes_us_retry_with_the_callees_minimum(
    peers: PeerFactory, sipp: SippFactory
) -> None:
    """422 with Min-SE: 8 -> the INVITE again with Session-Expires: 8 (RFC 4028 §7.3)."""
    alice = await peers("alice", session_expires=4, min_se=2, media_timeout=0)
    run, port = sipp(scenario("uas_422.xml"), timeout=20)
    call = await alice.call(f"sip:timer@127.0.0.1:{port}")
    await within(call.wait_for_answer(), 10)
    timer = call.session.session_timer
    assert timer is not None and timer.interval == 8
    await within(call.hangup(), 10)
    code = await run.wait(10)
    assert code == 0, f"sipp did not get the retried INVITE\n{run.report()}"


@pytest_twisted.ensureDeferred
async def test_an_interval_below_our_min_se_gets_422_with_our_minimum(
    peers: PeerFactory, sipp: SippFactory
) -> None:
    """Session-Expires: 30 to a UA with Min-SE 60: 422 Min-SE: 60, then the retry is answered."""
    bob = await peers("bob", min_se=60, media_timeout=0)
    run, _ = sipp(scenario("uac_422.xml"), remote=f"127.0.0.1:{bob.port}", timeout=20)
    incoming = await within(bob.wait_for_incoming(), 10)
    call = await within(incoming.accept(), 10)
    timer = call.session.session_timer
    assert timer is not None and timer.interval == 60
    await within(call.wait_for_end(), 10)
    assert call.state is CallState.TERMINATED and call.failure is None
    code = await run.wait(10)
    assert code == 0, f"sipp: no 422 with Min-SE 60, or a wrong 200\n{run.report()}"
