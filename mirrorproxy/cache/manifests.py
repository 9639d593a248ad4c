"""Manifests: by digest forever, by tag within the tag TTL, then revalidated.

A tag maps to a digest with the time upstream last confirmed it.  Within the
TTL a tag costs no upstream request; after it, a HEAD (which Docker Hub does
not count against pull limits) revalidates it, and an unchanged digest
downloads nothing.  When revalidation fails because upstream is down or
rate-limiting, the cached answer is served stale rather than not at all.

A tag's answer depends on the client's ``Accept``: the full answer (an
index, for a client that takes every type) is the tag's record; a narrower
client's answer is recorded apart, as a variant for its set of types, so a
repeated narrow pull costs no upstream request either and never replaces the
full answer for everyone else.  A tag resolved by HEAD alone gets its
manifest fetched in the background, once, so every recorded tag can be
served whole while upstream is down.  A 404 is remembered for the negative
TTL.  On a cluster node, a stale tag is first read again from the store (in
Redis, another node may have revalidated it) and revalidated by one node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..common.coalescer import Coalescer
from ..registry.mediatypes import ALL_MANIFEST_TYPES, accept_variant, accepts
from ..registry.names import Digest
from ..storage import ICacheStore
from ..storage.values import StoredManifest, TagRecord
from ..upstream.answers import FetchedManifest, ManifestHead
from ..upstream.client import UpstreamClient
from ..upstream.errors import (
    ManifestNotAcceptable,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .heldmanifests import HeldManifests
from .negative import NotFoundCache
from .outcomes import Outcome
from .referrers import ReferrersCache, subject_of

log = Logger()

RevalidationGate = Callable[[str, str, str, "str | None"], Awaitable[bool]]

HIT, MISS, REVALIDATED, STALE = Outcome.HIT, Outcome.MISS, Outcome.REVALIDATED, Outcome.STALE

# How often the cache's stamp is read to learn whether an admin command
# (purge, gc, verify) removed files (seconds).
TAGS_STAMP_INTERVAL = 1.0


@frozen
class ServedManifest:
    """A manifest answer; `body` is None for a HEAD answered from a tag record."""

    digest: Digest
    media_type: str
    size: int
    body: bytes | None = field(repr=False)
    outcome: Outcome
    # The manifest's subject (OCI 1.1), for OCI-Subject.
    subject: Digest | None = None


@define(eq=False)
class ManifestCache:
    _registry: str
    _upstream: UpstreamClient
    _store: ICacheStore
    _clock: IReactorTime
    _tag_ttl: float
    _missing: NotFoundCache
    _fetches: Coalescer = field(factory=Coalescer)
    outcomes: Counter[str] = field(factory=Counter)
    _held: HeldManifests = field(factory=HeldManifests)
    _stamp: bytes | None = None
    _stamp_read_at: float = float("-inf")
    # Digests being fetched in the background for tags resolved by HEAD.
    _completing: set[Digest] = field(factory=set)
    # Which manifests name each manifest as their subject: a view of the
    # registry's manifests, with the tags' freshness.
    referrers: ReferrersCache = field(init=False)
    # A cluster node's: whether it, not another, revalidates a stale tag now.
    revalidation_gate: RevalidationGate | None = None

    def __attrs_post_init__(self) -> None:
        self.referrers = ReferrersCache(self._upstream, self._clock, self._tag_ttl, self._missing)

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

    def forget(self) -> None:
        """Drop what is held in memory (records, bodies, remembered 404s):
        content went elsewhere (another node's purge)."""
        self._held.forget()
        self._missing.forget()

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
        self.forget()
        if not first_look:
            Deferred.fromCoroutine(self._store.measure()).addErrback(
                lambda f: log.failure("cannot count the cache", f)
            )

    # -- by digest ------------------------------------------------------------

    async def _by_digest(
        self, repository: str, digest: Digest, accept: list[str]
    ) -> ServedManifest:
        stored = await self._read_manifest(digest)
        if stored is None:
            self._missing.check(repository, str(digest))
            fetched = await self._fetch_by_digest(repository, digest, accept)
            stored = StoredManifest(fetched.body, fetched.media_type)
            outcome = MISS
        else:
            outcome = HIT
        if not accepts(accept, stored.media_type):
            # The same bytes whoever asks: upstream would only say so too.
            raise ManifestNotAcceptable(
                f"manifest {repository}@{digest} is {stored.media_type}, which the client does not accept"
            )
        return _served(digest, stored, outcome)

    async def _fetch_by_digest(
        self, repository: str, digest: Digest, accept: Sequence[str] = ()
    ) -> FetchedManifest:
        """Fetch, verify and keep a manifest, once for everyone asking for it
        meanwhile, whatever each accepts (what it is cannot depend on that)."""
        wanted = ALL_MANIFEST_TYPES + [a for a in accept if a not in ALL_MANIFEST_TYPES]

        async def fetch_and_keep() -> FetchedManifest:
            try:
                fetched = await self._upstream.get_manifest(repository, digest, wanted)
            except UpstreamNotFound as e:
                self._missing.remember(repository, str(digest), e)
                raise
            await self._keep(fetched)
            return fetched

        fetched: FetchedManifest = await self._fetches.run(
            ("digest", repository, digest), lambda: Deferred.fromCoroutine(fetch_and_keep())
        )
        return fetched

    # -- by tag ---------------------------------------------------------------

    async def _by_tag(
        self, repository: str, tag: str, accept: list[str], want_body: bool
    ) -> ServedManifest:
        variant = accept_variant(accept)
        record = await self._read_tag(repository, tag, variant)
        if record is None and variant is not None:
            # The full answer, if this client takes it, is its answer too.
            record = await self._read_tag(repository, tag, None)
        head: ManifestHead | None = None
        if record is not None and accepts(accept, record.media_type):
            age = self._clock.seconds() - record.learnt
            if age < self._tag_ttl:
                served = await self._from_record(record, want_body, HIT)
                if served is not None:
                    return served
            else:
                gate = self.revalidation_gate
                if gate is not None and not await gate(self._registry, repository, tag, variant):
                    served = await self._from_record(record, want_body, HIT)
                    if served is not None:
                        return served
                served, head = await self._revalidate(repository, tag, accept, record, want_body)
                if served is not None:
                    return served
        self._missing.check(repository, tag)
        if not want_body:
            if head is None:
                head = await self._head(repository, tag, accept)
            served = await self._served_by_head(repository, tag, accept, head)
            if served is not None:
                return served
        if head is not None and head.fetched is not None:
            # Upstream was asked by GET (it does not do HEAD): that was the fetch.
            fetched = _acceptable(head.fetched, repository, tag, accept)
        else:
            fetched = await self._fetch_by_tag(repository, tag, accept)
        if await self._read_manifest(fetched.digest) is None:
            await self._keep(fetched)
        await self._record(repository, tag, accept, fetched.digest, fetched.media_type, len(fetched.body))
        return ServedManifest(
            fetched.digest, fetched.media_type, len(fetched.body), fetched.body, MISS, subject_of(fetched.body)
        )

    async def _read_tag(self, repository: str, tag: str, variant: str | None) -> TagRecord | None:
        key = (repository, tag, variant)
        held = self._held.record(key)
        if held is not None and self._clock.seconds() - held.learnt < self._tag_ttl:
            return held
        stamp = self._stamp
        record = await self._store.read_tag(self._registry, repository, tag, variant)
        if record is None or (held is not None and record.learnt <= held.learnt):
            return held
        # Read before a purge that was noticed meanwhile: not to be kept.
        if stamp == self._stamp:
            self._held.keep_record(key, record)
        return record

    async def _from_record(
        self, record: TagRecord, want_body: bool, outcome: Outcome
    ) -> ServedManifest | None:
        stored = await self._read_manifest(record.digest)
        if not want_body:
            # The manifest, where the cache has it (mostly in memory), only
            # for its subject.
            subject = subject_of(stored.body) if stored is not None else None
            return ServedManifest(record.digest, record.media_type, record.size, None, outcome, subject)
        if stored is None:
            return None
        return _served(record.digest, stored, outcome)

    async def _revalidate(
        self, repository: str, tag: str, accept: list[str], record: TagRecord, want_body: bool
    ) -> tuple[ServedManifest | None, ManifestHead | None]:
        """The cached answer if upstream still says so (or cannot say);
        otherwise what upstream's HEAD said, so nobody asks it twice."""
        try:
            # A 404 for a tag the cache holds is worth a GET from an upstream
            # whose HEAD might lie about it.
            head = await self._head(repository, tag, accept, confirm_absence=True)
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
        await self._record(repository, tag, accept, record.digest, record.media_type, record.size)
        return await self._from_record(record, want_body, REVALIDATED), head

    async def _head(
        self, repository: str, tag: str, accept: list[str], confirm_absence: bool = False
    ) -> ManifestHead:
        async def head() -> ManifestHead:
            try:
                return await self._upstream.head_manifest(repository, tag, accept, confirm_absence)
            except UpstreamNotFound as e:
                self._missing.remember(repository, tag, e)
                raise

        found: ManifestHead = await self._fetches.run(
            ("HEAD", repository, tag, tuple(accept), confirm_absence), lambda: Deferred.fromCoroutine(head())
        )
        return found

    async def _served_by_head(
        self, repository: str, tag: str, accept: list[str], head: ManifestHead
    ) -> ServedManifest | None:
        """Answer a HEAD miss with what upstream's HEAD said: it downloads
        nothing (or, from an upstream without HEAD, what its GET brought)."""
        if head.digest is None or not head.media_type or head.size is None:
            return None
        subject = head.subject
        if head.fetched is not None:
            subject = subject_of(head.fetched.body)
            if await self._read_manifest(head.digest) is None:
                await self._keep(head.fetched)
        await self._record(repository, tag, accept, head.digest, head.media_type, head.size)
        return ServedManifest(head.digest, head.media_type, head.size, None, MISS, subject)

    async def _fetch_by_tag(self, repository: str, tag: str, accept: list[str]) -> FetchedManifest:
        async def fetch() -> FetchedManifest:
            try:
                fetched = await self._upstream.get_manifest(repository, tag, accept)
            except UpstreamNotFound as e:
                self._missing.remember(repository, tag, e)
                raise
            return _acceptable(fetched, repository, tag, accept)

        fetched: FetchedManifest = await self._fetches.run(
            ("GET", repository, tag, tuple(accept)), lambda: Deferred.fromCoroutine(fetch())
        )
        return fetched

    async def _record(
        self, repository: str, tag: str, accept: list[str], digest: Digest, media_type: str, size: int
    ) -> None:
        """Record what the tag answers to this Accept, and make sure its
        manifest will be there when upstream is not."""
        variant = accept_variant(accept)
        record = TagRecord(digest, media_type, size, self._clock.seconds())
        try:
            await self._store.write_tag(self._registry, repository, tag, record, variant)
            self._held.keep_record((repository, tag, variant), record)
        except OSError as e:
            # The answer stands; the next pull of the tag asks upstream again.
            log.error(
                "cannot record tag {repository}:{tag} ({error}): answering without caching it",
                repository=repository,
                tag=tag,
                error=str(e),
            )
        if self._held.body(digest) is None and digest not in self._completing:
            Deferred.fromCoroutine(self._complete(repository, tag, digest))

    async def _complete(self, repository: str, tag: str, digest: Digest) -> None:
        """Fetch a recorded tag's manifest if the cache lacks it (a tag
        resolved by HEAD alone), in the background, once per digest."""
        self._completing.add(digest)
        try:
            if await self._read_manifest(digest) is None:
                await self._fetch_by_digest(repository, digest)
                log.info(
                    "fetched manifest {digest} of {repository}:{tag}, which was resolved by HEAD",
                    digest=str(digest),
                    repository=repository,
                    tag=tag,
                )
        except Exception as e:
            log.warn(
                "cannot fetch manifest {digest} of {repository}:{tag} yet: {error}",
                digest=str(digest),
                repository=repository,
                tag=tag,
                error=str(e),
            )
        finally:
            self._completing.discard(digest)

    # -- the manifests themselves ---------------------------------------------------

    async def _read_manifest(self, digest: Digest) -> StoredManifest | None:
        stored = self._held.body(digest)
        if stored is not None:
            return stored
        stored = await self._store.read_manifest(self._registry, digest)
        if stored is not None:
            self._held.keep_body(digest, stored)
        return stored

    async def _keep(self, fetched: FetchedManifest) -> None:
        """Cache a verified manifest; a full or read-only cache only costs
        the disk copy: the client gets its answer all the same."""
        self._held.keep_body(fetched.digest, StoredManifest(fetched.body, fetched.media_type))
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


def _acceptable(fetched: FetchedManifest, repository: str, tag: str, accept: list[str]) -> FetchedManifest:
    if not accepts(accept, fetched.media_type):
        raise ManifestNotAcceptable(
            f"upstream's manifest {repository}:{tag} is {fetched.media_type}, "
            "which the client does not accept"
        )
    return fetched


def _served(digest: Digest, stored: StoredManifest, outcome: Outcome) -> ServedManifest:
    return ServedManifest(digest, stored.media_type, len(stored.body), stored.body, outcome, subject_of(stored.body))
