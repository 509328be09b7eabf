"""The baresip harness against sipp alone: auto-answer, WAV source, recording, dialing.

No sipd here: these tests prove that the headless baresip the interop
suite starts (tests/interop/harness.py) answers by itself, sends the WAV it
is given, records what it receives, and places calls on a ctrl_tcp command,
so a later sipd test can trust what baresip's recording says.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from tests.interop.harness import (
    SCENARIOS,
    Interop,
    dominant_frequency,
    free_udp_port_range,
    interop,
    read_wav,
    settle,
    sounding_seconds,
    write_pcmu_tone_pcap,
    write_tone_wav,
)

__all__ = ["interop"]

pytestmark = pytest.mark.interop

#: What baresip sends (its aufile source) and what sipp plays to it.
BARESIP_HZ = 440.0
SIPP_HZ = 1000.0


def _check_tone(path: Path | None, freq: float, min_seconds: float, who: str) -> None:
    assert path is not None, f"{who}: no recording was written"
    samples, rate = read_wav(path)
    assert rate == 8000, f"{who}: {path.name} is {rate} Hz"
    heard = sounding_seconds(samples, rate)
    assert heard >= min_seconds, f"{who}: only {heard:.2f} s of sound in {path.name}"
    peak, share = dominant_frequency(samples, rate)
    assert abs(peak - freq) <= 5, f"{who}: {path.name} peaks at {peak:.1f} Hz, not {freq}"
    assert share >= 0.8, f"{who}: only {share:.0%} of {path.name}'s power is near {freq} Hz"


@pytest_twisted.ensureDeferred
async def test_baresip_answers_sipp_and_records_the_pcmu_tone_it_hears(
    interop: Interop, tmp_path: Path
) -> None:
    """sipp plays a 1 kHz PCMU tone into a call baresip auto-answers; baresip records it."""
    tone = write_tone_wav(tmp_path / "baresip-tone.wav", BARESIP_HZ, 30)
    baresip = await interop.baresip("bob", tone=tone)
    pcap = write_pcmu_tone_pcap(tmp_path / "tone.pcap", SIPP_HZ, 2.0)
    sipp = interop.sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_pcmu_tone.xml"),
            "-s",
            "bob",
            "-d",
            "2300",
            "-mp",
            str(free_udp_port_range(4)),
            "-m",
            "1",
            "-timeout",
            "15s",
            "-timeout_error",
        ],
        remote=f"127.0.0.1:{baresip.sip_port}",
        files={"tone.pcap": pcap},
    )
    assert sipp.port is not None
    established = await baresip.wait_event("CALL_ESTABLISHED")
    assert established["direction"] == "incoming"
    assert established["peeruri"] == f"sip:sipp@127.0.0.1:{sipp.port}"
    code = await sipp.wait_exit(15)
    assert code == 0, f"sipp's call failed\n{sipp.report()}\n{baresip.report()}"
    await baresip.wait_event("CALL_CLOSED")
    # What baresip heard is sipp's tone; what it sent is its own WAV.
    _check_tone(baresip.received_wav(), SIPP_HZ, 1.5, "baresip received")
    _check_tone(baresip.sent_wav(), BARESIP_HZ, 1.5, "baresip sent")


@pytest_twisted.ensureDeferred
async def test_baresip_dials_sipp_on_command_and_records_the_echo_of_its_tone(
    interop: Interop, tmp_path: Path
) -> None:
    """`dial` over ctrl_tcp calls sipp's echoing uas; baresip's recording holds its own tone."""
    tone = write_tone_wav(tmp_path / "baresip-tone.wav", BARESIP_HZ, 30)
    baresip = await interop.baresip("alice", tone=tone)
    sipp = interop.sipp(["-sn", "uas", "-rtp_echo", "-mp", str(free_udp_port_range(4)), "-m", "1"])
    assert sipp.port is not None
    # sipp binds as it starts; dialing it too early meets no socket, and
    # baresip would not retransmit past a port-unreachable.
    await settle(0.3)
    await baresip.dial(f"sip:echo@127.0.0.1:{sipp.port}")
    established = await baresip.wait_event("CALL_ESTABLISHED")
    assert established["direction"] == "outgoing"
    await baresip.wait_event("CALL_RTPESTAB")
    await settle(2.0)
    await baresip.hangup()
    await baresip.wait_event("CALL_CLOSED")
    code = await sipp.wait_exit(10)
    assert code == 0, f"sipp's uas scenario failed\n{sipp.report()}"
    _check_tone(baresip.received_wav(), BARESIP_HZ, 1.5, "baresip received (echo)")
