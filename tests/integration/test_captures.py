"""Captures of real calls: pcap files read back by tshark, HEP packets by a collector.

Two SimplePeers make a call on 127.0.0.1; the messages alice's transports
send and receive are recorded with the transport tap
(``Transports.set_message_tap``) and her RTP with the media tap
(``set_rtp_tap``). The pcap files sipd writes are then read by tshark
(Debian's ``tshark``), which knows nothing of sipd: it must list exactly the
recorded SIP messages in their order (over UDP, and over TCP where it has to
reassemble the segments), and its RTP stream analysis must count the RTP
packets that were recorded. sngrep (Debian's ``sngrep``) reads the pcap of
a TCP call back. The HEP export is checked twice: by a UDP socket playing
the collector, which decodes every packet with the layout written out here,
and by sngrep listening for HEP, which writes what it decoded to a pcap
file for tshark (tshark 4.0 has no HEP dissector of its own).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol

from sipd.capture.hep import HepSender
from sipd.capture.pcap import pcap_bytes
from sipd.capture.records import Direction, RtpRecord, WireMessage
from sipd.media.protocol import set_rtp_tap
from sipd.media.tones import ToneGenerator
from tests.conftest import (
    PeerFactory,
    eventually,
    free_port_range,
    free_udp_port,
    get_reactor,
    settle,
    within,
)

TSHARK = "/usr/bin/tshark"
SNGREP = "/usr/bin/sngrep"
FRAMES = 25


def require(program: str) -> None:
    """Fail (never skip) clearly when a program the checks need is missing."""
    if not os.access(program, os.X_OK):
        package = Path(program).name
        pytest.fail(
            f"{program} is missing: install the Debian package {package} "
            f"(apt-get install {package}, or `make sysdeps`) to check sipd's captures"
        )


def tshark(*args: str) -> str:
    """Run tshark (failing the test clearly when it is missing); its standard output."""
    require(TSHARK)
    run = subprocess.run([TSHARK, *args], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, f"tshark {' '.join(args)} failed:\n{run.stderr}"
    return run.stdout


def start_line(data: bytes) -> tuple[str, str]:
    """(method, status) of a message as tshark's fields show them (one is empty)."""
    first = data.split(b"\r\n", 1)[0].decode()
    if first.startswith("SIP/2.0 "):
        return "", first.split(" ")[1]
    return first.split(" ")[0], ""


def sip_fields(pcap: Path, *extra: str) -> list[tuple[str, str]]:
    out = tshark("-r", str(pcap), *extra, "-Y", "sip", "-T", "fields",
                 "-e", "sip.Method", "-e", "sip.Status-Code")  # fmt: skip
    rows = []
    for line in out.splitlines():
        method, _, status = line.partition("\t")
        rows.append((method, status))
    return rows


async def recorded_call(
    peers: PeerFactory, transport: str, with_rtp: bool
) -> tuple[list[WireMessage], list[RtpRecord]]:
    """A call from alice to bob with a tone both ways; what alice's side recorded."""
    base = free_port_range(20)
    alice = await peers("alice", transport=transport, media_port_min=base,
                        media_port_max=base + 19)  # fmt: skip
    bob = await peers("bob", transport=transport)
    messages: list[WireMessage] = []
    rtp: list[RtpRecord] = []
    alice.coordinator.transports.set_message_tap(messages.append)
    alice_ports = range(base, base + 20)

    def rtp_tap(outgoing: bool, data: bytes, port: int, remote: tuple[str, int]) -> None:
        if port in alice_ports and data[1] not in range(200, 205):  # RTP, not RTCP
            direction = Direction.OUT if outgoing else Direction.IN
            rtp.append(RtpRecord(time.time(), direction, ("127.0.0.1", port), remote, data))

    if with_rtp:
        set_rtp_tap(rtp_tap)
    try:
        call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
        incoming = await within(bob.wait_for_incoming(), 5)
        answered = await within(incoming.accept(), 5)
        await within(call.wait_for_answer(), 5)
        tone = ToneGenerator(440.0)
        for _ in range(FRAMES):
            await within(call.send_audio(tone.next_frame()), 2)
        await within(call.hangup(), 5)
        await within(answered.wait_for_end(), 5)
        # The 200 for the BYE arrives after hangup() fires at the latest.
        await eventually(lambda: start_line(messages[-1].data) == ("", "200"), 3)
    finally:
        set_rtp_tap(None)
        alice.coordinator.transports.set_message_tap(None)
    return messages, rtp


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_calls_pcap_lists_exactly_its_sip_messages_in_order(
    peers: PeerFactory, tmp_path: Path, transport: str
) -> None:
    messages, _ = await recorded_call(peers, transport, with_rtp=False)
    expected = [start_line(m.data) for m in messages]
    methods = [m for m, _ in expected]
    assert methods[0] == "INVITE" and "ACK" in methods and "BYE" in methods, expected
    assert {m.transport for m in messages} == {transport}
    pcap = tmp_path / "call.pcap"
    pcap.write_bytes(pcap_bytes(messages))
    assert sip_fields(pcap) == expected


@pytest_twisted.ensureDeferred
async def test_sip_written_as_tcp_segments_is_reassembled_by_tshark(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """The UDP call's messages as one TLS connection, a 4 kB MESSAGE among them."""
    messages, _ = await recorded_call(peers, "udp", with_rtp=False)
    body = b"x" * 4000
    big = (
        b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nCall-ID: big\r\nCSeq: 9 MESSAGE\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 4000\r\n\r\n" + body
    )
    first = messages[0]
    streamed = [
        WireMessage(m.time, m.direction, "tls", first.local, first.remote, m.data, m.call_id)
        for m in messages
    ]
    streamed.insert(2, WireMessage(streamed[1].time, Direction.OUT, "tls", first.local,
                                   first.remote, big))  # fmt: skip
    pcap = tmp_path / "tcp.pcap"
    pcap.write_bytes(pcap_bytes(streamed))
    # TLS is written as the plain SIP it carried: tell tshark the port speaks SIP.
    decode = ("-d", f"tcp.port=={first.remote[1]},sip")
    assert sip_fields(pcap, *decode) == [start_line(m.data) for m in streamed]
    lengths = tshark("-r", str(pcap), *decode, "-Y", "sip.Method == MESSAGE", "-T", "fields",
                     "-e", "sip.Content-Length", "-e", "tcp.reassembled.length")  # fmt: skip
    assert lengths.split() == ["4000", str(len(big))], lengths


@pytest_twisted.ensureDeferred
async def test_rtp_in_the_pcap_shows_in_tsharks_stream_analysis(
    peers: PeerFactory, tmp_path: Path
) -> None:
    messages, rtp = await recorded_call(peers, "udp", with_rtp=True)
    sent = [r for r in rtp if r.direction is Direction.OUT]
    received = [r for r in rtp if r.direction is Direction.IN]
    assert len(sent) >= FRAMES and len(received) >= FRAMES // 2, (len(sent), len(received))
    pcap = tmp_path / "rtp.pcap"
    pcap.write_bytes(pcap_bytes([*messages, *rtp]))
    # The SDP in the capture lets tshark find the streams; the heuristic backs it up.
    out = tshark("-r", str(pcap), "-o", "rtp.heuristic_rtp:TRUE", "-q", "-z", "rtp,streams")
    counts = {}
    for line in out.splitlines():
        fields = line.split()
        # Start, End, Src IP, Src port, Dst IP, Dst port, SSRC, Payload, Pkts, ...
        if len(fields) > 8 and fields[2] == "127.0.0.1" and fields[3].isdigit():
            counts[(int(fields[3]), int(fields[5]))] = int(fields[8])
    local = sent[0].local[1]
    assert counts.get((local, sent[0].remote[1])) == len(sent), out
    assert counts.get((received[0].remote[1], local)) == len(received), out
    assert sip_fields(pcap) == [start_line(m.data) for m in messages]


class Collector(DatagramProtocol):
    """The test's HEP collector: keeps every datagram."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)


def decode_hep(packet: bytes) -> dict[int, bytes]:
    """The chunks of a HEP v3 packet, written here from the layout (not sipd's code)."""
    assert packet[:4] == b"HEP3" and struct.unpack("!H", packet[4:6])[0] == len(packet)
    chunks, offset = {}, 6
    while offset < len(packet):
        vendor, kind, length = struct.unpack_from("!HHH", packet, offset)
        assert vendor == 0
        chunks[kind] = packet[offset + 6 : offset + length]
        offset += length
    return chunks


@pytest_twisted.ensureDeferred
async def test_hep_export_delivers_every_message_of_a_call_to_the_collector(
    peers: PeerFactory,
) -> None:
    reactor = get_reactor()
    collector = Collector()
    port = reactor.listenUDP(0, collector, interface="127.0.0.1")
    sender = HepSender(reactor, ("127.0.0.1", port.getHost().port), node_id=2001)
    alice = await peers("alice")
    bob = await peers("bob")
    messages: list[WireMessage] = []

    def sink(message: WireMessage) -> None:
        messages.append(message)
        sender.send(message)

    alice.coordinator.transports.set_message_tap(sink)
    try:
        call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
        incoming = await within(bob.wait_for_incoming(), 5)
        answered = await within(incoming.accept(), 5)
        await within(call.wait_for_answer(), 5)
        await within(call.hangup(), 5)
        await within(answered.wait_for_end(), 5)
        await eventually(lambda: len(collector.packets) >= len(messages) >= 5, 3)
    finally:
        alice.coordinator.transports.set_message_tap(None)
        sender.close()
        await port.stopListening()
    assert (sender.sent, sender.errors) == (len(messages), 0)
    assert len(collector.packets) == len(messages)
    for message, packet in zip(messages, collector.packets, strict=True):
        chunks = decode_hep(packet)
        assert chunks[15] == message.data
        assert chunks[1] == b"\x02" and chunks[2] == b"\x11" and chunks[11] == b"\x01"
        src = (".".join(str(b) for b in chunks[3]), struct.unpack("!H", chunks[7])[0])
        dst = (".".join(str(b) for b in chunks[4]), struct.unpack("!H", chunks[8])[0])
        assert (src, dst) == (message.source, message.destination)
        assert struct.unpack("!I", chunks[12])[0] == 2001
        assert chunks[17].decode() == call.sip_call_id
        stamp = struct.unpack("!I", chunks[9])[0] + struct.unpack("!I", chunks[10])[0] / 1e6
        assert abs(stamp - message.time) < 1e-5


@pytest_twisted.ensureDeferred
async def test_sngrep_reads_the_pcap_of_a_tcp_call(peers: PeerFactory, tmp_path: Path) -> None:
    """sngrep parses sipd's pcap (TCP segments) and writes back the same SIP messages."""
    require(SNGREP)
    messages, _ = await recorded_call(peers, "tcp", with_rtp=False)
    pcap, out = tmp_path / "call.pcap", tmp_path / "sngrep.pcap"
    pcap.write_bytes(pcap_bytes(messages))
    run = subprocess.run(
        [SNGREP, "-N", "-F", "-q", "-I", str(pcap), "-O", str(out)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sip_fields(out) == [start_line(m.data) for m in messages]


def udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest_twisted.ensureDeferred
async def test_sngrep_as_the_hep_collector_decodes_every_message_of_a_call(
    peers: PeerFactory, tmp_path: Path
) -> None:
    """sngrep listening for HEP (``-L``) gets the call and writes each message with its
    addresses, ports and time: an independent decoder of sipd's HEP v3."""
    require(SNGREP)
    port = free_udp_port()
    out = tmp_path / "hep.pcap"
    proc = subprocess.Popen(
        [SNGREP, "-N", "-F", "-q", "-L", f"udp:127.0.0.1:{port}", "-O", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    sender = HepSender(get_reactor(), ("127.0.0.1", port), node_id=7)
    try:
        assert await eventually(lambda: udp_port_taken(port), 5), "sngrep did not listen"
        alice = await peers("alice")
        bob = await peers("bob")
        messages: list[WireMessage] = []

        def sink(message: WireMessage) -> None:
            messages.append(message)
            sender.send(message)

        alice.coordinator.transports.set_message_tap(sink)
        try:
            call = await within(alice.call(f"sip:bob@127.0.0.1:{bob.port}"), 5)
            incoming = await within(bob.wait_for_incoming(), 5)
            answered = await within(incoming.accept(), 5)
            await within(call.wait_for_answer(), 5)
            await within(call.hangup(), 5)
            await within(answered.wait_for_end(), 5)
            await eventually(lambda: start_line(messages[-1].data) == ("", "200"), 3)
        finally:
            alice.coordinator.transports.set_message_tap(None)
        await settle(0.5)  # sngrep reads what is queued
    finally:
        sender.close()
        proc.send_signal(signal.SIGTERM)  # by PID: only the sngrep this test started
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    fields = tshark("-r", str(out), "-Y", "sip", "-T", "fields", "-e", "frame.time_epoch",
                    "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport",
                    "-e", "sip.Method", "-e", "sip.Status-Code")  # fmt: skip
    rows = [line.split("\t") for line in fields.splitlines()]
    assert len(rows) == len(messages), (fields, proc.stderr.read() if proc.stderr else "")
    for message, row in zip(messages, rows, strict=True):
        method, status = start_line(message.data)
        assert row[5:] == [method, status]
        assert ((row[1], int(row[2])), (row[3], int(row[4]))) == (
            message.source,
            message.destination,
        )
        assert abs(float(row[0]) - message.time) < 1e-5
