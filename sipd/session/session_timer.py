"""RFC 4028 session timers, as pure functions of headers and settings.

A session timer keeps a call from outliving a peer that vanished without BYE:
one side (the *refresher*) re-sends the session (UPDATE, or re-INVITE when
the peer lacks UPDATE) every half interval, and either side ends the call
with BYE when the interval passes unrefreshed. These functions read and
write the headers (``Session-Expires: 1800;refresher=uac``, ``Min-SE``,
``Supported``/``Require: timer``) and negotiate the interval; the state table
decides when to refresh and when to give up, through timers its established
states own (see ``session_refresh``/``session_expiry`` in
:meth:`sipd.session.session.UnifiedSession.timer_deadline`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sipd.sip.message import Request, Response
from sipd.sip.transaction import new_branch

__all__ = [
    "MIN_SE_FLOOR",
    "SessionTimer",
    "answer_headers",
    "expiry_margin",
    "from_response",
    "interval_too_small",
    "offer_headers",
    "parse_session_expires",
    "refresh_headers",
    "retry_for_422",
    "supports_timer",
    "uas_timer",
]

#: RFC 4028 §4: Min-SE is never below 90 seconds.
MIN_SE_FLOOR = 90


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """A negotiated session interval and whether this side sends the refreshes.

    On the wire ``refresher=uac``/``uas`` names a side of the transaction the
    header is in, so the same session reads differently in a request we
    send and in one we answer; kept as ``we_refresh`` it reads one way.
    """

    interval: int
    we_refresh: bool

    def header(self, *, we_send_request: bool) -> str:
        """The Session-Expires value for a message of a transaction we are UAC of
        (``we_send_request``) or UAS of."""
        uac_refreshes = self.we_refresh == we_send_request
        return f"{self.interval};refresher={'uac' if uac_refreshes else 'uas'}"


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``1800;refresher=uas`` -> (1800, "uas"); None for a missing or unreadable value."""
    if not value:
        return None
    delta, *params = (part.strip() for part in value.split(";"))
    if not (delta.isascii() and delta.isdigit()) or len(delta) > 9:  # 1*DIGIT, ASCII only
        return None
    refresher = None
    for param in params:
        name, _, found = param.partition("=")
        if name.strip().lower() == "refresher" and found.strip().lower() in ("uac", "uas"):
            refresher = found.strip().lower()
    return int(delta), refresher


def _min_se(message: Request | Response) -> int:
    value = (message.headers.get("Min-SE") or "").split(";", 1)[0].strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else 0


def _tags(message: Request | Response, name: str) -> set[str]:
    return {
        tag.strip().lower()
        for value in message.headers.get_all(name)
        for tag in value.split(",")
        if tag.strip()
    }


def supports_timer(message: Request | Response) -> bool:
    """True when the message says its sender supports (or requires) session timers."""
    return "timer" in _tags(message, "Supported") | _tags(message, "Require")


def offer_headers(interval: int, min_se: int) -> list[tuple[str, str]]:
    """What our INVITE carries to ask for a session timer (RFC 4028 §7.1)."""
    return [("Session-Expires", str(interval)), ("Min-SE", str(min_se))]


def interval_too_small(request: Request, min_se: int) -> bool:
    """True when the request asks for a Session-Expires below our Min-SE (answer 422)."""
    parsed = parse_session_expires(request.headers.get("Session-Expires"))
    return parsed is not None and parsed[0] < min_se


def uas_timer(request: Request, interval: int, min_se: int) -> SessionTimer | None:
    """The timer we answer an INVITE (or a refresh) with, as the UAS of that request (§9).

    The request's interval wins when it asks for one (lowered to ours when
    larger, so a peer cannot make a call outlive it for a day; raised to
    either side's Min-SE);
    its refresher is kept when it names one, else the UAC refreshes when it
    supports timers and we do otherwise. A request without Session-Expires
    from a UA that supports timers gets none; from one that does not, we
    still time the session with our interval and refresh it ourselves.
    """
    parsed = parse_session_expires(request.headers.get("Session-Expires"))
    supported = supports_timer(request)
    if parsed is None:
        if supported or interval <= 0:
            return None
        return SessionTimer(max(interval, min_se), we_refresh=True)
    asked, refresher = parsed
    if interval > 0:
        asked = min(asked, interval)  # §9: the UAS may lower it, never below a Min-SE
    value = max(asked, min_se, _min_se(request))
    if refresher is None:
        refresher = "uac" if supported else "uas"
    elif refresher == "uac" and not supported:
        refresher = "uas"
    return SessionTimer(value, we_refresh=refresher == "uas")


def from_response(response: Response) -> SessionTimer | None:
    """The timer a 2xx to our INVITE or refresh settles (§7.2): none without Session-Expires.

    We sent the request, so ``refresher=uac`` (or no refresher) means we refresh.
    """
    parsed = parse_session_expires(response.headers.get("Session-Expires"))
    if parsed is None:
        return None
    interval, refresher = parsed
    return SessionTimer(interval, we_refresh=refresher != "uas")


def refresh_headers(timer: SessionTimer, min_se: int) -> list[tuple[str, str]]:
    """What our refresh (UPDATE or re-INVITE) carries (§7.4)."""
    return [("Session-Expires", timer.header(we_send_request=True)), ("Min-SE", str(min_se))]


def answer_headers(timer: SessionTimer | None, request: Request) -> list[tuple[str, str]]:
    """What our 2xx to an INVITE or a refresh carries (§9): the interval, and
    ``Require: timer`` when the other side supports timers."""
    if timer is None:
        return []
    headers = [("Session-Expires", timer.header(we_send_request=False))]
    if supports_timer(request):
        headers.append(("Require", "timer"))
    return headers


def expiry_margin(interval: int) -> float:
    """How long before the interval ends the non-refresher gives up (§10): min(32, I/3)."""
    return min(32.0, interval / 3)


def retry_for_422(request: Request, response: Response) -> Request | None:
    """The INVITE again asking for the 422's Min-SE (RFC 4028 §7.3), or None.

    Only when the 422 asks for more than we asked: a peer that keeps
    answering 422 to its own Min-SE gets no second retry.
    """
    if response.status != 422:
        return None
    asked = parse_session_expires(request.headers.get("Session-Expires"))
    wanted = (response.headers.get("Min-SE") or "").split(";", 1)[0].strip()
    if asked is None or not (wanted.isascii() and wanted.isdigit()) or len(wanted) > 9:
        return None
    if int(wanted) <= asked[0]:
        return None
    headers = request.headers.copy()
    cseq = request.cseq
    headers.set("CSeq", f"{cseq.number + 1} {cseq.method}")
    headers.pop_first_value("Via")
    headers.prepend("Via", str(request.top_via.with_param("branch", new_branch())))
    headers.set("Session-Expires", wanted)
    headers.set("Min-SE", wanted)
    return Request(request.method, request.uri, headers, request.body)
