"""Every row of the default call state table, taken by a real ``UnifiedSession``.

No sockets: each session gets fake ports (:mod:`tests.unit.session_fakes`)
that record the commands it gives, and a :class:`~twisted.internet.task.Clock`.
For every row and every role that reaches the row's state, a fresh session is
brought into that state by a recipe of events, the row's event is posted (or,
for a timer's event, the clock is advanced until that timer of the state
fires), and the test checks that exactly that row was taken, that the commands
its actions gave are the ones the row's actions name, and what the state
timers did. The session is then driven to a final state, where no timer may be
left.

By default both roles end up with an RFC 4028 session timer that we refresh
(the UAC's 2xx grants the 1800 s it asks for; the UAS's INVITE does not
support timers, so we time it with our own interval) and a media timeout of
60 s in Active; the events of the timer rows prepare what they need (who
refreshes, a short interval, the media timeout).

A row added to the table without a recipe for its state or an event for its
guards fails :func:`test_every_row_is_exercised`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from sipd.errors import CallFailed, CallStateError, StateTableError
from sipd.session import events as ev
from sipd.session.failures import ERROR_TYPES
from sipd.session.table_model import Role, Row
from tests.unit.session_fakes import (
    G729,
    PEER_HOST,
    PEER_PORT,
    Call,
    World,
    answer_sdp,
    load_call_table,
    offer_sdp,
    sip_request,
    sip_response,
)

TABLE = load_call_table(None)
CAROL = "sip:carol@192.0.2.30"
Key = tuple[str, tuple[str, ...]]


class Txn:
    """Stands in for the server transaction a request came on (the fakes only pass it back)."""


def new_txn() -> Any:
    return Txn()


@dataclass(frozen=True)
class Make:
    """How to make an event for one (event, guards): ``prepare`` runs on the fresh call."""

    build: Callable[[Call], ev.CallEvent] | None  # None: the state's timer delivers it
    prepare: Callable[[Call], None] | None = None


TIMER = Make(None)

#: Header lines: the peer lists UPDATE (so refreshes are UPDATEs) and supports timers.
ALLOW_UPDATE = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, REFER, NOTIFY"
PEER_TIMER = "Supported: timer"


def _session_timer(
    interval: int, *, we_refresh: bool, allow: str = ALLOW_UPDATE
) -> Callable[[Call], None]:
    """The session will have an RFC 4028 timer of ``interval`` s, refreshed by us or the peer.

    UAC: the peer's 2xx says so (``refresher`` names the side of our INVITE);
    UAS: the peer's INVITE asks for it (``refresher`` names the peer's side). The peer's
    re-INVITEs ask for the same.
    """

    def prepare(call: Call) -> None:
        call.request_extra = "\r\n".join(
            [f"Session-Expires: {interval};refresher={'uas' if we_refresh else 'uac'}", PEER_TIMER]
        )
        if call.session.role is Role.UAC:
            side = "uac" if we_refresh else "uas"
            lines = [f"Session-Expires: {interval};refresher={side}", "Require: timer", allow]
            call.answer_extra = "\r\n".join(line for line in lines if line)
        else:
            side = "uas" if we_refresh else "uac"
            lines = [f"Session-Expires: {interval};refresher={side}", PEER_TIMER, allow]
            extra = "\r\n".join(line for line in lines if line)
            call.signalling.invite_request = sip_request("INVITE", offer_sdp(), extra=extra)

    return prepare


def _refresh_due(call: Call) -> None:
    """We refresh a 120 s session: the refresh is due at 60 s, before anything else."""
    call.configure(media_timeout=0)
    _session_timer(120, we_refresh=True)(call)


def _expiring(call: Call) -> None:
    """The peer refreshes a 2 s session (min_se 1, for the test): it expires at 2 - 2/3 s.

    That is before the glare wait of HoldGlare/ResumeGlare, fixed here at its longest for
    the side that does not own the Call-ID (RFC 3261 §14.1: 0-2 s), which would otherwise
    be drawn at random and could fire first.
    """
    call.configure(media_timeout=0, min_se=1)
    _session_timer(2, we_refresh=False)(call)
    call.session._glare = (call.world.clock.seconds(), 1.99)


def _media_timeout(call: Call) -> None:
    """A 5 s media timeout; the fake stream never hears from the peer."""
    call.configure(media_timeout=5)


def _answered(call: Call) -> ev.CallEvent:
    """The peer's 2xx with its answer to our offer (and its session timer, ``answer_extra``)."""
    body = answer_sdp(call.signalling.sent_sdp)
    return ev.Answered(sip_response(200, "OK", body, extra=call.answer_extra))


def _remote_refresh(call: Call) -> ev.CallEvent:
    """The peer refreshes with an UPDATE without a body, asking to refresh 120 s itself."""
    extra = f"Session-Expires: 120;refresher=uac\r\n{PEER_TIMER}"
    return ev.RemoteRefresh(sip_request("UPDATE", cseq=2, extra=extra), new_txn())


def _refresh_answered(call: Call) -> ev.CallEvent:
    """The 2xx to our refresh UPDATE: 120 s, and we go on refreshing."""
    extra = "Session-Expires: 120;refresher=uac\r\nRequire: timer"
    return ev.RefreshAnswered(sip_response(200, "OK", method="UPDATE", extra=extra))


def _delayed_offer(call: Call) -> None:
    call.signalling.invite_request = sip_request("INVITE")  # no SDP: our 200 makes the offer


def _unusable_offer(call: Call) -> None:
    call.signalling.invite_request = sip_request("INVITE", offer_sdp(codecs=[G729]))


def _ack_with_answer(call: Call) -> ev.CallEvent:
    """An ACK; it answers the offer in our 200 when the INVITE had none (delayed offer)."""
    due = call.session.negotiation is None
    return ev.AckReceived(sip_request("ACK", answer_sdp(call.signalling.sent_sdp) if due else b""))


def _reinvite(body: bytes) -> Make:
    def build(call: Call) -> ev.CallEvent:
        request = sip_request("INVITE", body, cseq=2, extra=call.request_extra)
        return ev.RemoteReinvite(request, new_txn())

    return Make(build)


def _refer(allowed: bool) -> Make:
    request = sip_request("REFER", extra=f"Refer-To: <{CAROL}>")
    return Make(lambda call: ev.ReferReceived(request, new_txn(), CAROL, allowed=allowed))


def _const(event: ev.CallEvent) -> Make:
    return Make(lambda call: event)


#: An event for each (event, guards) of the table that takes that row and not an earlier one.
EVENTS: dict[Key, Make] = {
    ("MakeCall", ()): _const(ev.MakeCall()),
    ("Provisional", ()): Make(lambda c: ev.Provisional(sip_response(180, "Ringing"))),
    ("Answered", ("AnswerAcceptable",)): Make(_answered),
    ("Answered", ()): Make(lambda c: ev.Answered(sip_response(200, "OK"))),  # no SDP answer
    ("AnswerRefused", ()): _const(ev.AnswerRefused(403, "Forbidden")),
    ("Rejected", ("RedirectAllowed",)): Make(
        lambda c: ev.Rejected(302, "Moved", sip_response(302, "Moved", contact=CAROL))
    ),
    ("Rejected", ("RequestTerminated",)): Make(
        lambda c: ev.Rejected(487, "Request Terminated", sip_response(487, "Request Terminated"))
    ),
    ("Rejected", ()): Make(lambda c: ev.Rejected(486, "Busy Here", sip_response(486, "Busy Here"))),
    ("InviteTimeout", ("TransportBroke",)): _const(
        ev.InviteTimeout(503, "Transport Error: TLS to 127.0.0.1:5061 failed", True)
    ),
    ("InviteTimeout", ("TimedOut",)): _const(ev.InviteTimeout(408, "Request Timeout")),
    ("InviteTimeout", ()): _const(ev.InviteTimeout(503, "Service Unavailable")),
    ("RingTimeout", ()): TIMER,
    ("GlareRetry", ()): TIMER,
    ("HangUp", ()): _const(ev.HangUp()),
    ("Hold", ()): _const(ev.Hold()),
    ("Resume", ()): _const(ev.Resume()),
    ("IncomingCall", ("HandlerAnswers",)): _const(ev.IncomingCall(offer=False)),
    ("IncomingCall", ("OfferUnusable",)): Make(
        lambda c: ev.IncomingCall(offer=True), prepare=_unusable_offer
    ),
    ("IncomingCall", ()): _const(ev.IncomingCall(offer=True)),
    ("ReplacingCall", ()): _const(ev.ReplacingCall()),
    ("Accept", ("OfferAcceptable",)): _const(ev.Accept()),
    ("Accept", ()): Make(lambda c: ev.Accept(), prepare=_unusable_offer),
    ("Reject", ()): _const(ev.Reject(486, "Busy Here")),
    ("RemoteCancel", ()): Make(lambda c: ev.RemoteCancel(sip_request("CANCEL"))),
    ("AckReceived", ("AckAnswerUsable",)): Make(_ack_with_answer),
    ("AckReceived", ()): Make(lambda c: ev.AckReceived(sip_request("ACK")), _delayed_offer),
    ("AckTimeout", ()): _const(ev.AckTimeout()),
    ("TransportFailed", ()): _const(ev.TransportFailed(503, "cannot send our response")),
    ("RemoteBye", ()): Make(lambda c: ev.RemoteBye(sip_request("BYE", cseq=3))),
    ("ByeCompleted", ()): _const(ev.ByeCompleted(200)),
    ("ReinviteAnswered", ()): Make(
        lambda c: ev.ReinviteAnswered(sip_response(200, "OK", answer_sdp(c.signalling.sent_sdp)))
    ),
    ("ReinviteFailed", ()): _const(ev.ReinviteFailed(488, "Not Acceptable Here")),
    ("ReinviteGlare", ()): _const(ev.ReinviteGlare()),
    ("RemoteReinvite", ("!ReofferAcceptable",)): _reinvite(offer_sdp(codecs=[G729], version=2)),
    ("RemoteReinvite", ("OfferIsHold",)): _reinvite(offer_sdp("sendonly", version=2)),
    ("RemoteReinvite", ()): _reinvite(offer_sdp("sendrecv", version=2)),
    ("Transfer", ()): _const(ev.Transfer(CAROL)),
    ("ReferAccepted", ()): _const(ev.ReferAccepted(202)),
    ("ReferRejected", ()): _const(ev.ReferRejected(603, "Decline")),
    ("TransferProgress", ("TransferSucceeded",)): _const(ev.TransferProgress(200, True)),
    ("TransferProgress", ("TransferFailedStatus",)): _const(ev.TransferProgress(486, True)),
    ("TransferProgress", ()): _const(ev.TransferProgress(180)),
    ("ReferReceived", ("TransferAllowed",)): _refer(True),
    ("ReferReceived", ()): _refer(False),
    ("ReferredCallAnswered", ()): _const(ev.ReferredCallAnswered()),
    ("ReferredCallFailed", ()): _const(ev.ReferredCallFailed(486, "Busy Here")),
    ("Replaced", ()): Make(lambda c: ev.Replaced(c.world.call(Role.UAS).session)),
    ("SessionRefreshDue", ()): Make(None, _refresh_due),
    ("SessionExpired", ()): Make(None, _expiring),
    ("MediaTimeout", ()): Make(None, _media_timeout),
    ("RefreshAnswered", ()): Make(_refresh_answered),
    ("RefreshFailed", ("RefreshGone",)): _const(
        ev.RefreshFailed(481, "Call/Transaction Does Not Exist")
    ),
    ("RefreshFailed", ()): _const(ev.RefreshFailed(500, "Server Internal Error")),
    ("RemoteRefresh", ()): Make(_remote_refresh),
}

# -- recipes: the events that bring a fresh session into each state ------------------------
MAKE: Key = ("MakeCall", ())
HANGUP: Key = ("HangUp", ())
INCOMING: Key = ("IncomingCall", ())
ACCEPT: Key = ("Accept", ("OfferAcceptable",))
HOLD: Key = ("Hold", ())
GLARE: Key = ("ReinviteGlare", ())
HELD: list[Key] = [HOLD, ("ReinviteAnswered", ())]
ANSWERED: dict[Role, list[Key]] = {
    Role.UAC: [MAKE, ("Answered", ("AnswerAcceptable",))],
    Role.UAS: [INCOMING, ACCEPT, ("AckReceived", ("AckAnswerUsable",))],
}
MID_CALL: dict[str, list[Key]] = {
    "Active": [],
    "Terminating": [HANGUP],
    "Holding": [HOLD],
    "HoldGlare": [HOLD, GLARE],
    "OnHold": HELD,
    "Resuming": [*HELD, ("Resume", ())],
    "ResumeGlare": [*HELD, ("Resume", ()), GLARE],
    "RemoteHold": [("RemoteReinvite", ("OfferIsHold",))],
    "Transferring": [("Transfer", ())],
}
RECIPES: dict[Role, dict[str, list[Key]]] = {
    Role.UAC: {
        "Idle": [],
        "Calling": [MAKE],
        "Ringing": [MAKE, ("Provisional", ())],
        "Cancelling": [MAKE, HANGUP],
        "Failing": [MAKE, ("AnswerRefused", ())],
        **{state: ANSWERED[Role.UAC] + keys for state, keys in MID_CALL.items()},
    },
    Role.UAS: {
        "Idle": [],
        "Incoming": [INCOMING],
        "Answering": [INCOMING, ACCEPT],
        "HangingUpAnswered": [INCOMING, ACCEPT, HANGUP],
        "Failing": [INCOMING, ACCEPT, ("AckTimeout", ())],
        **{state: ANSWERED[Role.UAS] + keys for state, keys in MID_CALL.items()},
    },
}
#: Rows whose event needs its own way into the state: an unusable offer is refused
#: at IncomingCall unless the handler answers the call itself.
RECIPE_FOR_EVENT: dict[Key, list[Key]] = {("Accept", ()): [("IncomingCall", ("HandlerAnswers",))]}
#: The event that ends the call from states where HangUp does not (HangUp elsewhere).
FINISH: dict[str, Key] = {
    "Cancelling": ("Rejected", ()),
    "HangingUpAnswered": ("RemoteBye", ()),
    "Terminating": ("ByeCompleted", ()),
    "Failing": ("ByeCompleted", ()),
}

# -- what each action must have told the ports (and the services) ---------------------------
Cmds = Callable[[Row, Any, Call], list[tuple[Any, ...]]]


def _cmd(*command: Any) -> Cmds:
    return lambda row, event, call: [command]


def _none(row: Row, event: Any, call: Call) -> list[tuple[Any, ...]]:
    return []


def _reject(row: Row, event: Any, call: Call) -> list[tuple[Any, ...]]:
    if isinstance(event, ev.Reject):
        return [("reject", event.code, event.reason)]
    assert row.answer is not None, f"row {row.index} runs SendReject without an answer column"
    return [("reject", row.answer, None)]


def _answer_reinvite(row: Row, event: Any, call: Call) -> list[tuple[Any, ...]]:
    # Media is updated only when the peer's hold changes, which is when the row moves
    # between Active and RemoteHold.
    restart = [("start",)] if row.next_state != row.state else []
    return [*restart, ("answer_reoffer", event.txn, 200)]


def _accept_refer(row: Row, event: Any, call: Call) -> list[tuple[Any, ...]]:
    return [
        ("answer_request", event.txn, 202, ()),
        ("notify_refer", 100, "Trying", False),
        ("place_call", event.target, ()),
        ("offer_transfer",),
    ]


def _send_refresh(row: Row, event: Any, call: Call) -> list[tuple[Any, ...]]:
    # _refresh_due: a peer that lists UPDATE; the interval is the one in force (a re-INVITE
    # from the peer on the way, as in RemoteHold's recipe, may have set our own).
    session = call.session
    assert session.session_timer is not None
    interval, min_se = session.session_timer.interval, session.config.min_se
    headers = (("Session-Expires", f"{interval};refresher=uac"), ("Min-SE", str(min_se)))
    return [("refresh", "UPDATE", None, headers)]


COMMANDS: dict[str, Cmds] = {
    "AllocateMedia": _cmd("open"),
    "SendInvite": _cmd("invite", "sip:bob@192.0.2.10"),
    "FollowRedirect": _cmd("invite", CAROL),
    "NotifyRinging": _none,
    "SendAck": _cmd("ack"),
    "ApplyAnswer": _none,
    "StartMedia": _cmd("start"),
    "StopMedia": _cmd("stop"),
    "NotifyAnswered": _none,
    "NotifyFailed": _none,
    "SendCancel": _cmd("cancel"),
    "SendBye": _cmd("bye"),
    "SendRinging": _cmd("ringing"),
    "OfferToApplication": _cmd("offer_incoming"),
    "ApplyOffer": _none,
    "ApplyAckAnswer": _none,
    "SendOk": _cmd("answer"),
    "SendReject": _reject,
    "SendNotAcceptable": _cmd("reject", 488, None),
    "SendRequestTerminated": _cmd("reject", 487, None),
    "Cleanup": lambda row, event, call: [("close",), ("release",), ("session_ended",)],
    "SendHoldReinvite": _cmd("reinvite", "sendonly"),
    "SendResumeReinvite": _cmd("reinvite", "sendrecv"),
    "ApplyReanswer": _cmd("start"),
    "RestoreSdp": _none,
    "NotifyReinviteDone": _none,
    "NotifyReinviteFailed": _none,
    "AnswerReinvite": _answer_reinvite,
    "RejectReoffer": lambda row, event, call: [("answer_reoffer", event.txn, 488)],
    "SendRequestPending": lambda row, event, call: [("answer_reoffer", event.txn, 491)],
    "SendRefer": lambda row, event, call: [("refer", event.target)],
    "NotifyTransferred": _none,
    "NotifyTransferFailed": _none,
    "AcceptRefer": _accept_refer,
    "RejectRefer": lambda row, event, call: [("answer_request", event.txn, 603, ())],
    "NotifyReferSuccess": _cmd("notify_refer", 200, "OK", True),
    "NotifyReferFailure": lambda row, event, call: [
        ("notify_refer", event.status, event.reason, True)
    ],
    "AnswerReplacement": _none,  # it queues an Accept: see FOLLOW_UPS
    "NotifyReplaced": _none,
    "SendRefresh": _send_refresh,
    "ApplyRefresh": _none,
    "RetryRefresh": _none,
    # The peer's UPDATE asked to refresh 120 s itself and supports timers (_remote_refresh).
    "AnswerRefresh": lambda row, event, call: [
        (
            "answer_request",
            event.txn,
            200,
            (("Session-Expires", "120;refresher=uac"), ("Require", "timer")),
        )
    ],
}
#: Actions that post an event of their own: the rows that event takes next.
FOLLOW_UPS = {"AnswerReplacement": [("Incoming", "Accept")]}


# -- helpers -------------------------------------------------------------------------------
def key_of(row: Row) -> Key:
    return row.event, tuple(str(guard) for guard in row.guards)


def describe(row: Row, role: Role | None = None) -> str:
    guards = ", ".join(key_of(row)[1])
    who = role.value if role is not None else row.role_label
    return (
        f"transitions[{row.index}] (line {row.line}): {who} {row.state} "
        f"--{row.event}[{guards}]--> {row.next_state}"
    )


def post(call: Call, key: Key) -> None:
    make = EVENTS[key]
    assert make.build is not None, f"{key} is a timer's event"
    before = len(call.session.history)
    assert call.session.post(make.build(call)), f"{call.session} did not take {key}"
    for step in call.session.history[before:]:
        assert not step.failed_actions, f"{step} failed"
    check_timer(call)


def state_timers(call: Call) -> dict[str, Any]:
    """The session's pending state timers by event name.

    Each is the machine's ``_timer_fired(timers, spec)`` scheduled on the world's clock.
    """
    machine = call.session.machine
    return {
        pending.args[1].event: pending
        for pending in call.world.clock.getDelayedCalls()
        if getattr(pending.func, "__self__", None) is machine
    }


def expected_timers(call: Call) -> set[str]:
    """The timers of the session's state that have a deadline now (no deadline, no timer)."""
    session = call.session
    timer = session.session_timer
    has_deadline = {
        "ring_timeout": True,
        "glare": True,
        "session_refresh": timer is not None
        and timer.we_refresh
        and session.refresh_sent_at is None,
        "session_expiry": timer is not None,
        "media_timeout": bool(session.config.media_timeout) and session.media is not None,
    }
    return {spec.event for spec in session.state_info.timers if has_deadline[spec.delay]}


def check_timer(call: Call) -> None:
    """A session has a pending timer for each timer of its state that has a deadline, and the
    clock holds nothing but the state timers of the world's sessions."""
    assert set(state_timers(call)) == expected_timers(call), call.session.state
    machines = {c.session.machine for c in call.world.calls}
    pending = call.world.clock.getDelayedCalls()
    assert all(getattr(p.func, "__self__", None) in machines for p in pending), pending


def cases() -> list[Any]:
    found = []
    for row in TABLE.rows:
        for role in sorted(row.roles, key=lambda r: r.value):
            if row.state in RECIPES[role] and key_of(row) in EVENTS:
                tag = f"{row.index}-{role.value}-{row.state}-{row.event}-{'+'.join(key_of(row)[1])}"
                found.append(pytest.param(row, role, id=tag))
    return found


CASES = cases()


# -- the tests -----------------------------------------------------------------------------
def test_every_row_is_exercised() -> None:
    """Each row is taken by every role that reaches its state (else: add a recipe or event)."""
    taken = {(row.index, role) for row, role in (case.values for case in CASES)}
    missing = [
        describe(row, role)
        for row in TABLE.rows
        for role in sorted(row.roles, key=lambda r: r.value)
        if row.state in TABLE.reachable_states(role) and (row.index, role) not in taken
    ]
    assert not missing, "rows no test takes:\n" + "\n".join(missing)
    assert {row.index for row, _ in (c.values for c in CASES)} == {r.index for r in TABLE.rows}


def test_every_action_has_expected_commands() -> None:
    assert set(TABLE.actions) <= set(COMMANDS), set(TABLE.actions) - set(COMMANDS)


@pytest.mark.parametrize(("row", "role"), CASES)
def test_row(row: Row, role: Role) -> None:
    world = World(TABLE)
    call = world.call(role)
    session, clock = call.session, world.clock
    make = EVENTS[key_of(row)]
    if make.prepare is not None:
        make.prepare(call)
    for key in RECIPE_FOR_EVENT.get(key_of(row), RECIPES[role][row.state]):
        post(call, key)
    assert session.state == row.state, f"the recipe for {row.state} ended in {session.state}"

    # Probes for what the row's Notify* actions report.
    answered_before = session.answer_outcome.settled
    probe: defer.Deferred[None] = defer.Deferred()
    outcome: list[object] = []
    probe.addBoth(outcome.append)
    session.operations.append(probe)
    timers_before = state_timers(call)
    mark, steps_before = call.log.mark(), len(session.history)

    owns_timers = bool(TABLE.state_info(row.state).timers)
    fired = None
    if make.build is None:  # a timer's row: only the clock may take it
        fired = timers_before[row.event]
        others = [p for p in clock.getDelayedCalls() if p is not fired]
        assert all(p.getTime() > fired.getTime() for p in others), "another timer fires first"
        clock.advance(fired.getTime() - clock.seconds())
        assert fired.called
        event = session.history[steps_before].event
    else:
        event = make.build(call)
        assert session.post(event)

    # Exactly this row was taken (and the rows its actions' own events lead to).
    steps = session.history[steps_before:]
    assert steps, "no transition"
    first = steps[0]
    assert (first.row, first.from_state, first.to_state) == (row.index, row.state, row.next_state)
    assert first.event is event
    assert not any(step.failed_actions for step in steps), steps
    expected_follow = [f for a in row.actions for f in FOLLOW_UPS.get(a, [])]
    assert [(s.from_state, s.event_name) for s in steps[1:]] == expected_follow
    if not expected_follow:
        assert session.history[-1].row == row.index
        assert session.state == row.next_state

    # The commands this row gave are the ones its actions name, in order.
    expected = [cmd for action in row.actions for cmd in COMMANDS[action](row, event, call)]
    assert call.log.of_row(mark, row.index) == expected
    step_rows = {step.row for step in steps}
    assert all(r in step_rows for r, _ in call.log.log[mark:]), call.log.log[mark:]
    if row.is_ignore:
        assert first.ignored and call.log.since(mark) == []

    # State timers: a row that leaves a state cancels its timers (but the one that fired);
    # one that stays keeps each timer that still has a deadline (moved, if need be: a
    # deadline moved sooner is a new DelayedCall, the old one cancelled); the
    # new state has a timer for each of its timers that has a deadline.
    if owns_timers and row.next_state != row.state:
        for pending in timers_before.values():
            assert pending.called if pending is fired else pending.cancelled, pending
    elif owns_timers:
        for name, pending in state_timers(call).items():
            if name in timers_before and timers_before[name] is not fired:
                before = timers_before[name]
                assert pending is before or (before.cancelled and pending.active()), name
    check_timer(call)

    check_notifications(row, event, call, answered_before, probe, outcome)

    # To the end of the call: nothing may be left running.
    for _ in range(4):
        if session.is_ended:
            break
        post(call, FINISH.get(session.state, HANGUP))
    assert session.is_ended, session.path
    assert clock.getDelayedCalls() == []
    assert call.log.count("session_ended") == 1
    assert call.log.count("release") == 1
    # Media is closed once if it was opened (Cleanup may close media never opened).
    assert call.log.count("close") == 1 if call.log.count("open") else call.log.count("close") <= 1
    assert session.end_outcome.settled and session.answer_outcome.settled


def check_notifications(
    row: Row, event: Any, call: Call, answered_before: bool, probe: Any, outcome: list[object]
) -> None:
    """What the row's Notify* actions told the waiters of the call and of its operations."""
    session, actions = call.session, row.actions
    if "NotifyFailed" in actions:
        assert row.error is not None
        error = session.failure
        assert isinstance(error, ERROR_TYPES[row.error.type]), (error, row.error)
        assert "{" not in str(error)
        if row.error.status is not None:
            assert error.status == row.error.status
        if not answered_before:
            assert session.answer_outcome.error is error
    elif "NotifyAnswered" in actions:
        assert session.answer_outcome.settled and session.answer_outcome.error is None
    elif "Cleanup" not in actions:
        assert session.answer_outcome.settled == answered_before

    if {"NotifyReinviteDone", "NotifyTransferred"} & set(actions):
        assert outcome == [None]
    elif {"NotifyReinviteFailed", "NotifyTransferFailed"} & set(actions):
        assert row.error is not None
        [failure] = outcome
        assert isinstance(failure, Failure)
        assert isinstance(failure.value, ERROR_TYPES[row.error.type]), failure
    elif "Cleanup" in actions:
        [failure] = outcome
        assert isinstance(failure, Failure) and isinstance(failure.value, CallFailed)
    else:
        assert outcome == [] and probe in session.operations
        session.operations.remove(probe)

    if "NotifyReplaced" in actions:
        assert session.replacement is event.session
    if "AcceptRefer" in actions:
        [placed] = call.services.placed
        assert session.replacement is placed.session
        assert placed.session.transferred_from is session


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(
    ("outcome", "notify"),
    [
        ("answered", (200, "OK")),
        ("rejected", (486, "Busy Here")),
        ("not placed", (503, "every RTP port is in use")),
    ],
)
def test_referred_call_outcome_is_notified(
    role: Role, outcome: str, notify: tuple[int, str]
) -> None:
    """The call a REFER makes us place reports back through ReferredCallAnswered/Failed."""
    world = World(TABLE)
    call = world.call(role)
    for key in ANSWERED[role]:
        post(call, key)
    if outcome == "not placed":
        call.services.refuse = CallStateError(notify[1])
    mark = call.log.mark()
    post(call, ("ReferReceived", ("TransferAllowed",)))
    if outcome != "not placed":
        [child] = call.services.placed
        assert child.session.state == "Idle"
        post(child, MAKE)
        mark = call.log.mark()
        if outcome == "answered":
            post(child, ("Answered", ("AnswerAcceptable",)))
        else:
            post(child, ("Rejected", ()))
    event = "ReferredCallAnswered" if outcome == "answered" else "ReferredCallFailed"
    assert call.session.history[-1].event_name == event
    assert call.log.since(mark)[-1] == ("notify_refer", *notify, True)
    for child in call.services.placed:
        if not child.session.is_ended:
            post(child, HANGUP)
            post(child, ("ByeCompleted", ()))
    post(call, HANGUP)
    post(call, ("ByeCompleted", ()))
    assert all(c.session.is_ended for c in world.calls if c.session.state != "Idle")
    assert world.clock.getDelayedCalls() == []


def test_ring_timer_runs_from_the_start_of_the_call() -> None:
    """Calling and Ringing each own a RingTimeout timer; ring_timeout counts from the call's
    creation, not from the 180."""
    world = World(TABLE)
    call = world.call(Role.UAC)
    post(call, MAKE)
    world.clock.advance(10)
    post(call, ("Provisional", ()))
    [timer] = world.clock.getDelayedCalls()
    assert timer.getTime() == world.config.ring_timeout
    world.clock.advance(world.config.ring_timeout - 10 - 0.001)
    assert call.session.state == "Ringing"
    world.clock.advance(0.001)
    assert call.session.state == "Cancelling"
    assert call.log.since(0)[-1] == ("cancel",)


@pytest.mark.parametrize(("role", "low", "high"), [(Role.UAC, 2.1, 4.0), (Role.UAS, 0.0, 2.0)])
def test_glare_timer_waits_as_rfc_3261_says(role: Role, low: float, high: float) -> None:
    """RFC 3261 §14.1: the Call-ID's owner (the UAC) retries after 2.1-4 s, the other 0-2 s."""
    for _ in range(20):
        world = World(TABLE)
        call = world.call(role)
        for key in RECIPES[role]["HoldGlare"]:
            post(call, key)
        timer = state_timers(call)["GlareRetry"]
        assert low <= timer.getTime() - world.clock.seconds() <= high


OLD_TABLE = Path(__file__).parent / "fixtures" / "state_table_05335d2.yaml"


def test_old_format_table_names_what_to_add(tmp_path: Path) -> None:
    """The table of sipd before state-owned timers (commit 05335d2) fails to load, saying how
    to convert it."""
    path = tmp_path / "state_table.yaml"
    shutil.copy(OLD_TABLE, path)
    with pytest.raises(StateTableError) as info:
        load_call_table(str(path))
    text = str(info.value)
    for expected in [
        str(path),
        "action 'StartRingTimer' is not implemented by the code any more",
        "'timer: {event: RingTimeout, delay: ring_timeout}' column",
        "'timer: {event: GlareRetry, delay: glare}' column",
        "action 'SetHangupPending'",
        "HangingUpAnswered",
        "guard 'ReinviteInProgress'",
        "state 'Incoming' needs a call_state column",
        "'- {name: Incoming, call_state: ..., allows: [...]}'",
        "add 'error: {type: CallFailed",
        "add 'answer: 480'",
    ]:
        assert expected in text, f"{expected!r} not in:\n{text}"


# -- session timers (RFC 4028) and the media timeout, over time -----------------------------
def _active(role: Role, prepare: Callable[[Call], None] | None = None, **config: Any) -> Call:
    """A call of ``role`` answered at time 0 (``prepare`` and ``config`` applied first)."""
    call = World(TABLE).call(role)
    if config:
        call.configure(**config)
    if prepare is not None:
        prepare(call)
    for key in ANSWERED[role]:
        post(call, key)
    assert call.session.state == "Active"
    return call


def _no_session_timer(call: Call) -> None:
    call.answer_extra = ""  # the peer's 2xx sets no session timer


def _deadlines(call: Call) -> dict[str, float]:
    return {name: pending.getTime() for name, pending in state_timers(call).items()}


def _finish(call: Call) -> None:
    """From Terminating: the BYE's 200; then nothing may be left on the clock."""
    post(call, ("ByeCompleted", ()))
    assert call.session.is_ended
    assert call.world.clock.getDelayedCalls() == []


def _refresh_headers(interval: int) -> tuple[tuple[str, str], ...]:
    return (("Session-Expires", f"{interval};refresher=uac"), ("Min-SE", "90"))


@pytest.mark.parametrize("role", list(Role))
def test_refresher_refreshes_at_half_the_interval(role: Role) -> None:
    """RFC 4028 §10: the refresher refreshes at half the interval (§7.4: UPDATE with
    Session-Expires naming itself, refresher=uac); none is due while one is out, and the 2xx
    restarts the interval (§7.2), moving the timers rather than replacing them."""
    call = _active(role, _session_timer(120, we_refresh=True), media_timeout=0)
    clock = call.world.clock
    assert _deadlines(call) == {"SessionRefreshDue": 60, "SessionExpired": 120}
    expiry = state_timers(call)["SessionExpired"]
    mark = call.log.mark()
    clock.advance(60)
    assert call.log.since(mark) == [("refresh", "UPDATE", None, _refresh_headers(120))]
    assert _deadlines(call) == {"SessionExpired": 120}
    clock.advance(1)
    post(call, ("RefreshAnswered", ()))
    assert _deadlines(call) == {"SessionRefreshDue": 121, "SessionExpired": 181}
    assert state_timers(call)["SessionExpired"] is expiry
    post(call, HANGUP)
    assert expiry.cancelled
    _finish(call)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("interval", "ends_at"), [(120, 88), (90, 60), (1800, 1768)])
def test_the_side_that_does_not_refresh_ends_the_call_before_the_interval(
    role: Role, interval: int, ends_at: float
) -> None:
    """RFC 4028 §10: without a refresh, the side that does not refresh sends BYE
    min(32, interval/3) seconds before the session expires; a refresh UPDATE from the peer
    (answered 200 with Session-Expires and Require: timer, §9) restarts the interval."""
    call = _active(role, _session_timer(interval, we_refresh=False), media_timeout=0)
    clock, session = call.world.clock, call.session
    assert _deadlines(call) == {"SessionExpired": ends_at}
    clock.advance(10)
    mark = call.log.mark()
    request = sip_request(
        "UPDATE", cseq=2, extra=f"Session-Expires: {interval};refresher=uac\r\n{PEER_TIMER}"
    )
    txn = new_txn()
    assert session.post(ev.RemoteRefresh(request, txn))
    headers = (("Session-Expires", f"{interval};refresher=uac"), ("Require", "timer"))
    assert call.log.since(mark) == [("answer_request", txn, 200, headers)]
    assert _deadlines(call) == {"SessionExpired": ends_at + 10}
    clock.advance(ends_at - 0.001)
    assert session.state == "Active"
    mark = call.log.mark()
    clock.advance(0.001)
    assert session.state == "Terminating"
    assert call.log.since(mark) == [("stop",), ("bye",)]
    assert isinstance(session.failure, CallFailed)
    assert "was not refreshed in time" in str(session.failure)
    _finish(call)


@pytest.mark.parametrize(
    ("state", "direction"),
    [("Active", "sendrecv"), ("OnHold", "sendonly"), ("RemoteHold", "recvonly")],
)
def test_without_update_the_refresh_is_a_reinvite_of_the_same_sdp(
    state: str, direction: str
) -> None:
    """RFC 4028 §7.4: a peer whose Allow lacks UPDATE is refreshed with a re-INVITE offering
    our current SDP unchanged (RFC 3264 §8: same version), so a hold stays a hold."""
    call = _active(Role.UAC, _session_timer(120, we_refresh=True, allow=""), media_timeout=0)
    for key in MID_CALL[state]:
        post(call, key)
    held = call.session.local_sdp
    assert held is not None
    mark = call.log.mark()
    call.world.clock.advance(60)
    [command] = call.log.since(mark)
    assert command == ("refresh", "INVITE", direction, _refresh_headers(120))
    assert call.signalling.sent_sdp == held.to_bytes()
    assert call.session.state == state


@pytest.mark.parametrize(
    ("status", "method"), [(405, "INVITE"), (501, "INVITE"), (500, "UPDATE"), (491, "UPDATE")]
)
def test_a_refused_refresh_is_retried_shortly(status: int, method: str) -> None:
    """A refused refresh that does not end the call is sent again after min(10, interval/8)
    seconds; 405 or 501 say the peer has no UPDATE after all, so re-INVITE from then on."""
    call = _active(Role.UAC, _session_timer(120, we_refresh=True), media_timeout=0)
    clock = call.world.clock
    clock.advance(60)
    assert call.session.post(ev.RefreshFailed(status, "Refused"))
    assert call.session.state == "Active"
    assert _deadlines(call) == {"SessionRefreshDue": 70, "SessionExpired": 120}
    mark = call.log.mark()
    clock.advance(10)
    [(name, sent, _, headers)] = call.log.since(mark)
    assert (name, sent, headers) == ("refresh", method, _refresh_headers(120))


@pytest.mark.parametrize("status", [408, 481])
def test_a_refresh_that_finds_no_session_ends_the_call(status: int) -> None:
    """RFC 4028 §10: a refresh that times out (408) or gets 481 ends the call with BYE."""
    call = _active(Role.UAS, _session_timer(120, we_refresh=True), media_timeout=0)
    call.world.clock.advance(60)
    mark = call.log.mark()
    assert call.session.post(ev.RefreshFailed(status, "Gone"))
    assert call.session.state == "Terminating"
    assert call.log.since(mark) == [("stop",), ("bye",)]
    failure = call.session.failure
    assert isinstance(failure, CallFailed) and f"failed: {status} Gone" in str(failure)
    _finish(call)


def test_a_refresh_answer_without_session_expires_turns_the_timer_off() -> None:
    """RFC 4028 §7.2: a 2xx without Session-Expires from a peer that supports timers means
    no session expiration: the session timers stop, the media timeout runs on."""
    call = _active(Role.UAC, _session_timer(120, we_refresh=True), media_timeout=100)
    call.world.clock.advance(59)
    assert set(state_timers(call)) == {"SessionRefreshDue", "SessionExpired", "MediaTimeout"}
    call.world.clock.advance(1)
    answer = sip_response(200, "OK", method="UPDATE", extra="Supported: timer")
    assert call.session.post(ev.RefreshAnswered(answer))
    assert call.session.session_timer is None
    assert set(state_timers(call)) == {"MediaTimeout"}


def test_a_peer_without_timer_support_keeps_our_timer_going() -> None:
    """A peer that does not support timers answers our refresh without Session-Expires: we
    keep timing (and refreshing) the session ourselves, or the keep-alive would lapse."""
    call = _active(Role.UAC, _session_timer(120, we_refresh=True), media_timeout=100)
    call.world.clock.advance(60)
    assert call.session.post(ev.RefreshAnswered(sip_response(200, "OK", method="UPDATE")))
    assert call.session.session_timer is not None
    assert call.session.refreshed_at == 60
    assert set(state_timers(call)) == {"SessionRefreshDue", "SessionExpired", "MediaTimeout"}


def test_the_media_timeout_follows_the_last_packet() -> None:
    """The media timeout runs from the last RTP or RTCP heard: a packet moves it on without
    an event, and silence for media_timeout seconds ends the call with BYE."""
    call = _active(Role.UAC, _no_session_timer, media_timeout=5)
    clock, session = call.world.clock, call.session
    assert _deadlines(call) == {"MediaTimeout": 5}
    clock.advance(3)
    call.media.media.stream.last_heard = 3.0
    steps = len(session.history)
    clock.advance(2)
    assert len(session.history) == steps  # the timer woke, saw the packet and waits on
    assert _deadlines(call) == {"MediaTimeout": 8}
    mark = call.log.mark()
    clock.advance(3)
    assert session.state == "Terminating"
    assert call.log.since(mark) == [("stop",), ("bye",)]
    failure = session.failure
    assert isinstance(failure, CallFailed)
    assert str(failure).startswith(f"no RTP or RTCP from {session.remote_uri} for 5s")
    _finish(call)


@pytest.mark.parametrize("role", list(Role))
def test_the_media_timeout_runs_only_in_active(role: Role) -> None:
    """On hold silence is expected: leaving Active stops the count, entering it again starts
    a new one (from then, or from a later packet)."""
    call = _active(role, media_timeout=5)
    clock, session = call.world.clock, call.session
    for key in HELD:
        post(call, key)
    assert session.state == "OnHold" and "MediaTimeout" not in state_timers(call)
    clock.advance(100)
    call.media.media.stream.last_heard = 50.0  # heard before the call is taken off hold
    post(call, ("Resume", ()))
    post(call, ("ReinviteAnswered", ()))
    assert session.state == "Active"
    assert state_timers(call)["MediaTimeout"].getTime() == 105
    post(call, HANGUP)
    _finish(call)


def _icmp_evidence(call: Call, at: float) -> tuple[str, int]:
    """The media reports ICMP port unreachable for the peer's RTP address at ``at``."""
    stream = call.media.media.stream
    stream.unreachable_since, stream.unreachable_addr = at, (PEER_HOST, PEER_PORT)
    return stream.unreachable_addr


@pytest.mark.parametrize("role", list(Role))
def test_icmp_evidence_ends_the_silent_call_sooner(role: Role) -> None:
    """ICMP port unreachable for our RTP (the peer's process died) is evidence: once the
    machine re-reads its timers (the media calls reschedule()), the call ends
    media_unreachable_timeout seconds after the first error, with BYE, saying why."""
    call = _active(
        role, _no_session_timer, media_timeout=60, media_unreachable_timeout=2, session_expires=0
    )
    clock, session = call.world.clock, call.session
    assert _deadlines(call) == {"MediaTimeout": 60}
    clock.advance(10)
    call.media.media.stream.last_heard = 10.0
    clock.advance(3)
    host, port = _icmp_evidence(call, 13.0)
    assert _deadlines(call) == {"MediaTimeout": 60}  # nothing has re-read it yet
    session.machine.reschedule()
    assert _deadlines(call) == {"MediaTimeout": 15}
    mark = call.log.mark()
    clock.advance(2)
    assert session.state == "Terminating"
    assert call.log.since(mark) == [("stop",), ("bye",)]
    failure = session.failure
    assert isinstance(failure, CallFailed)
    assert str(failure) == (
        f"no RTP or RTCP from {session.remote_uri} for 5s (ICMP port unreachable for "
        f"{host}:{port}); the call was ended with BYE"
    )
    _finish(call)


@pytest.mark.parametrize(
    ("config", "deadlines"),
    [
        ({"media_timeout": 60, "media_unreachable_timeout": 0}, {"MediaTimeout": 60}),
        ({"media_timeout": 0, "media_unreachable_timeout": 2}, {}),
    ],
)
def test_icmp_evidence_is_ignored_when_turned_off(
    config: dict[str, float], deadlines: dict[str, float]
) -> None:
    """media_unreachable_timeout 0 waits for the full media timeout regardless; media_timeout
    0 turns the whole timer off, evidence or not."""
    call = _active(Role.UAC, _no_session_timer, **config)
    call.world.clock.advance(3)
    _icmp_evidence(call, 3.0)
    call.session.machine.reschedule()
    assert _deadlines(call) == deadlines
    post(call, HANGUP)
    _finish(call)


def test_icmp_evidence_is_no_timeout_on_hold() -> None:
    """On hold silence is expected and Active's timer is gone: evidence changes nothing
    until the call is taken off hold, when the peer gets media_unreachable_timeout from
    then."""
    call = _active(Role.UAC, _no_session_timer, media_timeout=60, media_unreachable_timeout=2)
    clock, session = call.world.clock, call.session
    for key in HELD:
        post(call, key)
    clock.advance(10)
    _icmp_evidence(call, 10.0)
    session.machine.reschedule()
    assert session.state == "OnHold" and "MediaTimeout" not in state_timers(call)
    clock.advance(90)
    assert session.state == "OnHold"
    post(call, ("Resume", ()))
    post(call, ("ReinviteAnswered", ()))
    assert session.state == "Active"
    assert _deadlines(call) == {"MediaTimeout": 102}
    post(call, HANGUP)
    _finish(call)


def test_our_invite_asks_for_a_session_timer() -> None:
    """RFC 4028 §7.1: our INVITE carries Session-Expires and Min-SE (none when
    session_expires is 0), and a 2xx without Session-Expires means no timer (§7.2)."""
    call = World(TABLE).call(Role.UAC)
    post(call, MAKE)
    assert call.signalling.invite_headers == [("Session-Expires", "1800"), ("Min-SE", "90")]
    other = World(TABLE).call(Role.UAC)
    other.configure(session_expires=0)
    other.answer_extra = ""
    post(other, MAKE)
    assert other.signalling.invite_headers == []
    post(other, ("Answered", ("AnswerAcceptable",)))
    assert other.session.session_timer is None
    assert set(state_timers(other)) == {"MediaTimeout"}


@pytest.mark.parametrize(
    ("extra", "session_expires", "ok_headers", "timers"),
    [
        # A caller without timer support: our interval, refreshed by us.
        ("", 1800, [("Session-Expires", "1800;refresher=uas")], {"Refresh": 900, "Expiry": 1800}),
        # ... unless we have none of our own.
        ("", 0, [], {}),
        # A caller that supports timers and asks for none gets none.
        (PEER_TIMER, 1800, [], {}),
        # One that asks without naming the refresher refreshes itself (Require: timer).
        (
            f"Session-Expires: 300\r\n{PEER_TIMER}",
            1800,
            [("Session-Expires", "300;refresher=uac"), ("Require", "timer")],
            {"Expiry": 300 - 32},
        ),
        # refresher=uac from a caller without timer support: we refresh.
        (
            "Session-Expires: 300;refresher=uac",
            0,
            [("Session-Expires", "300;refresher=uas")],
            {
                "Refresh": 150,
                "Expiry": 300,
            },
        ),
    ],
)
def test_our_200_says_which_session_timer_the_invite_gets(
    extra: str, session_expires: int, ok_headers: list[tuple[str, str]], timers: dict[str, float]
) -> None:
    """RFC 4028 §9: the 200 to an INVITE carries the interval and the refresher chosen, with
    Require: timer when the caller supports timers; the session's timers follow."""
    call = World(TABLE).call(Role.UAS)
    call.configure(session_expires=session_expires, media_timeout=0)
    call.signalling.invite_request = sip_request("INVITE", offer_sdp(), extra=extra)
    for key in ANSWERED[Role.UAS]:
        post(call, key)
    assert call.signalling.ok_headers == ok_headers
    names = {"SessionRefreshDue": "Refresh", "SessionExpired": "Expiry"}
    assert {names[name]: at for name, at in _deadlines(call).items()} == timers


def test_a_reinvite_from_the_peer_refreshes_the_session() -> None:
    """RFC 4028 §9: a re-INVITE is a refresh too: its 200 carries Session-Expires, and the
    interval and refresher it settles replace the old ones."""
    call = _active(Role.UAS, _session_timer(120, we_refresh=True), media_timeout=0)
    call.world.clock.advance(30)
    call.request_extra = f"Session-Expires: 600;refresher=uac\r\n{PEER_TIMER}"
    post(call, ("RemoteReinvite", ()))
    assert call.signalling.reoffer_headers == [
        ("Session-Expires", "600;refresher=uac"),
        ("Require", "timer"),
    ]
    assert _deadlines(call) == {"SessionExpired": 30 + 600 - 32}
