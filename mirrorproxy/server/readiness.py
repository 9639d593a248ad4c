"""Whether the mirror is ready for traffic: /readyz, and the upstream probe.

Ready means what a load balancer needs to know: upstream answered recently
(the probe asks its ``/v2/`` at start and every PROBE_INTERVAL, on the
injected clock, so a mirror that starts with upstream out of reach is not
ready until it has answered) and has not failed since, and the cache takes
writes (a probe file now and then, and the outcome of the latest real
write, so a full disk counts).  Otherwise 503, with every reason.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..cache.registrycache import RegistryCache
from ..upstream.client import UpstreamClient

log = Logger()

PROBE_INTERVAL = 15.0
# Upstream must have answered within this long: a probe that hangs until its
# header timeout is no answer.
ANSWER_WINDOW = 4 * PROBE_INTERVAL
# How long a "the cache is writable" probe is trusted.
CACHE_PROBE_SECONDS = 10.0


@define(eq=False)
class UpstreamProbe:
    """Asks upstream's ``/v2/`` now and every `interval`; the answers land
    in the client's own record of when upstream last answered or failed."""

    _upstream: UpstreamClient
    _clock: IReactorTime
    _interval: float = PROBE_INTERVAL
    _loop: LoopingCall | None = field(default=None, init=False)

    def start(self) -> None:
        self._loop = LoopingCall(self._probe)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _probe(self) -> Deferred[None]:
        # Failures are recorded by the client; the loop goes on regardless.
        return Deferred.fromCoroutine(self._upstream.ping()).addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        log.info("upstream probe: {error}", error=failure.getErrorMessage())


@define(eq=False)
class Readiness(Resource):
    """/readyz: 200 "ready", or 503 and each reason on its own line."""

    _mirror: RegistryCache
    _clock: IReactorTime
    _checked_at: float = float("-inf")
    _writable: str | None = "not checked yet"
    isLeaf = True

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render_GET(self, request: Request) -> int:
        Deferred.fromCoroutine(self._answer(request))
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        problems = await self.problems()
        request.setResponseCode(503 if problems else 200)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.write(("\n".join(problems) or "ready").encode() + b"\n")
        request.finish()

    async def problems(self) -> list[str]:
        now = self._clock.seconds()
        store = self._mirror.store
        if now - self._checked_at > CACHE_PROBE_SECONDS:
            self._writable = await store.probe_writable()
            self._checked_at = now
        problems = []
        if self._writable is not None:
            problems.append(f"cache not writable: {self._writable}")
        elif store.writes.last_error is not None:
            problems.append(f"cache writes failing: {store.writes.last_error}")
        upstream = self._mirror.upstream
        answered, failed = upstream.last_answer, upstream.last_failure
        if failed is not None and (answered is None or failed > answered):
            problems.append(f"upstream unreachable: {upstream.last_error}")
        elif answered is None:
            problems.append("upstream not reached yet")
        elif now - answered > ANSWER_WINDOW:
            problems.append(f"upstream silent for {now - answered:.0f} s")
        return problems
