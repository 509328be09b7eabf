"""Draining: on stop, refuse new calls first and let the calls in progress end by themselves.

Behind a proxy that balances calls over several workers (Kamailio's
dispatcher, docs/cluster.md), a worker that is about to stop must first be
taken out of the rotation, then finish its calls, and only then hang up what
is left. Refusing is what the user agent already does once it stops
accepting: OPTIONS is answered 503 (the proxy's probe marks the worker down)
and new INVITEs get 503 (the proxy tries another worker). :class:`Draining`
turns the accepting flag off as the stop begins and waits, up to
``drain`` seconds, until no call is left, before the wrapped service's own
stop (BYE to the rest, ``shutdown.grace``) runs.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, task

from sipd.logs import Logger

__all__ = ["Draining", "stop_accepting"]

_log = Logger(namespace="sipd.drain")

#: How often the remaining calls are counted while draining (seconds).
POLL = 0.2


def stop_accepting(coordinator: Any) -> None:
    """Answer OPTIONS and new INVITEs with 503 from now on (calls in progress go on)."""
    coordinator.dialogs.accepting = False


class Draining(service.MultiService):
    """Wraps the SIP service: a stop first drains for up to ``drain`` seconds.

    ``sipd`` is the wrapped :class:`~sipd.daemon.service.SipdService` (a
    child of this one); anything with a ``coordinator`` whose ``sessions()``
    lists the calls in progress will do.
    """

    name = "drain"

    def __init__(self, sipd: Any, drain: float, reactor: Any = None) -> None:
        super().__init__()
        self.sipd = sipd
        self.drain = drain
        self._reactor = reactor
        sipd.setServiceParent(self)

    def _clock(self) -> Any:
        if self._reactor is not None:
            return self._reactor
        from twisted.internet import reactor

        return reactor

    def stopService(self) -> defer.Deferred[None]:
        coordinator = self.sipd.coordinator
        stop_accepting(coordinator)
        calls = len(coordinator.sessions())
        _log.info(
            "sipd draining: OPTIONS and new INVITEs get 503, waiting up to {drain}s "
            "for {calls} call(s) to end",
            drain=self.drain,
            calls=calls,
        )
        clock = self._clock()
        deadline = clock.seconds() + self.drain

        async def wait() -> None:
            while coordinator.sessions() and clock.seconds() < deadline:
                await task.deferLater(clock, POLL, lambda: None)
            left = len(coordinator.sessions())
            _log.info("sipd drained: {left} call(s) left to end", left=left)

        d = defer.ensureDeferred(wait())
        d.addCallback(lambda _: super(Draining, self).stopService())
        return d.addCallback(lambda _: None)
