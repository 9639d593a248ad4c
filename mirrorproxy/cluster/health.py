"""Whether Redis answers, from every call's outcome and a periodic PING.

/readyz and the metrics read `state`; the coordination pieces read
`reachable` to give up at once instead of waiting out a timeout per call
while Redis is known to be away (each node then coalesces its own requests
only).  Only a success marks Redis reachable again: the PING does that when
it comes back.
"""

from __future__ import annotations

from typing import Callable

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()


@frozen
class Reachable:
    since: float

    def describe(self) -> str:
        return "ok"


@frozen
class Unreachable:
    reason: str
    since: float

    def describe(self) -> str:
        return f"unreachable: {self.reason}"


HealthState = Reachable | Unreachable


@define(eq=False)
class RedisHealth:
    """The latest word on Redis; starts unreachable ("not yet connected")
    until the first answer, so a node never claims cluster-wide coordination
    it has not seen work."""

    _clock: IReactorTime
    # Where this Redis is, without credentials, for messages.
    where: str = "redis"
    state: HealthState = field(init=False)
    failures: int = field(default=0, init=False)
    _watchers: list[Callable[[HealthState], None]] = field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self.state = Unreachable("not yet connected", self._clock.seconds())

    @property
    def reachable(self) -> bool:
        return isinstance(self.state, Reachable)

    def succeeded(self) -> None:
        if not self.reachable:
            again = "" if self.failures == 0 else " again"
            log.info("redis {where} answers{again}", where=self.where, again=again)
            self._become(Reachable(self._clock.seconds()))

    def failed(self, reason: str) -> None:
        self.failures += 1
        if isinstance(self.state, Unreachable):
            if self.state.reason != reason:
                # Same outage, a newer reason; it began when it began.
                self.state = Unreachable(reason, self.state.since)
            return
        log.warn(
            "redis {where} unreachable: {reason}; coordinating this node's requests only",
            where=self.where,
            reason=reason,
        )
        self._become(Unreachable(reason, self._clock.seconds()))

    def watch(self, watcher: Callable[[HealthState], None]) -> None:
        """Call `watcher` with each change between reachable and not."""
        self._watchers.append(watcher)

    def _become(self, state: HealthState) -> None:
        self.state = state
        for watcher in list(self._watchers):
            watcher(state)
