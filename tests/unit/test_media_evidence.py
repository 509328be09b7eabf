"""ICMP port unreachable as evidence for the media timeout, from the socket to the session.

The path: the RTP or RTCP protocol (sipd/media/protocol.py) hears of an
unreachable address from its port, the :class:`MediaStream` records the first
error since the peer was last heard, the call's :class:`MediaSession` calls
its ``on_evidence`` hook (the session machine's ``reschedule``, wired by its
:class:`MediaChannel`), and :func:`media_deadline` moves the media timeout
earlier. Each step is checked here without sockets; the session's side is in
tests/unit/test_session_rows.py, the real thing in tests/integration/test_icmp.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from twisted.internet import task

from sipd.config import SipdConfig
from sipd.errors import ConfigError
from sipd.media.protocol import RtcpProtocol, RtpProtocol
from sipd.media.rtcp import ReceiverReport, build_compound
from sipd.media.rtp import RtpPacket
from sipd.media.stream import Addr, MediaStream
from sipd.sdp import PCMU, build_offer, negotiate_answer
from sipd.session.channels import MediaChannel
from sipd.session.media_adapter import MediaAdapter, MediaSession
from sipd.session.media_timeout import media_deadline, media_failure_context
from sipd.session.registry import SessionRegistry

REMOTE: Addr = ("192.0.2.10", 40000)
REMOTE_RTCP: Addr = ("192.0.2.10", 40001)


def make_stream(clock: task.Clock) -> MediaStream:
    return MediaStream(
        codec="PCMU",
        payload_type=0,
        remote=REMOTE,
        send_rtp=lambda data, addr: None,
        send_rtcp=lambda data, addr: None,
        now=clock.seconds,
    )


def rtp(seq: int) -> bytes:
    return bytes(
        RtpPacket(payload_type=0, sequence=seq, timestamp=160 * seq, ssrc=7, payload=bytes(160))
    )


# -- the stream --------------------------------------------------------------------------------
def test_the_first_unreachable_since_the_peer_was_heard_is_recorded_once() -> None:
    """Every packet we send a dead peer comes back as ICMP: only the first one is news."""
    clock = task.Clock()
    stream = make_stream(clock)
    told: list[None] = []
    stream.unreachable_listeners.append(lambda: told.append(None))
    clock.advance(3)
    stream.unreachable(REMOTE)
    clock.advance(1)
    stream.unreachable(REMOTE_RTCP)
    assert (stream.unreachable_since, stream.unreachable_addr) == (3.0, REMOTE)
    assert len(told) == 1


def test_an_error_for_another_address_is_no_evidence() -> None:
    """Only the peer's current RTP or RTCP address counts (not a stranger's, not an old one)."""
    stream = make_stream(task.Clock())
    stream.unreachable(("192.0.2.99", 40000))
    stream.unreachable(("192.0.2.10", 40002))
    assert stream.unreachable_since is None


@pytest.mark.parametrize("packet", ["rtp", "rtcp"])
def test_hearing_the_peer_clears_the_evidence(packet: str) -> None:
    """The peer is alive after all (it restarted its socket, a transient error)."""
    clock = task.Clock()
    stream = make_stream(clock)
    told: list[None] = []
    stream.unreachable_listeners.append(lambda: told.append(None))
    stream.unreachable(REMOTE)
    clock.advance(1)
    if packet == "rtp":
        stream.rtp_received(rtp(1), REMOTE)
    else:
        stream.rtcp_received(build_compound([ReceiverReport(ssrc=7)]), REMOTE_RTCP)
    assert stream.last_heard == 1.0 and stream.unreachable_since is None
    clock.advance(1)
    stream.unreachable(REMOTE)  # gone again: new evidence, told again
    assert stream.unreachable_since == 2.0 and len(told) == 2


def test_a_closed_stream_takes_no_evidence() -> None:
    stream = make_stream(task.Clock())
    stream.close()
    stream.unreachable(REMOTE)
    assert stream.unreachable_since is None


def test_each_protocol_forwards_only_its_own_address() -> None:
    """The RTP socket sends to the peer's RTP port, the RTCP socket to its RTCP port."""
    stream = make_stream(task.Clock())
    rtp_protocol, rtcp_protocol = RtpProtocol(), RtcpProtocol()
    rtp_protocol.unreachable(REMOTE)  # no stream yet: nothing to tell
    rtp_protocol.stream = rtcp_protocol.stream = stream
    rtp_protocol.unreachable(REMOTE_RTCP)
    rtcp_protocol.unreachable(REMOTE)
    assert stream.unreachable_since is None
    rtcp_protocol.unreachable(REMOTE_RTCP)
    assert stream.unreachable_addr == REMOTE_RTCP


# -- the media session and its channel -----------------------------------------------------------
def negotiated(port: int = 40000) -> object:
    offer = build_offer("192.0.2.10", port, [PCMU], session_id=1, session_version=1)
    return negotiate_answer(offer, "127.0.0.1", 20000, [PCMU], session_id=2, session_version=1)


def test_the_media_session_calls_its_hook_on_new_evidence_and_drops_it_at_the_end() -> None:
    clock = task.Clock()
    adapter = MediaAdapter(SipdConfig(), clock)
    media = MediaSession(adapter, "m1", 20000)  # not bound: fed by hand
    woken: list[None] = []
    media.on_evidence = lambda: woken.append(None)
    media.start(negotiated())  # type: ignore[arg-type]
    assert media.stream.remote == REMOTE
    media.rtp.unreachable(REMOTE)
    media.rtp.unreachable(REMOTE)
    assert len(woken) == 1
    # A new negotiation (a re-INVITE may move the peer): the evidence starts afresh.
    media.start(negotiated())  # type: ignore[arg-type]
    assert media.stream.unreachable_since is None
    media.rtp.unreachable(REMOTE)
    assert len(woken) == 2
    media.stop()
    assert media.on_evidence is None and media.stream.unreachable_listeners == []
    media.stream.unreachable_since = None
    media.rtp.unreachable(REMOTE)  # the call has ended: nobody is told
    assert len(woken) == 2


def test_the_channel_wires_the_hook_on_start_and_unwires_it_on_detach() -> None:
    """The hook points at the session's machine: detach() drops it so that a finished
    call leaves no reference cycle behind (tests/integration/test_no_cycles.py)."""
    adapter = MediaAdapter(SipdConfig(), task.Clock())
    media = MediaSession(adapter, "m1", 20000)
    channel = MediaChannel(adapter, SessionRegistry(), "s1", media)
    woken: list[None] = []
    channel.on_evidence = lambda: woken.append(None)
    channel.start(negotiated())  # type: ignore[arg-type]
    media.rtp.unreachable(REMOTE)
    assert len(woken) == 1
    channel.detach()
    assert media.on_evidence is None
    assert channel.on_evidence is not None and channel.on_evidence() is None
    media.stop()


# -- the deadline and the failure text ------------------------------------------------------------
@dataclass
class Heard:
    last_heard: float | None = None
    unreachable_since: float | None = None
    unreachable_addr: tuple[str, int] | None = None


@pytest.mark.parametrize(
    ("heard", "timeout", "unreachable_timeout", "expected"),
    [
        (Heard(), 60, 5, 110),  # silence from entering the state (at 50)
        (Heard(last_heard=70), 60, 5, 130),  # from the last packet
        (Heard(last_heard=70, unreachable_since=80), 60, 5, 85),  # ICMP: 5 s after the error
        (Heard(last_heard=70, unreachable_since=128), 60, 5, 130),  # the plain timeout is sooner
        (Heard(unreachable_since=20), 60, 5, 55),  # evidence from before entering: from then
        (Heard(last_heard=70, unreachable_since=80), 60, 0, 130),  # 0: no ICMP shortcut
        (Heard(last_heard=70, unreachable_since=80), 0, 5, None),  # 0: no media timeout at all
    ],
)
def test_the_media_deadline(
    heard: Heard, timeout: float, unreachable_timeout: float, expected: float | None
) -> None:
    assert media_deadline(heard, 50.0, timeout, unreachable_timeout) == expected


def test_the_failure_text_says_how_long_and_why() -> None:
    assert media_failure_context(Heard(last_heard=70), 10, 130.04) == {
        "media_silence": "60",
        "media_evidence": "",
    }
    assert media_failure_context(Heard(), 10, 15.5) == {
        "media_silence": "5.5",
        "media_evidence": "",
    }
    icmp = Heard(last_heard=70, unreachable_since=80, unreachable_addr=("::1", 4000))
    assert media_failure_context(icmp, 10, 85) == {
        "media_silence": "15",
        "media_evidence": " (ICMP port unreachable for [::1]:4000)",
    }
    assert media_failure_context(None, None, 1) == {"media_silence": "", "media_evidence": ""}


@pytest.mark.parametrize("bad", [-1, "5", None])
def test_media_unreachable_timeout_must_be_a_number_of_seconds(bad: object) -> None:
    with pytest.raises(ConfigError, match="media_unreachable_timeout"):
        SipdConfig(media_unreachable_timeout=bad)  # type: ignore[arg-type]
    assert SipdConfig().media_unreachable_timeout == 5.0
    assert SipdConfig(media_unreachable_timeout=0).media_unreachable_timeout == 0
