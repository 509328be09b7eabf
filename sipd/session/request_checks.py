"""What a UAS refuses before it processes a request (RFC 3261 §8.2.2.3, §8.2.3, §21.4.7).

Pure functions of the request: :func:`refusal` returns the response to
send instead of processing it, or None. The dialog adapter calls it once
for every request it is about to handle, inside dialogs and outside them,
after method inspection (§8.2.1: a method we do not handle gets 405/501
first) and before anything else:

* ``Require`` naming an option we do not support: 420 Bad Extension listing
  them in ``Unsupported`` (§8.2.2.3; never for ACK or CANCEL);
* a body we cannot read where we read one (INVITE and UPDATE: SDP, directly
  or as a part of ``multipart/mixed``), or with a
  ``Content-Encoding`` we do not know: 415 Unsupported Media Type with
  ``Accept`` or ``Accept-Encoding`` (§8.2.3; a ``multipart/mixed`` body is
  read when one of its parts is of the type we read);
* an INVITE or an UPDATE with an offer whose ``Accept`` rules out
  ``application/sdp``: our answer could only be SDP, so 406 Not Acceptable
  (§21.4.7; §20.1: an empty Accept accepts nothing).

Max-Forwards is not looked at: 483 is for proxies (§16.3), and a UAS
processes a request with ``Max-Forwards: 0`` addressed to it.
"""

from __future__ import annotations

from typing import NamedTuple

from sipd.sip.body import SDP, unsupported_body
from sipd.sip.errors import SipParseError
from sipd.sip.grammar import get_param, parse_params
from sipd.sip.message import Request

__all__ = ["SUPPORTED_OPTIONS", "Refusal", "acceptable", "refusal", "unsupported_options"]

#: Option tags a ``Require`` may name: Replaces (RFC 3891), session timers (RFC 4028).
SUPPORTED_OPTIONS = frozenset({"replaces", "timer"})

#: The body types each method's body is read as (a multipart/mixed with such a part too).
#: Other methods' bodies are not read, so their type does not matter (a NOTIFY's
#: sipfrag is read leniently: an unreadable one reports no status).
_BODY_TYPES: dict[str, tuple[str, ...]] = {
    "INVITE": (SDP,),
    "UPDATE": (SDP,),
}
#: Methods whose 2xx carries our SDP (an answer, or an offer for a delayed one).
_ANSWERED_WITH_SDP = frozenset({"INVITE", "UPDATE"})


class Refusal(NamedTuple):
    """The response that refuses a request: status, reason phrase, extra headers."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def unsupported_options(request: Request) -> list[str]:
    """The ``Require`` option tags we do not support, in order (case-insensitive match)."""
    tags = request.headers.values("Require")
    return [tag for tag in tags if tag.lower() not in SUPPORTED_OPTIONS]


def acceptable(request: Request, media_type: str = SDP) -> bool:
    """Whether the request's ``Accept`` admits ``media_type`` (RFC 3261 §20.1).

    No Accept header means ``application/sdp`` (§20.1); an empty one admits
    nothing. ``type/*`` and ``*/*`` match; a range with ``q=0`` does not.
    """
    values = request.headers.get_all("Accept")
    if not values:
        return media_type == SDP
    kind, _, _ = media_type.partition("/")
    for value in request.headers.values("Accept"):
        media_range, _, ptext = value.partition(";")
        media_range = media_range.strip().lower()
        if media_range not in (media_type, f"{kind}/*", "*/*"):
            continue
        try:
            q = get_param(parse_params(ptext), "q")
            if q is None or float(q) > 0:
                return True
        except (SipParseError, ValueError):
            return True  # a q we cannot read does not rule the type out
    return False


def refusal(request: Request) -> Refusal | None:
    """The response refusing ``request`` before it is processed, or None to go on."""
    method = request.method
    if method in ("ACK", "CANCEL"):
        return None  # §8.2.2.3: their Require is ignored, and neither is answered so
    unknown = unsupported_options(request)
    if unknown:
        return Refusal(420, "Bad Extension", (("Unsupported", ", ".join(unknown)),))
    accepted = _BODY_TYPES.get(method)
    if accepted is not None and request.body:
        encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", ""):
            why = f"Unsupported Content-Encoding {encoding[:40]}"
            return Refusal(415, why, (("Accept-Encoding", "identity"),))
        problem = unsupported_body(request, accepted)
        if problem is not None:
            why = f"Unsupported Media Type ({problem[:60]})"
            return Refusal(415, why, (("Accept", ", ".join(accepted)),))
    answers_with_sdp = method in _ANSWERED_WITH_SDP and (method == "INVITE" or request.body)
    if answers_with_sdp and not acceptable(request, SDP):
        return Refusal(406, f"Not Acceptable ({SDP} is what we answer with)")
    return None
