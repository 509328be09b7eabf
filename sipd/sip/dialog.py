"""SIP dialogs (RFC 3261 §12): identity, route set, target and sequence numbers.

A :class:`Dialog` is plain data plus the rules for building requests inside
it; it sends nothing itself. The dialog adapter in :mod:`sipd.session` owns
the I/O and the timers.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from sipd.sip.address import NameAddr, parse_name_addr
from sipd.sip.errors import BadRequest
from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response
from sipd.sip.uri import Uri

__all__ = ["Dialog", "DialogId", "DialogRole", "DialogState"]


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID plus the local and remote tags (RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str

    def __str__(self) -> str:
        return f"{self.call_id};{self.local_tag};{self.remote_tag}"


class DialogRole(enum.Enum):
    """Which side created the dialog."""

    UAC = "UAC"
    UAS = "UAS"


class DialogState(enum.Enum):
    """Early (after a 1xx with tag), confirmed (after a 2xx) or terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def _route_set(headers: Headers, reverse: bool) -> list[NameAddr]:
    routes = [parse_name_addr(v) for v in headers.values("Record-Route")]
    if reverse:
        routes.reverse()
    return routes


def _remote_target(message: Request | Response) -> Uri:
    contacts = message.contacts
    if not contacts:
        raise BadRequest("dialog-creating message has no Contact")
    return contacts[0].uri


@dataclass(slots=True)
class Dialog:
    """The state of one dialog, as §12.1 and §12.2 define it."""

    id: DialogId
    role: DialogRole
    state: DialogState
    local: NameAddr
    remote: NameAddr
    remote_target: Uri
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    local_contact: str = ""
    secure: bool = False
    #: The transport the dialog was set up over ("udp", "tcp", "tls"; None: not
    #: known): in-dialog requests use it when their next hop names none, so a
    #: UDP caller of a UA that speaks TLS is not sent its BYE over TLS.
    transport: str | None = None

    @classmethod
    def from_uac(cls, request: Request, response: Response, local_contact: str) -> Dialog:
        """The dialog a UAC learns from a 1xx-with-tag or 2xx (§12.1.2)."""
        to = response.to
        if to.tag is None:
            raise BadRequest("response creating a dialog has no To tag")
        local = request.from_
        state = DialogState.CONFIRMED if response.is_success else DialogState.EARLY
        return cls(
            id=DialogId(request.call_id, local.tag or "", to.tag),
            role=DialogRole.UAC,
            state=state,
            local=local,
            remote=to,
            remote_target=_remote_target(response),
            route_set=_route_set(response.headers, reverse=True),
            local_seq=request.cseq.number,
            remote_seq=None,
            local_contact=local_contact,
            secure=request.uri.scheme == "sips",
        )

    @classmethod
    def from_uas(
        cls, request: Request, local_tag: str, local_contact: str, *, confirmed: bool = False
    ) -> Dialog:
        """The dialog a UAS creates when it answers with a tag (§12.1.1)."""
        remote = request.from_
        return cls(
            id=DialogId(request.call_id, local_tag, remote.tag or ""),
            role=DialogRole.UAS,
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            local=request.to.with_tag(local_tag),
            remote=remote,
            remote_target=_remote_target(request),
            route_set=_route_set(request.headers, reverse=False),
            local_seq=random.randint(1, 2**16),
            remote_seq=request.cseq.number,
            local_contact=local_contact,
            secure=request.uri.scheme == "sips",
        )

    def update_from_uac_response(self, response: Response) -> None:
        """Confirm an early dialog on 2xx; a 2xx refreshes the target (§12.2.1.2)."""
        if response.is_success:
            if self.state is DialogState.EARLY:
                # The route set is recomputed from the 2xx (§13.2.2.4).
                self.route_set = _route_set(response.headers, reverse=True)
            self.state = DialogState.CONFIRMED
        contacts = response.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def check_remote_cseq(self, request: Request) -> bool:
        """Accept a request's CSeq and record it; False means answer 500 (§12.2.2)."""
        number = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and number <= self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def next_hop(self) -> Uri:
        """Where an in-dialog request goes: the first route or the remote target."""
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target

    def create_request(
        self,
        method: str,
        via: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
    ) -> Request:
        """Build an in-dialog request (§12.2.1.1).

        ``via`` is the complete top Via value including a fresh branch. ACK and
        CANCEL reuse the CSeq number they are given; other methods take the
        next local sequence number.
        """
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        target = self.remote_target
        routes = [str(r) for r in self.route_set]
        if self.route_set and self.route_set[0].uri.param("lr") is None:
            # Strict router (RFC 2543 style): it becomes the Request-URI and the
            # remote target goes last in the Route header.
            target = self.route_set[0].uri
            routes = [str(r) for r in self.route_set[1:]] + [f"<{self.remote_target}>"]
        h = Headers()
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local))
        h.add("To", str(self.remote))
        h.add("Call-ID", self.id.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for route in routes:
            h.add("Route", route)
        if method not in ("BYE", "CANCEL", "ACK") and self.local_contact:
            h.add("Contact", self.local_contact)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return Request(method, target, h, body)
