"""What crossed the wire for one call, as records a capture file or a collector can take.

The transports hand every SIP message they send or receive to a tap (when one
is set) as a :class:`WireMessage`; the media path can do the same for RTP as
:class:`RtpRecord`. The console keeps them per call; :mod:`sipd.capture.pcap`
writes them as a pcap file Wireshark and sngrep open, and
:mod:`sipd.capture.hep` sends them to a Homer collector (HEP v3).
"""

from sipd.capture.records import Direction, RtpRecord, WireMessage

__all__ = ["Direction", "RtpRecord", "WireMessage"]
