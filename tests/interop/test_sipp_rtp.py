"""RTP between sipd and sipp: audio sipp echoes, plays from pcap files, and DTMF.

sipp is an independent RTP endpoint here in three ways:

* ``-sn uas -rtp_echo``: sipp answers and sends every RTP packet it gets back
  to where it came from; a peer that sends a 440 Hz tone must hear 440 Hz.
* ``-sn uac_pcap``: sipp's own scenario calls a peer and replays the G.711
  A-law capture Debian's sip-tester ships (30 ms packets), then an RFC 4733
  DTMF '1'; the peer's recording must hold that much non-silent audio.
* ``tests/interop/scenarios/uac_pcap_tone.xml``: the same replay path with a
  capture this test writes itself (a 1 kHz tone encoded with the stdlib's
  ``audioop``, then a DTMF '5'), so the recording's frequency can be checked.

sipp's exit status says whether its side followed the scenario (0: passed).
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_twisted
from numpy.typing import NDArray

from sipd.media.frame import AudioFrame
from sipd.media.wav import read_wav
from tests.conftest import (
    SIPP,
    PeerFactory,
    SippFactory,
    SippRun,
    free_udp_port,
    settle,
    within,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    if sys.version_info >= (3, 13):
        import audioop_lts as audioop  # pragma: no cover
    else:
        import audioop

pytestmark = pytest.mark.interop

SIP_TESTER_SHARE = Path("/usr/share/sip-tester")
SCENARIOS = Path(__file__).with_name("scenarios")
RATE = 8000
#: A 20 ms block counts as audio (not silence) above this RMS.
SOUND_RMS = 100.0


# -- helpers ---------------------------------------------------------------------------
def _require_sipp() -> None:
    if not os.access(SIPP, os.X_OK):
        pytest.fail(
            f"{SIPP} is missing: install the Debian package sip-tester "
            "(apt-get install sip-tester) to run the sipp RTP interop tests"
        )


def _start_sipp(workdir: Path, scenario: list[str], remote: str) -> SippRun:
    """sipp placing one call from ``workdir`` (where it finds its pcap files)."""
    _require_sipp()
    port = free_udp_port()
    args = [
        SIPP,
        *scenario,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "30s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        "-trace_screen",
        "-screen_file",
        str(workdir / "screen.log"),
        remote,
    ]
    with (workdir / "stdout.out").open("wb") as out, (workdir / "stderr.err").open("wb") as err:
        proc = subprocess.Popen(args, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return SippRun(proc, workdir, args)


@pytest.fixture
def sipp_runs() -> Iterator[list[SippRun]]:
    """sipp processes a test started itself; each is killed by PID afterwards."""
    runs: list[SippRun] = []
    try:
        yield runs
    finally:
        for run in runs:
            run.kill()


def _tone(freq_hz: float, seconds: float, amplitude: float = 0.3) -> NDArray[np.int16]:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.rint(amplitude * 32767 * np.sin(2 * math.pi * freq_hz * t)).astype(np.int16)


def _alaw(samples: NDArray[np.int16]) -> bytes:
    """A-law by the stdlib's reference encoder (independent of sipd's codec)."""
    encoded: bytes = audioop.lin2alaw(samples.tobytes(), 2)
    return encoded


def _rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


def _ipv4_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    """A libpcap file (Ethernet, IPv4, UDP 127.0.0.1:6000 -> :6002) of RTP datagrams.

    ``packets`` are (send time in seconds, RTP bytes); sipp's
    ``play_pcap_audio`` replays them at those times to the call's media
    address, keeping the RTP headers as written.
    """
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    loopback = bytes([127, 0, 0, 1])
    for ident, (when, rtp) in enumerate(packets):
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0, 64, 17, 0, loopback, loopback
        )
        ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        sec, usec = divmod(round(when * 1_000_000), 1_000_000)
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def tone_then_dtmf_packets(
    freq_hz: float, seconds: float, digit_event: int, *, pt: int = 8, dtmf_pt: int = 101
) -> list[tuple[float, bytes]]:
    """A PCMA tone in 20 ms packets, then one RFC 4733 event (100 ms, 3 End copies)."""
    ssrc, seq, ts = 0x5EED1234, 1000, 160_000
    pcm = _tone(freq_hz, seconds)
    packets: list[tuple[float, bytes]] = []
    for i in range(len(pcm) // 160):
        payload = _alaw(pcm[i * 160 : (i + 1) * 160])
        packets.append((i * 0.02, _rtp(pt, seq, ts, ssrc, payload, marker=i == 0)))
        seq, ts = seq + 1, ts + 160
    when = len(packets) * 0.02
    for step in range(1, 8):  # 5 growing updates, then End three times
        end = step >= 5
        duration = min(step, 5) * 160
        payload = struct.pack("!BBH", digit_event, (0x80 if end else 0) | 10, duration)
        packets.append((when, _rtp(dtmf_pt, seq, ts, ssrc, payload, marker=step == 1)))
        seq += 1
        when += 0.02 if not end else 0.005
    return packets


def _blocks_rms(samples: NDArray[np.int16]) -> NDArray[np.float64]:
    usable = len(samples) - len(samples) % 160
    blocks = samples[:usable].astype(np.float64).reshape(-1, 160)
    rms: NDArray[np.float64] = np.sqrt((blocks**2).mean(axis=1))
    return rms


def _peak_and_share(samples: NDArray[np.int16]) -> tuple[float, float]:
    """The strongest frequency and the share of the power within 25 Hz of it."""
    x = samples.astype(np.float64)
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    peak = float(freqs[int(np.argmax(power))])
    return peak, float(power[np.abs(freqs - peak) <= 25].sum() / power.sum())


# -- tests -----------------------------------------------------------------------------
def test_generated_pcap_holds_the_tone_packets_it_was_given(tmp_path: Path) -> None:
    """The pcap writer's file reads back as the same RTP datagrams, times and A-law tone."""
    packets = tone_then_dtmf_packets(1000, 0.1, 5)
    path = tmp_path / "t.pcap"
    write_rtp_pcap(path, packets)
    data = path.read_bytes()
    magic, major, minor, _, _, snap, link = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, snap, link) == (0xA1B2C3D4, 2, 4, 65535, 1)
    pos, seen = 24, []
    while pos < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        assert incl == orig and frame[12:14] == b"\x08\x00"
        assert _ipv4_checksum(frame[14:34]) == 0  # a valid header sums to 0xFFFF
        (udp_len,) = struct.unpack_from("!H", frame, 38)
        seen.append((sec + usec / 1e6, frame[42 : 34 + udp_len]))
        pos += 16 + incl
    assert [(round(t, 6), b) for t, b in seen] == [(round(t, 6), b) for t, b in packets]
    decoded = np.frombuffer(
        audioop.alaw2lin(b"".join(b[12:] for _, b in seen[:5]), 2), dtype=np.int16
    )
    assert abs(_peak_and_share(decoded)[0] - 1000) < 30


@pytest_twisted.ensureDeferred
async def test_sipp_uas_echoes_the_tone_a_peer_sends(
    peers: PeerFactory, sipp: SippFactory, tmp_path: Path
) -> None:
    """A peer calling sipp's uas with -rtp_echo hears its own 440 Hz tone back."""
    alice = await peers("alice", media_port_min=42000, media_port_max=42199)
    media_port = free_udp_port() & ~1
    run, port = sipp("uas", extra=["-rtp_echo", "-mp", str(media_port)], timeout=30)
    call = await alice.call(f"sip:echo@127.0.0.1:{port}")
    await within(call.wait_for_answer(), 10)
    assert call.stats()["remote"] == ("127.0.0.1", media_port)
    wav = tmp_path / "echo.wav"
    recording = call.record_wav(wav)
    sending = _tone(440, 1.0)
    sent = 0
    for i in range(len(sending) // 160):
        await within(call.send_audio(AudioFrame(sending[i * 160 : (i + 1) * 160])), 5)
        sent += 1
    await settle(0.2)  # the echo's last packets
    stats = call.stats()
    await within(call.hangup(), 10)
    await within(recording, 5)
    code = await run.wait(15)
    assert code == 0, f"sipp's uas scenario failed\n{run.report()}"

    assert stats["codec"] == "PCMU"
    samples = read_wav(wav)
    heard = int((_blocks_rms(samples) > SOUND_RMS).sum())
    assert heard >= 0.95 * sent, f"echoed {heard} frames with sound of {sent} sent\n{stats}"
    peak, share = _peak_and_share(samples)
    assert abs(peak - 440) <= 2, f"the echo's dominant frequency is {peak:.1f} Hz, not 440"
    assert share >= 0.9, f"only {share:.0%} of the echo's power is near 440 Hz"


@pytest_twisted.ensureDeferred
async def test_sipp_uac_pcap_plays_its_g711_capture_into_a_recording_peer(
    peers: PeerFactory, sipp_runs: list[SippRun], tmp_path: Path
) -> None:
    """sipp's uac_pcap scenario: the peer records ~7 s of non-silent PCMA and a DTMF '1'."""
    bob = await peers("bob", media_port_min=42200, media_port_max=42399)
    workdir = tmp_path / "sipp-uac_pcap"
    (workdir / "pcap").mkdir(parents=True)
    bundled = {name: SIP_TESTER_SHARE / name for name in ("g711a.pcap", "dtmf_2833_1.pcap")}
    for name, source in bundled.items():
        if not source.exists():
            pytest.fail(f"{source} is missing: reinstall the Debian package sip-tester")
        (workdir / "pcap" / name).symlink_to(source)
    capture_s = _capture_seconds(bundled["g711a.pcap"])

    run = _start_sipp(workdir, ["-sn", "uac_pcap"], f"127.0.0.1:{bob.port}")
    sipp_runs.append(run)
    incoming = await within(bob.wait_for_incoming(), 10)
    call = await within(incoming.accept(), 10)
    digits: list[str] = []
    call.on_dtmf(digits.append)
    wav = tmp_path / "uac_pcap.wav"
    recording = call.record_wav(wav)
    await within(call.wait_for_end(), 20)
    await within(recording, 5)
    stats = call.stats()
    code = await run.wait(10)
    assert code == 0, f"sipp's uac_pcap scenario failed\n{run.report()}"

    assert stats["codec"] == "PCMA", stats
    samples = read_wav(wav)
    duration = len(samples) / RATE
    assert abs(duration - capture_s) <= 0.25, (
        f"recorded {duration:.2f} s of a {capture_s:.2f} s capture\n{stats}"
    )
    sound = _blocks_rms(samples) > SOUND_RMS
    assert sound.mean() >= 0.5, f"only {sound.mean():.0%} of the recording is non-silent"
    assert float(np.sqrt((samples.astype(np.float64) ** 2).mean())) > SOUND_RMS
    assert digits == ["1"], f"DTMF received: {digits}\n{stats}"


@pytest_twisted.ensureDeferred
async def test_sipp_plays_a_known_pcma_tone_that_the_peer_records(
    peers: PeerFactory, sipp_runs: list[SippRun], tmp_path: Path
) -> None:
    """A 1 kHz A-law tone replayed by sipp is recorded at 1 kHz, in full, then DTMF '5'."""
    bob = await peers("bob", media_port_min=42400, media_port_max=42599)
    workdir = tmp_path / "sipp-tone"
    workdir.mkdir()
    packets = tone_then_dtmf_packets(1000, 1.0, 5)
    write_rtp_pcap(workdir / "tone.pcap", packets)

    scenario = ["-sf", str(SCENARIOS / "uac_pcap_tone.xml")]
    run = _start_sipp(workdir, scenario, f"127.0.0.1:{bob.port}")
    sipp_runs.append(run)
    incoming = await within(bob.wait_for_incoming(), 10)
    call = await within(incoming.accept(), 10)
    digits: list[str] = []
    call.on_dtmf(digits.append)
    wav = tmp_path / "tone.wav"
    recording = call.record_wav(wav)
    await within(call.wait_for_end(), 15)
    await within(recording, 5)
    stats = call.stats()
    code = await run.wait(10)
    assert code == 0, f"sipp's tone scenario failed\n{run.report()}"

    assert stats["codec"] == "PCMA", stats
    samples = read_wav(wav)
    tone_frames = int((_blocks_rms(samples) > SOUND_RMS).sum())
    assert 48 <= tone_frames <= 50, f"recorded {tone_frames} of 50 tone frames\n{stats}"
    peak, share = _peak_and_share(samples)
    assert abs(peak - 1000) <= 2, f"recorded {peak:.1f} Hz of a 1000 Hz tone"
    assert share >= 0.9, f"only {share:.0%} of the recording's power is near 1 kHz"
    assert digits == ["5"], f"DTMF received: {digits}\n{stats}"


def _capture_seconds(path: Path) -> float:
    """How much audio a pcap of G.711 RTP holds: payload bytes are samples."""
    data = path.read_bytes()
    pos, samples = 24, 0
    while pos < len(data):
        (incl,) = struct.unpack_from("<I", data, pos + 8)
        frame = data[pos + 16 : pos + 16 + incl]
        samples += len(frame) - 14 - 20 - 8 - 12
        pos += 16 + incl
    return samples / RATE
