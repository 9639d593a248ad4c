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
    """/readyz: 200 "ready", or 503 and each reason on its own line.

    With several registries, one upstream out of reach does not make the
    mirror unready (every node behind a load balancer shares the egress,
    and the other registries still work): it is listed under "ready"; all
    of them out of reach, or a cache that takes no writes, is 503."""

    _caches: list[RegistryCache]
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
        cache_problems = await self._cache_problems()
        upstream_problems = [self._upstream_problem(cache) for cache in self._caches]
        several = len(self._caches) > 1
        lines = cache_problems + [
            f"{cache.registry.namespace}: {problem}" if several else problem
            for cache, problem in zip(self._caches, upstream_problems)
            if problem is not None
        ]
        ready = not cache_problems and any(problem is None for problem in upstream_problems)
        # Degraded is still ready: the node serves, only less frugally.
        lines += self._cluster_degraded()
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.write("\n".join((["ready"] if ready else []) + lines).encode() + b"\n")
        request.finish()

    async def _cache_problems(self) -> list[str]:
        now = self._clock.seconds()
        store = self._caches[0].store
        if now - self._checked_at > CACHE_PROBE_SECONDS:
            self._writable = await store.probe_writable()
            self._checked_at = now
        if self._writable is not None:
            return [f"cache not writable: {self._writable}"]
        if store.writes.last_error is not None:
            return [f"cache writes failing: {store.writes.last_error}"]
        return []

    def _cluster_degraded(self) -> list[str]:
        node = self._caches[0].blobs.cluster
        if node is None:
            return []
        lines = []
        if node.coordination is not None and not node.coordination.health.reachable:
            lines.append(
                f"degraded: redis {node.coordination.health.state.describe()}; "
                "each node fetches for its own clients"
            )
        if node.bucket.writes.last_error is not None:
            lines.append(f"degraded: bucket writes failing: {node.bucket.writes.last_error}")
        return lines

    def _upstream_problem(self, cache: RegistryCache) -> str | None:
        upstream = cache.upstream
        answered, failed = upstream.last_answer, upstream.last_failure
        if failed is not None and (answered is None or failed > answered):
            return f"upstream unreachable: {upstream.last_error}"
        if answered is None:
            return "upstream not reached yet"
        if self._clock.seconds() - answered > ANSWER_WINDOW:
            return f"upstream silent for {self._clock.seconds() - answered:.0f} s"
        return None
