"""A call engine: an ``ISignalingHandler`` that routes each INVITE by the dialled number.

    python -m examples.call_engine --port 5100 \\
        --route 100=queue --route 666=reject:403 --route 200=agent:sip:agent@127.0.0.1:5101

The handler sees every new INVITE before any session exists and decides with
a routing table (``--route NUMBER=ACTION``, number = the Request-URI's user):

``queue``
    ``Defer()``: the caller keeps ringing while it waits in a FIFO; a worker
    answers one caller every ``--queue-delay`` seconds (``invite.accept()``),
    plays an announcement (a 350 Hz tone) and hangs up.
``reject:CODE``
    ``Reject(CODE)``: answered with that status, no session is created.
``agent:URI``
    ``Defer()``, then the engine calls the agent; when the agent answers the
    caller is answered and the two calls are bridged (a back-to-back user
    agent). If the agent does not answer, the caller gets the agent's status.

Anything else gets 404. ``--calls N`` exits once N calls have been routed and
have ended (default: run until interrupted); if any of them failed, each
failure is printed on stderr and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from typing import Any, cast

from twisted.internet import defer, task
from twisted.python.failure import Failure
from zope.interface import implementer

from sipd import (
    Accept,
    Defer,
    InviteDetails,
    ISignalingHandler,
    Reject,
    SipdConfig,
    UnifiedCoordinator,
)
from sipd.errors import CallError
from sipd.media.bridge import bridge
from sipd.media.frame import AudioFrame
from sipd.media.tones import tone


def parse_route(text: str) -> tuple[str, str, str]:
    """``100=queue`` / ``666=reject:403`` / ``200=agent:sip:a@host`` -> (number, action, arg)."""
    number, _, action = text.partition("=")
    kind, _, arg = action.partition(":")
    if not number or kind not in ("queue", "reject", "agent") or (kind != "queue" and not arg):
        raise argparse.ArgumentTypeError(f"bad route {text!r}: NUMBER=queue|reject:CODE|agent:URI")
    return number, kind, arg


@implementer(ISignalingHandler)
class CallEngine:
    """Routes by dialled number: queue, reject, or connect to an agent."""

    def __init__(self, routes: dict[str, tuple[str, str]], queue_delay: float) -> None:
        self.routes = routes
        self.queue_delay = queue_delay
        self.coordinator: UnifiedCoordinator | None = None  # set once bound
        self.queue: deque[InviteDetails] = deque()
        #: One Deferred per routed call, fired when that call is over.
        self.calls: list[defer.Deferred[None]] = []

    # -- ISignalingHandler --------------------------------------------------------------
    def on_incoming_invite(self, invite: InviteDetails) -> Any:
        kind, arg = self.routes.get(invite.dialled, ("none", ""))
        print(f"{invite.caller} dialled {invite.dialled!r}: {kind} {arg}", flush=True)
        if kind == "reject":
            self.calls.append(defer.succeed(None))
            return Reject(int(arg))
        if kind == "queue":
            self.queue.append(invite)
            self.calls.append(defer.ensureDeferred(self.serve_queue()))
            return Defer()  # we answer it ourselves, later
        if kind == "agent":
            self.calls.append(defer.ensureDeferred(self.connect(invite, arg)))
            return Defer()
        self.calls.append(defer.succeed(None))
        return Reject(404, "Not Found")

    def on_response(self, dialog_id: str, response: Any) -> Accept:
        return Accept()  # let every response to our own INVITEs (agent calls) through

    # -- the routes -------------------------------------------------------------------------
    async def serve_queue(self) -> None:
        """Answer the longest-waiting caller after the queue delay, announce, hang up."""
        assert self.coordinator is not None
        await task.deferLater(self.coordinator.reactor, self.queue_delay, lambda: None)
        invite = self.queue.popleft()
        if invite.cancelled:
            return
        caller = await invite.accept()
        await caller.send_audio(AudioFrame(tone(350, 1.0)))
        await caller.hangup()

    async def connect(self, invite: InviteDetails, agent_uri: str) -> None:
        """Call the agent first; answer the caller only when the agent answered."""
        assert self.coordinator is not None
        agent = self.coordinator.create_outgoing_call(agent_uri)
        invite.on_cancel.addCallback(lambda _: agent.hangup())
        try:
            await agent.wait_for_answer()
        except CallError as exc:
            if not invite.cancelled:
                invite.reject(exc.status or 480)
            return
        if invite.cancelled:
            return
        caller = await invite.accept()
        link = bridge(caller, agent)  # ends (and hangs up the other) when either hangs up
        await link.done


async def main(reactor: Any, args: argparse.Namespace) -> None:
    routes = args.route or [parse_route("100=queue"), parse_route("666=reject:403")]
    engine = CallEngine({n: (k, a) for n, k, a in routes}, args.queue_delay)
    config = SipdConfig(name="engine", port=args.port, defer_timeout=60)
    coordinator = await UnifiedCoordinator.create(config, engine)
    # Ctrl-C or SIGTERM: hang every call up (BYE) before the reactor stops.
    # (A SimplePeer does this by itself; a bare coordinator is asked to.)
    reactor.addSystemEventTrigger("before", "shutdown", coordinator.close)
    engine.coordinator = coordinator
    print(f"call engine listening on {coordinator.uri}", flush=True)
    while args.calls == 0 or len(engine.calls) < args.calls:
        await task.deferLater(reactor, 0.1, lambda: None)
    results = await defer.DeferredList(engine.calls, consumeErrors=True)
    await coordinator.close()
    failures = [cast(Failure, result) for ok, result in results if not ok]
    for failure in failures:
        print(f"call engine: a call failed: {failure.getErrorMessage()}", file=sys.stderr)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="route calls by dialled number")
    parser.add_argument("--port", type=int, default=5100)
    parser.add_argument("--route", type=parse_route, action="append", default=[])
    parser.add_argument("--queue-delay", type=float, default=2.0)
    parser.add_argument("--calls", type=int, default=0, help="exit after N calls (0: never)")
    arguments = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
