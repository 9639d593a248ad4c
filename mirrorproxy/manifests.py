"""Manifests: by digest forever, by tag within the tag TTL, then revalidated.

A tag maps to a digest with the time upstream last confirmed it.  Within the
TTL a tag costs no upstream request; after it, a HEAD (which Docker Hub does
not count against pull limits) revalidates it, and an unchanged digest
downloads nothing.  When revalidation fails because upstream is down or
rate-limiting, the cached answer is served stale rather than not at all.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .inflight import Coalescer
from .mediatypes import DOCKER_MANIFEST_LIST, OCI_INDEX, accepts
from .names import Digest
from .store import FilesystemStore, StoredManifest, TagRecord
from .upstream import (
    FetchedManifest,
    ManifestHead,
    UpstreamClient,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

log = Logger()

HIT, MISS, REVALIDATED, STALE = "HIT", "MISS", "REVALIDATED", "STALE"

# Manifest bodies kept in memory.
MEMORY_BUDGET = 32 * 1024 * 1024

# Tag records kept in memory, and how often the cache's stamp is read to learn
# whether an admin command (purge, gc, verify) removed files (seconds).
RECORDS_KEPT = 100_000
TAGS_STAMP_INTERVAL = 1.0


@frozen
class ServedManifest:
    """A manifest answer; `body` is None for a HEAD answered from a tag record."""

    digest: Digest
    media_type: str
    size: int
    body: bytes | None = field(repr=False)
    outcome: str


def _complete_accept(accept: list[str]) -> bool:
    """Whether an answer to this Accept is the tag's full answer.

    Only such answers are recorded for the tag: a client that cannot take an
    index gets a narrower answer that must not replace it for everyone else.
    """
    if not accept:
        return True
    return all(accepts(accept, t) for t in (OCI_INDEX, DOCKER_MANIFEST_LIST))


@define(eq=False)
class ManifestCache:
    _registry: str
    _upstream: UpstreamClient
    _store: FilesystemStore
    _clock: IReactorTime
    _tag_ttl: float
    _fetches: Coalescer = field(factory=Coalescer)
    outcomes: Counter[str] = field(factory=Counter)
    # Manifests by digest never change: hot ones are answered from memory
    # (within a byte budget).
    _bodies: OrderedDict[Digest, StoredManifest] = field(factory=OrderedDict)
    _bodies_size: int = 0
    # Tag records too, forgotten within TAGS_STAMP_INTERVAL of a purge.
    _records: OrderedDict[tuple[str, str], TagRecord] = field(factory=OrderedDict)
    _stamp: bytes | None = None
    _stamp_read_at: float = float("-inf")

    async def _notice_admin_changes(self) -> None:
        """Forget what the cache held once an admin command removed files.

        At most once per TAGS_STAMP_INTERVAL the cache's stamp is read; when
        it changed, tag records and manifest bodies held in memory may name
        files that are gone, so they are dropped (and read again from disk),
        and the cache is counted again.
        """
        now = self._clock.seconds()
        if now - self._stamp_read_at < TAGS_STAMP_INTERVAL:
            return
        first_look = self._stamp_read_at == float("-inf")
        self._stamp_read_at = now
        stamp = await self._store.cache_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._records.clear()
        self._bodies.clear()
        self._bodies_size = 0
        if not first_look:
            Deferred.fromCoroutine(self._store.measure()).addErrback(
                lambda f: log.failure("cannot count the cache", f)
            )

    async def _read_tag(self, repository: str, tag: str) -> TagRecord | None:
        key = (repository, tag)
        record = self._records.get(key)
        if record is not None:
            self._records.move_to_end(key)
            return record
        stamp = self._stamp
        record = await self._store.read_tag(self._registry, repository, tag)
        # Read before a purge that was noticed meanwhile: not to be kept.
        if record is not None and stamp == self._stamp:
            self._remember_tag(key, record)
        return record

    def _remember_tag(self, key: tuple[str, str], record: TagRecord) -> None:
        self._records[key] = record
        self._records.move_to_end(key)
        if len(self._records) > RECORDS_KEPT:
            self._records.popitem(last=False)

    async def _read_manifest(self, digest: Digest) -> StoredManifest | None:
        stored = self._bodies.get(digest)
        if stored is not None:
            self._bodies.move_to_end(digest)
            return stored
        stored = await self._store.read_manifest(self._registry, digest)
        if stored is not None:
            self._remember(digest, stored)
        return stored

    def _remember(self, digest: Digest, stored: StoredManifest) -> None:
        if digest in self._bodies:
            return
        self._bodies[digest] = stored
        self._bodies_size += len(stored.body)
        while self._bodies_size > MEMORY_BUDGET:
            _, old = self._bodies.popitem(last=False)
            self._bodies_size -= len(old.body)

    async def get(
        self, repository: str, reference: str | Digest, accept: list[str], want_body: bool
    ) -> ServedManifest:
        await self._notice_admin_changes()
        if isinstance(reference, Digest):
            served = await self._by_digest(repository, reference, accept)
        else:
            served = await self._by_tag(repository, reference, accept, want_body)
        self.outcomes[served.outcome] += 1
        return served

    # -- by digest ------------------------------------------------------------

    async def _by_digest(
        self, repository: str, digest: Digest, accept: list[str]
    ) -> ServedManifest:
        stored = await self._read_manifest(digest)
        if stored is not None and accepts(accept, stored.media_type):
            return _served(digest, stored, HIT)
        fetched = await self._fetch(repository, digest, accept)
        if stored is None:
            await self._keep(fetched)
        return ServedManifest(fetched.digest, fetched.media_type, len(fetched.body), fetched.body, MISS)

    # -- by tag ---------------------------------------------------------------

    async def _by_tag(
        self, repository: str, tag: str, accept: list[str], want_body: bool
    ) -> ServedManifest:
        record = await self._read_tag(repository, tag)
        head: ManifestHead | None = None
        if record is not None and accepts(accept, record.media_type):
            age = self._clock.seconds() - record.learnt
            if age < self._tag_ttl:
                served = await self._from_record(record, want_body, HIT)
                if served is not None:
                    return served
            else:
                served, head = await self._revalidate(repository, tag, accept, record, want_body)
                if served is not None:
                    return served
        if not want_body:
            served = await self._head_upstream(repository, tag, accept, head)
            if served is not None:
                return served
        fetched = await self._fetch(repository, tag, accept)
        if await self._read_manifest(fetched.digest) is None:
            await self._keep(fetched)
        if _complete_accept(accept):
            await self._record(repository, tag, fetched.digest, fetched.media_type, len(fetched.body))
        return ServedManifest(fetched.digest, fetched.media_type, len(fetched.body), fetched.body, MISS)

    async def _from_record(
        self, record: TagRecord, want_body: bool, outcome: str
    ) -> ServedManifest | None:
        if not want_body:
            return ServedManifest(record.digest, record.media_type, record.size, None, outcome)
        stored = await self._read_manifest(record.digest)
        if stored is None:
            return None
        return _served(record.digest, stored, outcome)

    async def _revalidate(
        self, repository: str, tag: str, accept: list[str], record: TagRecord, want_body: bool
    ) -> tuple[ServedManifest | None, ManifestHead | None]:
        """The cached answer if upstream still says so (or cannot say);
        otherwise what upstream's HEAD said, so nobody asks it twice."""
        try:
            head = await self._head(repository, tag, accept)
        except (UpstreamUnavailable, UpstreamTimeout, UpstreamRateLimited) as e:
            served = await self._from_record(record, want_body, STALE)
            if served is None:
                raise
            log.warn(
                "serving {repository}:{tag} stale: revalidation failed: {error}",
                repository=repository,
                tag=tag,
                error=str(e),
            )
            return served, None
        if head.digest != record.digest:
            return None, head
        await self._record(repository, tag, record.digest, record.media_type, record.size)
        return await self._from_record(record, want_body, REVALIDATED), head

    async def _head(self, repository: str, tag: str, accept: list[str]) -> ManifestHead:
        head: ManifestHead = await self._fetches.run(
            ("HEAD", repository, tag, tuple(accept)),
            lambda: Deferred.fromCoroutine(self._upstream.head_manifest(repository, tag, accept)),
        )
        return head

    async def _head_upstream(
        self, repository: str, tag: str, accept: list[str], head: ManifestHead | None
    ) -> ServedManifest | None:
        """Answer a HEAD miss with a HEAD upstream: it downloads nothing."""
        if head is None:
            head = await self._head(repository, tag, accept)
        if head.digest is None or not head.media_type or head.size is None:
            return None
        if _complete_accept(accept):
            await self._record(repository, tag, head.digest, head.media_type, head.size)
        return ServedManifest(head.digest, head.media_type, head.size, None, MISS)

    async def _record(
        self, repository: str, tag: str, digest: Digest, media_type: str, size: int
    ) -> None:
        record = TagRecord(digest, media_type, size, self._clock.seconds())
        try:
            await self._store.write_tag(self._registry, repository, tag, record)
            self._remember_tag((repository, tag), record)
        except OSError as e:
            # The answer stands; the next pull of the tag asks upstream again.
            log.error(
                "cannot record tag {repository}:{tag} ({error}): answering without caching it",
                repository=repository,
                tag=tag,
                error=str(e),
            )

    async def _keep(self, fetched: FetchedManifest) -> None:
        """Cache a verified manifest; a full or read-only cache only costs
        the disk copy: the client gets its answer all the same."""
        self._remember(fetched.digest, StoredManifest(fetched.body, fetched.media_type))
        try:
            await self._store.write_manifest(
                self._registry, fetched.digest, fetched.body, fetched.media_type
            )
        except OSError as e:
            log.error(
                "cannot cache manifest {digest} ({error}): answering without caching it",
                digest=str(fetched.digest),
                error=str(e),
            )

    async def _fetch(
        self, repository: str, reference: str | Digest, accept: list[str]
    ) -> FetchedManifest:
        fetched: FetchedManifest = await self._fetches.run(
            ("GET", repository, str(reference), tuple(accept)),
            lambda: Deferred.fromCoroutine(
                self._upstream.get_manifest(repository, reference, accept)
            ),
        )
        return fetched


def _served(digest: Digest, stored: StoredManifest, outcome: str) -> ServedManifest:
    return ServedManifest(digest, stored.media_type, len(stored.body), stored.body, outcome)
