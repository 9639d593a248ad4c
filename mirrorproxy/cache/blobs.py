"""Blobs: served from the cache, or from the one fill that fetches them.

A digest never changes, so a cached blob never costs an upstream request.
A miss starts a `Fill`; every other request for the same digest, from any
repository, joins it while it runs and starts at once with what is on disk.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from typing import Callable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from ..common.runner import Runner
from ..registry.names import Digest
from ..storage import ICacheStore, IDescriptorBlob
from ..upstream.client import UpstreamClient
from .cluster.node import ClusterNode
from .cluster.origin import BlobSource, ClusterOrigin
from .eviction import Evictor
from .fill import Fill, FillFailed, FillGone
from .fill.state import FailureKind, FillState
from .follow import FileFollower
from .outcomes import Outcome
from .source import CompleteFile, Source

log = Logger()

HIT, MISS, JOIN = Outcome.HIT, Outcome.MISS, Outcome.JOIN
# How many just-committed digests to remember: closes the window between a
# request finding no file on disk and finding no fill any more.
_RECENT_COMMITS = 4096


@define(eq=False)
class OpenBlob:
    """One response's hold on a blob: a descriptor of its own, and its place
    among the responses eviction must leave alone; `close` gives both back
    (a `with` block closes it)."""

    source: Source
    size: int | None
    outcome: Outcome
    _fd: int
    _run: Runner
    _release: Callable[[], None]
    _closed: bool = False

    async def stream(self, request: Request, start: int, end: int | None) -> int:
        """Send bytes [start, end) (`end` None: to the end) at the client's
        pace; the bytes sent.  The descriptor is the follower's from here."""
        fd, self._fd = self._fd, -1
        follower = FileFollower(request, self.source, fd, self._run, start, end)
        await follower.begin()
        return follower.sent

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fd >= 0:
            os.close(self._fd)
        self._release()

    def __enter__(self) -> OpenBlob:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class BlobNotHere(Exception):
    """A peer asked for a blob this node neither holds nor is fetching."""


@define(eq=False)
class BlobCache:
    _registry: str
    _upstream: UpstreamClient
    _store: ICacheStore
    _run: Runner
    _clock: IReactorTime
    _silence: float
    _fills: dict[Digest, Fill] = field(factory=dict)
    _recent: OrderedDict[Digest, None] = field(factory=OrderedDict)
    outcomes: Counter[str] = field(factory=Counter)
    # Fills that failed, by why (a FailureKind: the metric's label).
    failures: Counter[str] = field(factory=Counter)
    # Responses streaming each digest now: eviction leaves these alone.
    _serving: Counter[Digest] = field(factory=Counter)
    evictor: Evictor | None = None
    # A node of a cluster: fills come from the bucket, a peer or upstream,
    # and what came from elsewhere than the bucket is put there.
    cluster: ClusterNode | None = None

    def in_use(self) -> set[tuple[str, str]]:
        digests = set(self._fills) | {d for d, n in self._serving.items() if n > 0}
        return {(self._registry, str(d)) for d in digests}

    def _done_with(self, digest: Digest) -> None:
        """A response that `open` served is over."""
        self._serving[digest] -= 1
        if self._serving[digest] <= 0:
            del self._serving[digest]

    def _running_fill(self, digest: Digest) -> Fill | None:
        fill = self._fills.get(digest)
        if fill is None or fill.failed() or fill.relaying:
            # A relayed fill keeps only what its own clients still need.
            return None
        return fill

    async def size(self, repository: str, digest: Digest) -> int | None:
        """For HEAD: the blob's size, without downloading anything."""
        fill = self._running_fill(digest)
        if fill is not None and fill.expected is not None:
            return fill.expected
        size = await self._store.blob_size(self._registry, digest)
        if size is not None:
            return size
        if self.cluster is not None:
            size = await self.cluster.blob_size(self._registry, digest)
            if size is not None:
                return size
        return await self._upstream.head_blob(repository, digest)

    async def redirect_url(self, digest: Digest) -> str | None:
        """A cluster node's answer to a GET of a blob the bucket holds, with
        --blob-redirect: where to send the client; None to serve it (a fill
        running here is always streamed from here)."""
        if self.cluster is None or digest in self._fills:
            return None
        url = await self.cluster.redirect_url(self._registry, digest)
        if url is not None:
            self.outcomes[Outcome.REDIRECT] += 1
        return url

    async def open(self, repository: str, digest: Digest, local_only: bool = False) -> OpenBlob:
        """The blob, from the cache or the one fill fetching it (started if
        none runs).  `local_only` (a peer node asking): never start a fill,
        `BlobNotHere` instead, so that nodes never fetch for each other in
        circles."""
        for _ in range(3):
            fill = self._running_fill(digest)
            if fill is None:
                opened = await self._store.open_blob(self._registry, digest)
                if opened is not None:
                    # Followers send files by descriptor (sendfile); a store
                    # whose blobs are not files needs a follower of its own.
                    if not IDescriptorBlob.providedBy(opened):
                        opened.close()
                        raise TypeError(f"{type(self._store).__name__} blobs have no file descriptor")
                    hit = self._opened(digest, CompleteFile(opened.size), opened.fd, opened.size, HIT)
                    if self.evictor is not None:
                        self.evictor.touch(self._registry, digest)
                    if self.cluster is not None:
                        self.cluster.used(self._registry, digest)
                    return hit
                fill = self._running_fill(digest)
            if fill is None and digest in self._recent:
                # Committed while we looked: it is on disk now, look again.
                self._recent.pop(digest)
                continue
            outcome = JOIN
            if fill is None and local_only:
                raise BlobNotHere(f"blob {digest} is neither held nor being fetched here")
            if fill is None:
                fill = self._start(repository, digest)
                outcome = MISS
            try:
                fd = await fill.join()
            except FillGone:
                continue
            return self._opened(digest, fill, fd, fill.expected, outcome)
        raise FillFailed(f"blob {digest} came and went from the cache")

    def _opened(self, digest: Digest, source: Source, fd: int, size: int | None, outcome: Outcome) -> OpenBlob:
        """A response's hold on `digest`: serving it until closed."""
        self.outcomes[outcome] += 1
        self._serving[digest] += 1
        return OpenBlob(source, size, outcome, fd, self._run, lambda: self._done_with(digest))

    def _start(self, repository: str, digest: Digest) -> Fill:
        origin = self._upstream if self.cluster is None else self.cluster.origin(self._registry, self._upstream)
        fill = Fill(
            self._registry,
            digest,
            self._store,
            self._run,
            self._clock,
            self._silence,
            origin=origin,
            repository=repository,
        )
        self._fills[digest] = fill
        log.info("miss {repository}@{digest}: fetching", repository=repository, digest=str(digest))
        fill.done.addCallback(self._fill_over, fill)
        if isinstance(origin, ClusterOrigin):
            fill.done.addCallback(lambda _: Deferred.fromCoroutine(self._shared(fill, origin)))
        Deferred.fromCoroutine(fill.fetch())
        return fill

    async def _shared(self, fill: Fill, origin: ClusterOrigin) -> None:
        """After a cluster node's fill: what it fetched (from upstream or a
        peer) goes in the bucket, then its claim goes, so a node that finds
        the claim gone finds the blob in the bucket."""
        assert self.cluster is not None
        try:
            if fill.state is FillState.COMMITTED and origin.source is not BlobSource.BUCKET:
                await self.cluster.publish(self._store, self._registry, fill.digest)
        finally:
            await origin.finished()

    def _fill_over(self, _: object, fill: Fill) -> None:
        if self._fills.get(fill.digest) is fill:
            del self._fills[fill.digest]
        if fill.state is FillState.FAILED and fill.failure_kind:
            self.failures[fill.failure_kind] += 1
        elif fill.state is FillState.VERIFIED:
            # Relayed whole, but the cache could not keep it.
            self.failures[FailureKind.DISK] += 1
        if fill.state is FillState.COMMITTED:
            if self.evictor is not None:
                self.evictor.check()
            self._recent[fill.digest] = None
            while len(self._recent) > _RECENT_COMMITS:
                self._recent.popitem(last=False)
        fill.release()

    @property
    def fills_running(self) -> int:
        return len(self._fills)

