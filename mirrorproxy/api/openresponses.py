"""The responses under way, so that a stop can wait for them to finish."""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.web.server import Request


@define(eq=False)
class OpenResponses:
    """Counts responses under way; tells waiters when there are none (a
    graceful stop waits for that)."""

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
