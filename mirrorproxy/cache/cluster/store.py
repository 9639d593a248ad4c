"""A cluster node's store: its cache directory as the first tier, the
bucket and Redis behind it.

Blobs are the local store's alone here: the bucket's part in them is the
fills' origin and the upload after a commit (`node`, `origin`).  Manifests
go to both tiers and are read from the bucket when the local tier lacks
them (then kept locally), so a node with an empty disk serves a manifest by
digest without asking upstream.  Tag records go to Redis as well as to the
local tier and are read from Redis first, so a tag revalidated by one node
is fresh for all; with Redis away, each node keeps and reads its own.
Neither the bucket nor Redis failing fails a request: the local tier
answers, and the failure is logged and counted.
"""

from __future__ import annotations

import builtins
import hashlib
from collections import Counter
from typing import Any

from attrs import define, field
from twisted.logger import Logger
from zope.interface import implementer

from ...cluster.commands import RedisUnavailable
from ...cluster.tags import BadTagRecord, SharedTags
from ...registry.names import Digest
from ...storage import ICacheStore, IOpenBlob
from ...storage.filesystem import FilesystemStore
from ...storage.s3.store import S3Store, StorageUnreachable
from ...storage.values import Spool, StoredBlob, StoredManifest, TagRecord, WriteHealth

log = Logger()


@implementer(ICacheStore)
@define(eq=False)
class TieredStore:
    local: FilesystemStore
    bucket: S3Store
    tags: SharedTags | None = None
    # Failed calls to the bucket or Redis, by what was asked.
    errors: Counter[str] = field(factory=Counter)

    # -- the local tier's counts and health (eviction bounds it) -------------

    @property
    def bytes(self) -> int | None:
        return self.local.bytes

    @property
    def entries(self) -> int | None:
        return self.local.entries

    @property
    def writes(self) -> WriteHealth:
        return self.local.writes

    def prepare(self) -> int:
        """The local tier made ready, then the bucket proved writable: a
        node does not start on a bucket that refuses it (a wrong name or key
        is better said at once), but does on one out of reach, degraded, as
        an outage while running leaves it."""
        swept = self.local.prepare()
        try:
            self.bucket.prepare()
        except StorageUnreachable as e:
            self.bucket.writes.failed(e)
            self.errors["start"] += 1
            log.warn("{error}; serving from this node's disk and upstream until it answers", error=str(e))
        return swept

    async def probe_writable(self) -> str | None:
        return await self.local.probe_writable()

    async def measure(self) -> None:
        await self.local.measure()

    async def cache_stamp(self) -> builtins.bytes | None:
        return await self.local.cache_stamp()

    # -- blobs: the local tier -------------------------------------------------

    async def open_blob(self, registry: str, digest: Digest) -> IOpenBlob | None:
        return await self.local.open_blob(registry, digest)

    async def blob_size(self, registry: str, digest: Digest) -> int | None:
        return await self.local.blob_size(registry, digest)

    async def mark_used(self, registry: str, digest: Digest) -> None:
        await self.local.mark_used(registry, digest)

    async def new_spool(self) -> Spool:
        return await self.local.new_spool()

    async def write_spool(self, spool: Spool, offset: int, chunks: list[builtins.bytes], hasher: Any) -> int:
        return await self.local.write_spool(spool, offset, chunks, hasher)

    def share(self, fd: int) -> int:
        return self.local.share(fd)

    async def commit_blob(self, spool: Spool, registry: str, digest: Digest) -> None:
        await self.local.commit_blob(spool, registry, digest)

    async def discard(self, spool: Spool) -> None:
        await self.local.discard(spool)

    async def stored_blobs(self) -> list[StoredBlob]:
        return await self.local.stored_blobs()

    async def remove_blob(self, registry: str, digest: Digest) -> int | None:
        return await self.local.remove_blob(registry, digest)

    # -- manifests: both tiers -----------------------------------------------------

    async def read_manifest(self, registry: str, digest: Digest) -> StoredManifest | None:
        found = await self.local.read_manifest(registry, digest)
        if found is not None:
            return found
        try:
            found = await self.bucket.read_manifest(registry, digest)
        except Exception as e:
            self._failed("manifest read", e)
            return None
        if found is not None:
            # Kept locally, as if fetched: verified by digest first (a
            # bucket is trusted no more than upstream).
            if hashlib.sha256(found.body).hexdigest() != digest.hex:
                self._failed("manifest read", ValueError(f"the bucket's {digest} does not match its digest"))
                return None
            await self.local.write_manifest(registry, digest, found.body, found.media_type)
        return found

    async def write_manifest(self, registry: str, digest: Digest, body: builtins.bytes, media_type: str) -> None:
        await self.local.write_manifest(registry, digest, body, media_type)
        try:
            await self.bucket.write_manifest(registry, digest, body, media_type)
        except Exception as e:
            self._failed("manifest write", e)

    # -- tag records: Redis first ------------------------------------------------------

    async def read_tag(
        self, registry: str, repository: str, tag: str, variant: str | None = None
    ) -> TagRecord | None:
        if self.tags is not None:
            try:
                shared = await self.tags.get(registry, repository, tag, variant)
            except (RedisUnavailable, BadTagRecord) as e:
                self._failed("tag read", e)
            else:
                if shared is not None:
                    return shared
        found = await self.local.read_tag(registry, repository, tag, variant)
        if found is not None:
            return found
        # A node with an empty disk (and Redis away, or its record expired):
        # what the bucket keeps.
        try:
            return await self.bucket.read_tag(registry, repository, tag, variant)
        except Exception as e:
            self._failed("tag read", e)
            return None

    async def write_tag(
        self, registry: str, repository: str, tag: str, record: TagRecord, variant: str | None = None
    ) -> None:
        await self.local.write_tag(registry, repository, tag, record, variant)
        if self.tags is not None:
            try:
                await self.tags.put(registry, repository, tag, record, variant)
            except RedisUnavailable as e:
                self._failed("tag write", e)
        # In the bucket too: the admin command judges the bucket's content
        # by the tags it holds (gc, purge), and a fresh node finds them.
        try:
            await self.bucket.write_tag(registry, repository, tag, record, variant)
        except Exception as e:
            self._failed("tag write", e)

    async def first_to_revalidate(
        self, registry: str, repository: str, tag: str, variant: str | None
    ) -> bool:
        """Whether this node revalidates a stale tag now: no if another
        node holds the tag's revalidation lock (its new record follows);
        yes without Redis.  The lock is left to expire (a few seconds): by
        then the new record is in Redis, or upstream failed and the stale
        record serves anyway."""
        if self.tags is None:
            return True
        try:
            return await self.tags.revalidation_lock(registry, repository, tag, variant) is not None
        except RedisUnavailable as e:
            self._failed("tag lock", e)
            return True

    def _failed(self, what: str, error: BaseException) -> None:
        self.errors[what] += 1
        log.warn("shared {what} failed: {error}", what=what, error=str(error) or type(error).__name__)
