"""A packet capture of loopback UDP for the interop tests, without tcpdump.

:class:`LoopbackCapture` opens a raw ``AF_PACKET`` socket on ``lo`` (root,
or CAP_NET_RAW, is needed) and keeps the UDP datagrams whose source or
destination port is one the test names, e.g. every port of sipd's media
range. It reads on the reactor (``addReader``), so it never blocks it.
What it sees is what the kernel carried between the two programs: neither
sipd's nor baresip's own code is involved, which makes it an independent
witness of whether the media was encrypted.

The RTP helpers below parse the RFC 3550 header by hand and decode G.711
µ-law with the standard library's ``audioop``, so the question "does the
wire carry the tone in the clear?" is answered without sipd's media code.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    if sys.version_info >= (3, 13):
        import audioop_lts as audioop  # pragma: no cover
    else:
        import audioop

__all__ = [
    "Datagram",
    "LoopbackCapture",
    "RtpPacket",
    "decode_pcmu",
    "parse_rtp",
    "tone_share",
]

ETH_P_IP = 0x0800
#: Receive buffer for the raw socket: all loopback traffic lands in it.
RCVBUF = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP datagram seen on ``lo``."""

    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """The fields of an RTP packet the tests look at (RFC 3550 §5.1)."""

    payload_type: int
    sequence: int
    ssrc: int
    header_length: int
    #: What follows the header: for SRTP the encrypted payload and the auth tag.
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """The RTP packet in ``data``, or None for RTCP, STUN or anything else.

    RTCP (packet types 200-204 in the second byte, RFC 5761 §4) is left
    out; SRTP keeps the RTP header in the clear, so it parses too.
    """
    if len(data) < 12 or data[0] >> 6 != 2 or 200 <= data[1] <= 204:
        return None
    count = data[0] & 0x0F
    length = 12 + 4 * count
    if data[0] & 0x10:  # header extension
        if len(data) < length + 4:
            return None
        length += 4 + 4 * struct.unpack_from("!H", data, length + 2)[0]
    end = len(data)
    if data[0] & 0x20 and end > length:  # padding
        end -= data[-1]
    if end < length:
        return None
    seq, _, ssrc = struct.unpack_from("!HII", data, 2)
    return RtpPacket(data[1] & 0x7F, seq, ssrc, length, data[length:end])


def decode_pcmu(payloads: Iterable[bytes], trailer: int = 0) -> NDArray[np.int16]:
    """G.711 µ-law payloads decoded to 16-bit linear samples, in the order given.

    ``trailer`` bytes are cut from each payload first (an SRTP auth tag).
    """
    pcm = b"".join(audioop.ulaw2lin(p[: len(p) - trailer] if trailer else p, 2) for p in payloads)
    return np.frombuffer(pcm, dtype=np.int16).copy()


def tone_share(samples: NDArray[np.int16], freq: float, rate: int = 8000) -> float:
    """The share of the signal's power within 25 Hz of ``freq`` (0 for silence).

    A clear G.711 tone holds nearly all of it; encrypted bytes decoded as
    µ-law are white noise, which puts about 50/4000 of its power there.
    """
    x = samples.astype(np.float64)
    if len(x) == 0:
        return 0.0
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = float(power.sum())
    if not total or math.isnan(total):
        return 0.0
    return float(power[np.abs(freqs - freq) <= 25].sum() / total)


@implementer(IReadDescriptor)
@dataclass(eq=False)
class LoopbackCapture:
    """UDP datagrams on ``lo`` to or from ``ports``, read on the reactor.

    ``start()`` before the traffic, ``stop()`` after; ``datagrams`` holds
    what was seen. Each datagram is kept once: ``lo`` shows every packet
    both as sent and as received, and the sent copy is skipped.
    """

    ports: frozenset[int]
    datagrams: list[Datagram] = field(default_factory=list)
    #: Frames that were not IPv4/UDP or were cut short (not an error).
    ignored: int = 0
    _sock: socket.socket | None = None
    _reactor: Any = None

    @classmethod
    def of_ports(cls, ports: Iterable[int]) -> LoopbackCapture:
        return cls(frozenset(ports))

    # -- IReadDescriptor -------------------------------------------------------------
    def fileno(self) -> int:
        return -1 if self._sock is None else self._sock.fileno()

    def logPrefix(self) -> str:
        return "LoopbackCapture"

    def doRead(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(1000):  # yield to the reactor now and then
            try:
                frame, address = sock.recvfrom(65535)
            except BlockingIOError:
                return
            if address[2] == socket.PACKET_OUTGOING:
                continue
            self._frame(frame)

    def connectionLost(self, reason: object) -> None:
        self._close()

    # -- control ---------------------------------------------------------------------
    def start(self) -> LoopbackCapture:
        """Open the raw socket on ``lo``; fail the test clearly if that is not allowed."""
        from twisted.internet import reactor

        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        except PermissionError:
            pytest.fail(
                "the capture needs a raw AF_PACKET socket on lo: run the interop tests "
                "as root or give python CAP_NET_RAW"
            )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind(("lo", ETH_P_IP))
        sock.setblocking(False)
        self._sock, self._reactor = sock, reactor
        reactor.addReader(self)
        return self

    def stop(self) -> list[Datagram]:
        """Read what is queued, close the socket, and return the datagrams."""
        if self._sock is not None:
            self.doRead()
            self._close()
        return self.datagrams

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._reactor is not None:
                self._reactor.removeReader(self)
            with contextlib.suppress(OSError):
                sock.close()

    def _frame(self, packet: bytes) -> None:
        # SOCK_DGRAM on lo: the frame starts at the IPv4 header.
        if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 17:
            self.ignored += 1
            return
        ihl = 4 * (packet[0] & 0x0F)
        flags_fragment = struct.unpack_from("!H", packet, 6)[0]
        if flags_fragment & 0x1FFF or len(packet) < ihl + 8:
            self.ignored += 1  # a later fragment: no UDP header of its own
            return
        sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
        if sport not in self.ports and dport not in self.ports:
            return
        src = socket.inet_ntoa(packet[12:16])
        dst = socket.inet_ntoa(packet[16:20])
        payload = packet[ihl + 8 : ihl + max(length, 8)]
        self.datagrams.append(Datagram((src, sport), (dst, dport), payload))

    # -- views -------------------------------------------------------------------------
    def sent_from(self, ports: Iterable[int]) -> list[Datagram]:
        wanted = set(ports)
        return [d for d in self.datagrams if d.src[1] in wanted]

    def sent_to(self, ports: Iterable[int]) -> list[Datagram]:
        wanted = set(ports)
        return [d for d in self.datagrams if d.dst[1] in wanted]
