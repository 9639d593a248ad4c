"""Stopping gracefully: stop accepting, let responses finish, then stop.

On SIGTERM twistd stops the service tree.  The listeners close at once; the
responses in flight get up to a deadline to finish (a client halfway through
a layer would otherwise have to start again elsewhere); then the pools stop.
Fills cut short leave only spool files, swept at the next start, so the cache
is consistent whatever the deadline cuts.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

log = Logger()

DEFAULT_DEADLINE = 30.0


@define(eq=False)
class InFlight:
    """Counts responses under way; tells waiters when there are none."""

    count: int = 0
    _idle: list[Deferred[None]] = field(factory=list)

    def track(self, request: Request) -> None:
        self.count += 1
        request.notifyFinish().addBoth(self._done)

    def _done(self, _: object) -> None:
        self.count -= 1
        if self.count == 0:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def when_idle(self) -> Deferred[None]:
        if self.count == 0:
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: self._idle.remove(d) if d in self._idle else None)
        self._idle.append(d)
        return d


class GracefulService(MultiService):
    """Listeners first, then in-flight responses (up to a deadline), then the rest."""

    def __init__(self, in_flight: InFlight, clock: IReactorTime, deadline: float) -> None:
        super().__init__()
        self._in_flight = in_flight
        self._clock = clock
        self._deadline = deadline
        self._listeners: list[IService] = []
        self._backends: list[IService] = []

    def add_listener(self, service: IService) -> None:
        self._listeners.append(service)
        service.setServiceParent(self)

    def add_backend(self, service: IService) -> None:
        self._backends.append(service)
        service.setServiceParent(self)

    def stopService(self) -> Deferred[Any]:
        self.running = 0
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await DeferredList([maybeDeferred(s.stopService) for s in self._listeners])
        if self._in_flight.count:
            log.info(
                "stopping: waiting up to {deadline}s for {count} responses",
                deadline=self._deadline,
                count=self._in_flight.count,
            )
            idle = self._in_flight.when_idle()
            timer = self._clock.callLater(self._deadline, idle.cancel)
            try:
                await idle
            except Exception:
                log.warn("stopping with {count} responses unfinished", count=self._in_flight.count)
            else:
                if timer.active():
                    timer.cancel()
        others = [s for s in self if s not in self._listeners and s not in self._backends]
        await DeferredList([maybeDeferred(s.stopService) for s in others])
        await DeferredList([maybeDeferred(s.stopService) for s in reversed(self._backends)])
