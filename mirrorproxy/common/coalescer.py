"""One piece of work shared by everyone who asks for it while it runs.

Each caller gets a Deferred of its own: cancelling it (a client went away)
detaches that caller and never reaches the shared work, which goes on for
the others and for the cache.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


@define(eq=False)
class _Shared:
    waiters: list[Deferred[Any]] = field(factory=list)


@define(eq=False)
class Coalescer:
    """Runs `work` once per key at a time; late callers join the running one."""

    _running: dict[Hashable, _Shared] = field(factory=dict)

    def running(self, key: Hashable) -> bool:
        return key in self._running

    def run(self, key: Hashable, work: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        shared = self._running.get(key)
        if shared is None:
            shared = self._running[key] = _Shared()
            # The work may finish synchronously; register the waiter first.
            waiter = self._add_waiter(shared)
            d = work()
            d.addBoth(self._finished, key, shared)
            return waiter
        return self._add_waiter(shared)

    def _add_waiter(self, shared: _Shared) -> Deferred[Any]:
        def detach(waiter: Deferred[Any]) -> None:
            if waiter in shared.waiters:
                shared.waiters.remove(waiter)

        waiter: Deferred[Any] = Deferred(detach)
        shared.waiters.append(waiter)
        return waiter

    def _finished(self, result: object, key: Hashable, shared: _Shared) -> None:
        if self._running.get(key) is shared:
            del self._running[key]
        waiters, shared.waiters = shared.waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        # Every waiter has the failure now; it is not unhandled here.
        return None
