"""RTP ports other programs hold, and a range with none left (issue 11, "Ports").

Real sockets on 127.0.0.1. Port allocation searches the whole configured
range and skips every port the OS refuses, so calls keep working on whatever
is free; when no RTP/RTCP pair is left, an incoming INVITE is answered 503
with Retry-After at once (no 180 first, no session left behind) and
``call()`` fails at once with :class:`~sipd.PortsExhausted`.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from contextlib import ExitStack

import pytest
import pytest_twisted

from sipd import Call, CallRejected, PortsExhausted, SimplePeer
from sipd.sip.message import Response
from tests.conftest import (
    BUSY_DEFAULT_PORTS,
    PeerFactory,
    PortHolder,
    RawUA,
    eventually,
    free_port_range,
    get_reactor,
    within,
)

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def hold(ports: list[int]) -> ExitStack:
    """Bind ``ports`` in this process (as another program would hold them)."""
    stack = ExitStack()
    for port in ports:
        s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        s.bind(("127.0.0.1", port))
    return stack


def invite(ua: RawUA, port: int) -> str:
    call_id = secrets.token_hex(8)
    return (
        f"INVITE sip:bob@127.0.0.1:{port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{secrets.token_hex(6)};rport\n"
        "Max-Forwards: 70\n"
        f"From: <sip:raw@127.0.0.1:{ua.port}>;tag=raw1\n"
        f"To: <sip:bob@127.0.0.1:{port}>\n"
        f"Call-ID: {call_id}\n"
        "CSeq: 1 INVITE\n"
        f"Contact: <sip:raw@127.0.0.1:{ua.port}>\n"
        "Content-Type: application/sdp\n"
        f"Content-Length: {len(SDP)}\n\n" + SDP.replace("\r\n", "\n")
    )


async def refused_at_once(ua: RawUA, bob: SimplePeer) -> Response:
    """A raw INVITE to ``bob``: its first final answer, within one second, with no 180."""
    ua.send(invite(ua, bob.port), ("127.0.0.1", bob.port))
    reactor = get_reactor()
    started = reactor.seconds()
    final = await ua.expect(lambda m: isinstance(m, Response) and m.status >= 200, timeout=1.0)
    assert isinstance(final, Response)
    assert reactor.seconds() - started < 1.0
    assert not ua.messages(lambda m: isinstance(m, Response) and 100 < m.status < 200)
    ack = (
        f"ACK sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
        f"Via: {final.headers.get('Via')}\n"
        "Max-Forwards: 70\n"
        f"From: {final.headers.get('From')}\n"
        f"To: {final.headers.get('To')}\n"
        f"Call-ID: {final.call_id}\n"
        "CSeq: 1 ACK\n"
        "Content-Length: 0\n\n"
    )
    ua.send(ack, ("127.0.0.1", bob.port))
    return final


async def answered_call(alice: SimplePeer, bob: SimplePeer) -> tuple[Call, Call]:
    call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
    incoming = await within(bob.wait_for_incoming(), 5)
    answered = await within(incoming.accept(), 5)
    await within(call.wait_for_answer(), 5)
    return call, answered


@pytest_twisted.ensureDeferred
async def test_calls_use_the_pairs_left_free_then_503_and_ports_exhausted_at_once(
    peers: PeerFactory, raw_ua: Callable[[], RawUA]
) -> None:
    """A range of 12 RTP/RTCP pairs of which this test holds all but two (some only the
    RTP port, some only the RTCP one): two calls get the free pairs and carry audio;
    the next INVITE gets 503 with Retry-After within a second and no 180, and Bob's own
    call() fails at once with PortsExhausted. Nothing of the refused calls is left."""
    base = free_port_range(24)
    free_pairs = {base + 6, base + 16}
    taken = [p for p in range(base, base + 24) if p - p % 2 not in free_pairs]
    # Pair base+8: only its RTP port is held; pair base+12: only its RTCP port.
    taken = [p for p in taken if p not in (base + 9, base + 12)]
    alice = await peers("alice")
    bob = await peers("bob", media_port_min=base, media_port_max=base + 23)
    with hold(taken):
        assert bob.coordinator.media.ports.capacity == 12
        calls = [await answered_call(alice, bob) for _ in range(2)]
        used = {answered.stats()["local_port"] for _, answered in calls}
        assert used == free_pairs
        for call, answered in calls:
            assert await within(answered.recv_audio(), 2) is not None
            assert await within(call.recv_audio(), 2) is not None

        ua = raw_ua()
        final = await refused_at_once(ua, bob)
        assert final.status == 503
        assert final.headers.get("Retry-After") == "5"

        refused = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
        with pytest.raises(CallRejected) as info:
            await within(refused.wait_for_answer(), 1)
        assert info.value.status == 503

        attempt = bob.call(f"sip:alice@127.0.0.1:{alice.port}")
        assert attempt.called  # failed at once, not after a timeout
        with pytest.raises(PortsExhausted, match=f"{base}-{base + 23}"):
            await attempt
        assert len(bob.coordinator.store) == 2
        metrics = bob.coordinator.metrics
        assert metrics.get("sipd_overload_rejected_total", reason="media_ports") == 2

        for call, answered in calls:
            await within(call.hangup(), 5)
            await within(answered.wait_for_end(), 5)
    assert await eventually(lambda: bob.coordinator.media.ports.in_use == 0)


@pytest_twisted.ensureDeferred
async def test_every_port_held_by_another_process_refuses_at_once(
    peers: PeerFactory, raw_ua: Callable[[], RawUA]
) -> None:
    """Another program holds the whole range: INVITE -> 503 within a second, no 180,
    no session; call() fails at once with PortsExhausted; the UA stays usable."""
    base = free_port_range(8)
    holder = PortHolder(list(range(base, base + 8)))
    try:
        assert len(holder.held) == 8
        bob = await peers("bob", media_port_min=base, media_port_max=base + 7)
        alice = await peers("alice")
        ua = raw_ua()
        for _ in range(2):
            final = await refused_at_once(ua, bob)
            assert (final.status, final.headers.get("Retry-After")) == (503, "5")
        assert len(bob.coordinator.store) == 0 and not bob.coordinator.dialogs.legs
        with pytest.raises(PortsExhausted):
            await bob.call(f"sip:alice@127.0.0.1:{alice.port}")
        assert len(bob.coordinator.store) == 0
    finally:
        holder.close()
    # Once the other program is gone, the same UA places calls again.
    call, answered = await answered_call(bob, alice)
    port = call.stats()["local_port"]
    assert isinstance(port, int) and base <= port < base + 8
    await within(call.hangup(), 5)
    await within(answered.wait_for_end(), 5)


@pytest_twisted.ensureDeferred
async def test_calls_work_while_another_process_holds_ports_of_the_default_range(
    peers: PeerFactory,
) -> None:
    """16384-16414 and every 50th port above are held elsewhere: peers with the
    default range still call each other, on ports nobody else holds."""
    holder = PortHolder(BUSY_DEFAULT_PORTS)
    try:
        held = set(holder.held)
        alice, bob = await peers("alice"), await peers("bob")
        assert (alice.coordinator.config.media_port_min, bob.coordinator.config.media_port_max) == (
            16384,
            32767,
        )
        for _ in range(3):
            call, answered = await answered_call(alice, bob)
            for c in (call, answered):
                port = c.stats()["local_port"]
                assert isinstance(port, int) and port not in held and port + 1 not in held
            assert await within(answered.recv_audio(), 2) is not None
            await within(call.hangup(), 5)
            await within(answered.wait_for_end(), 5)
    finally:
        holder.close()
