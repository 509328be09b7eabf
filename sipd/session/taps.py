"""Recording SIP at the transport edge: every message sent and received, as a WireMessage.

The console and the captures need the bytes exactly as they crossed the
wire, with both addresses and the transport, so the tap sits where the
transports send and parse (:attr:`sipd.transport.receive.Receiver.tap`), not
in the transaction layer (which would miss retransmissions, stateless
answers and messages no transaction took). It costs one ``is None`` check
per message while nobody records; :meth:`Transports.set_message_tap
<sipd.session.transports.Transports.set_message_tap>` turns it on for UDP
and for every stream transport, including those opened later.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from sipd.capture.records import Direction, WireMessage
from sipd.sip.message import Request, Response
from sipd.transport.receive import Addr, MessageTap

__all__ = ["WireSink", "call_id_of", "transport_tap"]

#: Where recorded messages go (the console's recorder, a HEP sender...).
WireSink = Callable[[WireMessage], None]

#: The Call-ID header (or its compact form ``i``) at the start of a line.
_CALL_ID = re.compile(rb"\r?\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


def call_id_of(data: bytes) -> str:
    """The Call-ID of a message we send, read from its bytes ("" if it has none).

    Outgoing messages are recorded as bytes (the transports never see them
    parsed); a search of the header section is enough, since we wrote them.
    """
    end = data.find(b"\r\n\r\n")
    found = _CALL_ID.search(data, 0, end if end >= 0 else len(data))
    return found.group(1).strip().decode("utf-8", "replace") if found else ""


def transport_tap(
    kind: str,
    local: Callable[[], Addr],
    sink: WireSink,
    wall_clock: Callable[[], float] = time.time,
) -> MessageTap:
    """A transport's tap that turns each message into a :class:`WireMessage` for ``sink``.

    ``local`` names our bound address for that transport (asked once, when
    the first message passes; ``("0.0.0.0", 0)`` while it cannot tell, e.g.
    a TLS transport that only connects out). Failures of ``sink`` are its own
    business: they must not break sending or receiving, so they are dropped.
    """
    bound: list[Addr] = []

    def local_address() -> Addr:
        if not bound:
            try:
                host, port = local()
            except Exception:  # not bound (yet): recorded with an unknown address
                return ("0.0.0.0", 0)
            bound.append((host, port))
        return bound[0]

    def tap(outgoing: bool, data: bytes, remote: Addr, message: Request | Response | None) -> None:
        try:
            call_id = call_id_of(data) if message is None else message.headers.get("Call-ID") or ""
            sink(
                WireMessage(
                    wall_clock(),
                    Direction.OUT if outgoing else Direction.IN,
                    kind,
                    local_address(),
                    (str(remote[0]).strip("[]"), int(remote[1])),
                    data,
                    call_id,
                )
            )
        except Exception:
            pass

    return tap
