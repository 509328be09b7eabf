"""sipd and baresip over SIP/TLS, with plain RTP and with SRTP (SDES), both ways.

baresip (headless, auto-answering, started on free loopback ports with a
certificate from the test CA; see tests/interop/baresip_tls.py) plays a
1 kHz WAV into every call and records what it receives; the sipd peer
plays 440 Hz and records with ``record_wav``. Each recording must hold the
other side's tone (the harness's numpy spectrum and sipd's detector).

A raw packet capture on ``lo`` (tests/interop/capture.py) sees every UDP
datagram to and from sipd's media ports and both SIP ports:

- no SIP travels over UDP (the signalling is on TLS);
- with plain RTP the captured PCMU payloads, decoded with the standard
  library's µ-law decoder, hold the tones: the oracle can see a tone when
  one is on the wire;
- with SRTP (``mediaenc=srtp-mand`` on baresip, ``srtp="required"`` on
  sipd) the same decoding gives noise and every packet carries an auth tag,
  while both recordings still hold the tones.

The negative tests: sipd with ``srtp="required"`` refuses baresip's plain
RTP offer with 488, and sipd with ``srtp="off"`` and baresip with
``srtp-mand`` do not get a call either way; each fails promptly, never hangs.
And the TLS is real: sipd trusting another CA fails its call to baresip at
the handshake.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import pytest_twisted

from sipd import Call, CallFailed, CallRejected, SimplePeer, TlsConfig
from sipd.sip.message import Request
from tests.conftest import PeerFactory, within
from tests.interop.baresip_tls import (
    TlsFiles,
    baresip_sdp,
    make_tls_files,
    sipd_tls_config,
    start_tls_baresip,
)
from tests.interop.capture import LoopbackCapture, decode_pcmu, parse_rtp, tone_share
from tests.interop.harness import (
    Baresip,
    Interop,
    assert_tone,
    free_udp_port_range,
    interop,
    settle,
    write_tone_wav,
)

__all__ = ["interop"]

pytestmark = pytest.mark.interop

SIPD_HZ, BARESIP_HZ = 440.0, 1000.0
TONE_S = 1.5
#: PCMU at 20 ms per packet.
PCMU_BYTES = 160
#: SRTP auth tag sizes: AES_CM_128_HMAC_SHA1_80 and _32.
TAG_BYTES = (10, 4)
#: The one suite baresip 1.0.0 offers, and the one sipd offers first.
SUITE = "AES_CM_128_HMAC_SHA1_80"
MEDIA = ["rtp", "srtp"]


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "pki")


async def _sipd_peer(
    peers: PeerFactory, name: str, files: TlsFiles, srtp: str
) -> tuple[SimplePeer, range]:
    first = free_udp_port_range(20)
    peer: SimplePeer = await within(
        peers(
            name,
            transport="tls",
            tls=sipd_tls_config(files),
            srtp=srtp,
            media_port_min=first,
            media_port_max=first + 19,
        ),
        5,
    )
    return peer, range(first, first + 20)


async def _baresip(
    interop: Interop, tmp_path: Path, user: str, files: TlsFiles, mediaenc: str | None
) -> Baresip:
    tone = write_tone_wav(tmp_path / f"{user}-tone.wav", BARESIP_HZ, 30)
    return await start_tls_baresip(interop, user, tone=tone, files=files, mediaenc=mediaenc)


def _capture(peer: SimplePeer, media_ports: range, baresip: Baresip) -> LoopbackCapture:
    """Every UDP datagram to or from sipd's media ports and both SIP ports."""
    return LoopbackCapture.of_ports([*media_ports, peer.port, baresip.sip_port]).start()


def _report(baresip: Baresip) -> str:
    sdp = "\n".join(baresip_sdp(baresip)) or "(no SDP in baresip's trace)"
    return f"SDP seen by baresip:\n{sdp}\n{baresip.report()}"


def _assert_signalling_not_on_udp(
    capture: LoopbackCapture, peer: SimplePeer, baresip: Baresip
) -> None:
    sip_ports = {peer.port, baresip.sip_port}
    on_udp = [d for d in capture.datagrams if d.src[1] in sip_ports or d.dst[1] in sip_ports]
    assert not on_udp, f"SIP over UDP during a TLS call: {on_udp[:3]}"


def _assert_media_keyed(call: Call, *, srtp: bool) -> int:
    """PCMU, SRTP (or not) as sipd negotiated it; returns sipd's RTP port."""
    stats = call.stats()
    assert stats["codec"] == "PCMU", stats
    assert stats["srtp"] == (SUITE if srtp else None), stats
    port = stats["local_port"]
    assert isinstance(port, int), stats
    return port


def _assert_wire(capture: LoopbackCapture, rtp_port: int, *, encrypted: bool, report: str) -> None:
    """The captured RTP both ways: PCMU carrying the tone, or SRTP carrying noise."""
    directions = [
        ("baresip -> sipd", capture.sent_to([rtp_port]), BARESIP_HZ),
        ("sipd -> baresip", capture.sent_from([rtp_port]), SIPD_HZ),
    ]
    for who, datagrams, freq in directions:
        packets = [p for d in datagrams if (p := parse_rtp(d.payload)) and p.payload_type == 0]
        assert len(packets) >= 50, (
            f"{who}: only {len(packets)} PCMU RTP packets captured "
            f"({len(datagrams)} UDP datagrams)\n{report}"
        )
        sizes = Counter(len(p.payload) for p in packets)
        if encrypted:
            tags = {size - PCMU_BYTES for size in sizes}
            assert len(tags) == 1 and tags <= set(TAG_BYTES), (
                f"{who}: payload sizes {dict(sizes)} are not 160 bytes of PCMU "
                f"plus one SRTP auth tag ({TAG_BYTES})\n{report}"
            )
            samples = decode_pcmu((p.payload for p in packets), trailer=tags.pop())
            share = tone_share(samples, freq)
            assert share < 0.05, (
                f"{who}: the captured payloads decode as µ-law to {share:.0%} "
                f"{freq} Hz: the media is not encrypted\n{report}"
            )
        else:
            assert set(sizes) == {PCMU_BYTES}, f"{who}: payload sizes {dict(sizes)}\n{report}"
            share = tone_share(decode_pcmu(p.payload for p in packets), freq)
            assert share >= 0.8, (
                f"{who}: plain PCMU on the wire holds only {share:.0%} {freq} Hz\n{report}"
            )


def _sent_invite(call: Call) -> Request:
    invite = call.session.signalling.invite_request
    assert isinstance(invite, Request)
    return invite


def _assert_offer(sdp: str | None, *, srtp: bool) -> None:
    assert sdp is not None
    if srtp:
        assert "RTP/SAVP 0" in sdp and "a=crypto:" in sdp, sdp
    else:
        assert "RTP/AVP 0" in sdp and "a=crypto" not in sdp, sdp


@pytest.mark.parametrize("media", MEDIA)
@pytest_twisted.ensureDeferred
async def test_sipd_calls_baresip_over_tls(
    interop: Interop, peers: PeerFactory, tmp_path: Path, tls_files: TlsFiles, media: str
) -> None:
    """sipd dials baresip's TLS address; tones both ways; the wire shows (S)RTP."""
    srtp = media == "srtp"
    baresip = await _baresip(interop, tmp_path, "bob", tls_files, "srtp-mand" if srtp else None)
    alice, media_ports = await _sipd_peer(peers, "alice", tls_files, "required" if srtp else "off")
    sipd_tone = write_tone_wav(tmp_path / "alice-tone.wav", SIPD_HZ, TONE_S)
    capture = _capture(alice, media_ports, baresip)
    try:
        call = await within(alice.call(baresip.contact_uri), 5)
        await within(call.wait_for_answer(), 10)
        established = await baresip.wait_event("CALL_ESTABLISHED")
        assert established["direction"] == "incoming"
        rtp_port = _assert_media_keyed(call, srtp=srtp)
        recorded = call.record_wav(tmp_path / "alice-heard.wav")
        await within(call.play_wav(sipd_tone), 10)
        await settle(0.2)
        await within(call.hangup(), 10)
        await within(recorded, 5)
        await baresip.wait_event("CALL_CLOSED")
    finally:
        capture.stop()

    report = _report(baresip)
    invite = _sent_invite(call)
    assert invite.top_via.transport == "TLS", invite
    _assert_offer(invite.body.decode(), srtp=srtp)
    _assert_signalling_not_on_udp(capture, alice, baresip)
    assert_tone(tmp_path / "alice-heard.wav", BARESIP_HZ, "sipd heard", report)
    assert_tone(baresip.received_wav(), SIPD_HZ, "baresip heard", report)
    _assert_wire(capture, rtp_port, encrypted=srtp, report=report)


@pytest.mark.parametrize("media", MEDIA)
@pytest_twisted.ensureDeferred
async def test_baresip_calls_sipd_over_tls(
    interop: Interop, peers: PeerFactory, tmp_path: Path, tls_files: TlsFiles, media: str
) -> None:
    """baresip dials sipd over TLS; sipd answers; baresip hangs up; tones both ways."""
    srtp = media == "srtp"
    baresip = await _baresip(interop, tmp_path, "carol", tls_files, "srtp-mand" if srtp else None)
    bob, media_ports = await _sipd_peer(peers, "bob", tls_files, "required" if srtp else "off")
    sipd_tone = write_tone_wav(tmp_path / "bob-tone.wav", SIPD_HZ, TONE_S)
    capture = _capture(bob, media_ports, baresip)
    try:
        # The account is ;transport=tls: baresip adds the parameter itself.
        await baresip.dial(f"sip:bob@127.0.0.1:{bob.port}")
        incoming = await within(bob.wait_for_incoming(), 10)
        assert incoming.caller.startswith("sip:carol@127.0.0.1"), incoming.caller
        invite = incoming.session.signalling.invite_request
        assert isinstance(invite, Request) and invite.top_via.transport == "TLS", invite
        _assert_offer(incoming.sdp, srtp=srtp)
        call = await within(incoming.accept(), 10)
        established = await baresip.wait_event("CALL_ESTABLISHED")
        assert established["direction"] == "outgoing"
        rtp_port = _assert_media_keyed(call, srtp=srtp)
        recorded = call.record_wav(tmp_path / "bob-heard.wav")
        await within(call.play_wav(sipd_tone), 10)
        await settle(0.2)
        await baresip.hangup()
        await within(call.wait_for_end(), 10)
        await within(recorded, 5)
        await baresip.wait_event("CALL_CLOSED")
    finally:
        capture.stop()
    assert call.failure is None, call.failure

    report = _report(baresip)
    _assert_signalling_not_on_udp(capture, bob, baresip)
    assert_tone(tmp_path / "bob-heard.wav", BARESIP_HZ, "sipd heard", report)
    assert_tone(baresip.received_wav(), SIPD_HZ, "baresip heard", report)
    _assert_wire(capture, rtp_port, encrypted=srtp, report=report)


# -- mismatched policies: refused, never hung ---------------------------------------------
@pytest.mark.parametrize(
    ("mediaenc", "policy", "reason"),
    [
        # A plain RTP/AVP offer without keys; sipd insists on SRTP.
        (None, "required", "srtp is 'required' but the offer has no a=crypto line"),
        # An RTP/SAVP offer; sipd does no SRTP.
        ("srtp-mand", "off", "offer offers audio only over RTP/SAVP"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_sipd_refuses_baresip_with_488_when_srtp_policies_clash(
    interop: Interop,
    peers: PeerFactory,
    tmp_path: Path,
    tls_files: TlsFiles,
    mediaenc: str | None,
    policy: str,
    reason: str,
) -> None:
    """baresip's offer does not meet sipd's policy: it is answered 488 at once, before
    it rings or reaches the application; baresip says so, with sipd's reason."""
    baresip = await _baresip(interop, tmp_path, "dave", tls_files, mediaenc)
    bob, _ = await _sipd_peer(peers, "bob", tls_files, policy)
    # The account is ;transport=tls: baresip adds the parameter itself.
    await baresip.dial(f"sip:bob@127.0.0.1:{bob.port}")
    closed = await baresip.wait_event("CALL_CLOSED", timeout=10)
    report = _report(baresip)
    assert "488" in str(closed.get("param")), f"{closed}\n{report}"
    trace = baresip.process.log_text(None)
    assert "SIP/2.0 488 Not Acceptable Here" in trace, report
    # The reason travels in a Warning header baresip received.
    assert f'Warning: 399 sipd "{reason}' in trace, report
    assert "SIP/2.0 180 Ringing" not in trace, report
    assert bob.try_incoming() is None and not bob.active_calls()
    assert baresip.received_wav() is None, "baresip got media in a refused call"


@pytest_twisted.ensureDeferred
async def test_sipd_without_srtp_calling_baresip_with_srtp_mand_is_refused_with_488(
    interop: Interop, peers: PeerFactory, tmp_path: Path, tls_files: TlsFiles
) -> None:
    """sipd (srtp off) offers RTP/AVP without keys; baresip (srtp-mand) answers 488 at once."""
    baresip = await _baresip(interop, tmp_path, "erin", tls_files, "srtp-mand")
    alice, _ = await _sipd_peer(peers, "alice", tls_files, "off")
    call = await within(alice.call(baresip.contact_uri), 5)
    with pytest.raises(CallRejected) as rejected:
        await within(call.wait_for_answer(), 10)
    assert rejected.value.status == 488, f"{rejected.value}\n{_report(baresip)}"
    _assert_offer(_sent_invite(call).body.decode(), srtp=False)
    assert not alice.active_calls()
    assert baresip.received_wav() is None, "baresip got media in a refused call"


@pytest_twisted.ensureDeferred
async def test_sipd_refuses_a_baresip_certificate_its_ca_did_not_sign(
    interop: Interop, peers: PeerFactory, tmp_path: Path, tls_files: TlsFiles
) -> None:
    """The TLS above is verified: trusting another CA, sipd's call fails at the handshake."""
    baresip = await _baresip(interop, tmp_path, "frank", tls_files, None)
    other = TlsConfig(
        certificate=str(tls_files.certs.server_cert),
        private_key=str(tls_files.certs.server_key),
        ca_certificates=str(tls_files.certs.other_ca),
    )
    alice = await within(peers("alice", transport="tls", tls=other), 5)
    call = await within(alice.call(baresip.contact_uri), 5)
    with pytest.raises(CallFailed, match="certificate verify failed"):
        await within(call.wait_for_answer(), 10)
    assert "INVITE sip:" not in baresip.process.log_text(None), baresip.report()
