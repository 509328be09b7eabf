"""Every row of the default call state table, taken by a real ``UnifiedSession``.

No sockets: each session gets fake ports (:mod:`tests.unit.session_fakes`)
that record the commands it gives, and a :class:`~twisted.internet.task.Clock`.
For every row and every role that reaches the row's state, a fresh session is
brought into that state by a recipe of events, the row's event is posted (or,
for a timer's event, the clock is advanced until the state's timer fires), and
the test checks that exactly that row was taken, that the commands its actions
gave are the ones the row's actions name, and what the state timers did. The
session is then driven to a final state, where no timer may be left.

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


def _delayed_offer(call: Call) -> None:
    call.signalling.invite_request = sip_request("INVITE")  # no SDP: our 200 makes the offer


def _unusable_offer(call: Call) -> None:
    call.signalling.invite_request = sip_request("INVITE", offer_sdp(codecs=[G729]))


def _ack_with_answer(call: Call) -> ev.CallEvent:
    """An ACK; it answers the offer in our 200 when the INVITE had none (delayed offer)."""
    due = call.session.negotiation is None
    return ev.AckReceived(sip_request("ACK", answer_sdp(call.signalling.sent_sdp) if due else b""))


def _reinvite(body: bytes) -> Make:
    return Make(lambda call: ev.RemoteReinvite(sip_request("INVITE", body, cseq=2), new_txn()))


def _refer(allowed: bool) -> Make:
    request = sip_request("REFER", extra=f"Refer-To: <{CAROL}>")
    return Make(lambda call: ev.ReferReceived(request, new_txn(), CAROL, allowed=allowed))


def _const(event: ev.CallEvent) -> Make:
    return Make(lambda call: event)


#: An event for each (event, guards) of the table that takes that row and not an earlier one.
EVENTS: dict[Key, Make] = {
    ("MakeCall", ()): _const(ev.MakeCall()),
    ("Provisional", ()): Make(lambda c: ev.Provisional(sip_response(180, "Ringing"))),
    ("Answered", ("AnswerAcceptable",)): Make(
        lambda c: ev.Answered(sip_response(200, "OK", answer_sdp(c.signalling.sent_sdp)))
    ),
    ("Answered", ()): Make(lambda c: ev.Answered(sip_response(200, "OK"))),  # no SDP answer
    ("AnswerRefused", ()): _const(ev.AnswerRefused(403, "Forbidden")),
    ("Rejected", ("RedirectAllowed",)): Make(
        lambda c: ev.Rejected(302, "Moved", sip_response(302, "Moved", contact=CAROL))
    ),
    ("Rejected", ("RequestTerminated",)): Make(
        lambda c: ev.Rejected(487, "Request Terminated", sip_response(487, "Request Terminated"))
    ),
    ("Rejected", ()): Make(lambda c: ev.Rejected(486, "Busy Here", sip_response(486, "Busy Here"))),
    ("InviteTimeout", ("TimedOut",)): _const(ev.InviteTimeout(408, "Request Timeout")),
    ("InviteTimeout", ()): _const(ev.InviteTimeout(503, "Service Unavailable")),
    ("RingTimeout", ()): TIMER,
    ("GlareRetry", ()): TIMER,
    ("HangUp", ()): _const(ev.HangUp()),
    ("Hold", ()): _const(ev.Hold()),
    ("Resume", ()): _const(ev.Resume()),
    ("IncomingCall", ("HandlerAnswers",)): _const(ev.IncomingCall(offer=False)),
    ("IncomingCall", ()): _const(ev.IncomingCall(offer=True)),
    ("ReplacingCall", ()): _const(ev.ReplacingCall()),
    ("Accept", ("OfferAcceptable",)): _const(ev.Accept()),
    ("Accept", ()): Make(lambda c: ev.Accept(), prepare=_unusable_offer),
    ("Reject", ()): _const(ev.Reject(486, "Busy Here")),
    ("RemoteCancel", ()): Make(lambda c: ev.RemoteCancel(sip_request("CANCEL"))),
    ("AckReceived", ("AckAnswerUsable",)): Make(_ack_with_answer),
    ("AckReceived", ()): Make(lambda c: ev.AckReceived(sip_request("ACK")), _delayed_offer),
    ("AckTimeout", ()): _const(ev.AckTimeout()),
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
        ("answer_request", event.txn, 202),
        ("notify_refer", 100, "Trying", False),
        ("place_call", event.target, ()),
        ("offer_transfer",),
    ]


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
    "RejectRefer": lambda row, event, call: [("answer_request", event.txn, 603)],
    "NotifyReferSuccess": _cmd("notify_refer", 200, "OK", True),
    "NotifyReferFailure": lambda row, event, call: [
        ("notify_refer", event.status, event.reason, True)
    ],
    "AnswerReplacement": _none,  # it queues an Accept: see FOLLOW_UPS
    "NotifyReplaced": _none,
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


def check_timer(call: Call) -> None:
    """A session has a pending timer exactly while its state owns one."""
    pending = call.world.clock.getDelayedCalls()
    timer = call.session.state_info.timer
    assert len(pending) == (0 if timer is None else 1), (call.session.state, pending)


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
    for key in RECIPES[role][row.state]:
        post(call, key)
    assert session.state == row.state, f"the recipe for {row.state} ended in {session.state}"

    # Probes for what the row's Notify* actions report.
    answered_before = session.answer_outcome.settled
    probe: defer.Deferred[None] = defer.Deferred()
    outcome: list[object] = []
    probe.addBoth(outcome.append)
    session.operations.append(probe)
    timers_before: list[Any] = list(clock.getDelayedCalls())  # the Clock hands out its live list
    mark, steps_before = call.log.mark(), len(session.history)

    state_timer = TABLE.state_info(row.state).timer
    if make.build is None:  # a timer's row: only the clock may take it
        assert state_timer is not None and state_timer.event == row.event
        [timer] = timers_before
        clock.advance(timer.getTime() - clock.seconds())
        assert timer.called
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

    # State timers: a row that leaves a timer's state cancels it (or it fired); one that
    # stays keeps the same timer; the new state has a timer exactly when it owns one.
    if state_timer is not None and row.next_state != row.state:
        [old] = timers_before
        assert old.called if make.build is None else old.cancelled, old
    elif state_timer is not None:
        assert clock.getDelayedCalls() == timers_before
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
    assert call.log.count("close") == (1 if call.log.count("open") else 0)
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
        [timer] = world.clock.getDelayedCalls()
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
