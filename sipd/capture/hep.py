"""HEP v3 (the Homer Encapsulation Protocol, EEP) export of SIP messages to a collector.

A HEP v3 packet is the 4 bytes ``HEP3``, a 16-bit total length (header
included), then chunks: each a 16-bit vendor id (0 = the generic chunks
below), a 16-bit chunk type, a 16-bit length (its own 6-byte header
included) and the value, all in network byte order. sipd writes these
generic chunks, in this order:

====  ===========================  ==========================================
type  what                         value
====  ===========================  ==========================================
1     IP protocol family           uint8: 2 (IPv4) or 10 (IPv6)
2     IP protocol id               uint8: 17 (UDP) or 6 (TCP, TLS)
3, 4  IPv4 source, destination     4 bytes each (5, 6 for IPv6: 16 bytes)
7, 8  source, destination port     uint16 each
9     timestamp, seconds           uint32 (Unix time)
10    timestamp, microseconds      uint32
11    protocol type                uint8: 1 (SIP), 4 (RTP)
12    capture agent id             uint32 (the config's ``node_id``)
15    payload                      the message as sent or received
17    correlation id               the Call-ID unless another is given
====  ===========================  ==========================================

:func:`hep3_packet` is the sans-I/O encoder; :class:`HepSender` sends each
packet in one UDP datagram from an ephemeral port. Exporting is best
effort: a send that fails is counted (``errors``), logged at most once a
minute, and never reaches the caller, whose call must not notice a
collector that is down.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from sipd.capture.records import RtpRecord, WireMessage
from sipd.errors import SipdError
from sipd.logs import Logger

__all__ = ["HepError", "HepSender", "hep3_packet", "parse_hep_address"]

_log = Logger()

FAMILY_IPV4 = 2
FAMILY_IPV6 = 10
PROTO_SIP = 1
PROTO_RTP = 4
_MAX_PACKET = 0xFFFF
#: Seconds between two log lines about failed sends.
_LOG_EVERY = 60.0


class HepError(SipdError):
    """A HEP export setting cannot be used."""


def hep3_packet(
    record: WireMessage | RtpRecord, node_id: int, correlation_id: str | None = None
) -> bytes:
    """One HEP v3 packet carrying ``record`` (see the module's table).

    The correlation id defaults to the message's Call-ID (Homer groups a
    call's messages by it); an RTP record carries none unless given one.
    Raises :class:`HepError` for a record too big for one packet.
    """
    src_ip = _ip(record.source[0])
    dst_ip = _ip(record.destination[0])
    if src_ip.version != dst_ip.version:
        src_ip, dst_ip = _v6(src_ip), _v6(dst_ip)
    v4 = src_ip.version == 4
    if isinstance(record, WireMessage):
        proto = 6 if record.transport in ("tcp", "tls") else 17
        kind = PROTO_SIP
        if correlation_id is None:
            correlation_id = record.call_id or None
    else:
        proto, kind = 17, PROTO_RTP
    seconds = int(record.time)
    micros = min(round((record.time - seconds) * 1_000_000), 999_999)
    chunks = [
        _chunk(1, struct.pack("!B", FAMILY_IPV4 if v4 else FAMILY_IPV6)),
        _chunk(2, struct.pack("!B", proto)),
        _chunk(3 if v4 else 5, src_ip.packed),
        _chunk(4 if v4 else 6, dst_ip.packed),
        _chunk(7, struct.pack("!H", record.source[1])),
        _chunk(8, struct.pack("!H", record.destination[1])),
        _chunk(9, struct.pack("!I", max(seconds, 0))),
        _chunk(10, struct.pack("!I", max(micros, 0))),
        _chunk(11, struct.pack("!B", kind)),
        _chunk(12, struct.pack("!I", node_id & 0xFFFFFFFF)),
        _chunk(15, record.data),
    ]
    if correlation_id:
        chunks.append(_chunk(17, correlation_id.encode("utf-8")))
    body = b"".join(chunks)
    total = 6 + len(body)
    if total > _MAX_PACKET:
        raise HepError(
            f"a {len(record.data)}-byte message does not fit in one HEP packet "
            f"({_MAX_PACKET} bytes at most); it is not exported"
        )
    return b"HEP3" + struct.pack("!H", total) + body


def parse_hep_address(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as (host, port), for the ``hep.address`` setting."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HepError(
            f"hep address {text!r} is not host:port: write the collector as "
            '"192.0.2.10:9060" or "[2001:db8::1]:9060"'
        )
    return host, int(port)


class HepSender(DatagramProtocol):
    """Sends each record to a HEP collector over UDP (``listenUDP`` on port 0).

    ``address`` is (host, port) with an IP literal host; the socket binds
    the family the collector needs. ``sent`` and ``errors`` count packets.
    """

    noisy = False

    def __init__(self, reactor: Any, address: tuple[str, int], node_id: int) -> None:
        self.address = (str(_ip(address[0])), address[1])
        self.node_id = node_id
        self.sent = 0
        self.errors = 0
        self._reactor = reactor
        self._logged_at = -_LOG_EVERY
        interface = "::" if ":" in self.address[0] else "0.0.0.0"
        if self.address[0].startswith("127.") or self.address[0] == "::1":
            interface = self.address[0]
        self._port = reactor.listenUDP(0, self, interface=interface)

    def send(self, record: WireMessage | RtpRecord, correlation_id: str | None = None) -> None:
        """Export ``record``; a failure is counted, never raised."""
        try:
            packet = hep3_packet(record, self.node_id, correlation_id)
            if self.transport is None:
                raise OSError("the HEP socket is closed")
            self.transport.write(packet, self.address)
        except Exception as exc:  # the caller's call must never see the collector's trouble
            self.errors += 1
            now = self._reactor.seconds()
            if now - self._logged_at >= _LOG_EVERY:
                self._logged_at = now
                _log.warn(
                    "HEP export to {address} failed ({error}); {errors} packet(s) lost so far",
                    address="{}:{}".format(*self.address),
                    error=exc,
                    errors=self.errors,
                )
            return
        self.sent += 1

    def connectionRefused(self) -> None:
        """An ICMP error from an earlier datagram (no collector listening): counted."""
        self.errors += 1

    def close(self) -> Any:
        """Stop sending and release the socket (a Deferred or None, as stopListening)."""
        port, self._port = self._port, None
        return None if port is None else port.stopListening()


def _chunk(kind: int, value: bytes) -> bytes:
    length = 6 + len(value)
    if length > _MAX_PACKET:
        raise HepError(
            f"a {len(value)}-byte message does not fit in one HEP packet "
            f"({_MAX_PACKET} bytes at most); it is not exported"
        )
    return struct.pack("!HHH", 0, kind, length) + value


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise HepError(
            f"{host!r} is not an IP address: HEP carries addresses, give the collector "
            "as an IP literal and record messages with their IP addresses"
        ) from None


def _v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address("::ffff:" + str(address))
