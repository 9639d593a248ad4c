"""The cache on a filesystem: content by digest, tags by name, atomic commits.

Files sit where `layout.Layout` puts them; every call that touches the disk
runs one of `fileops`' blocking halves through `_run`, which in the service is
a thread pool: open, fsync, rename and cold reads never stall the reactor.
"""

from __future__ import annotations

import builtins
import os
import uuid
from typing import Any

from attrs import define, field, frozen
from twisted.logger import Logger
from zope.interface import implementer

from ..common.runner import Runner
from ..registry.names import Digest
from . import ICacheStore, IDescriptorBlob
from .fileops import (
    Committed,
    _commit,
    _open_for_reading,
    _probe_writable,
    _read_at,
    _read_manifest,
    _read_small,
    _remove,
    _size,
    _stored_blobs,
    _sweep,
    _touch,
    _write_and_commit,
)
from .layout import Layout, type_path
from .spools import LocalSpools
from .values import (
    CacheDirError,
    Spool,
    StoredBlob,
    StoredManifest,
    TagRecord,
    WriteHealth,
)

log = Logger()

# A blob's mtime is its last use; touching it on every hit would be a write
# per request, and an hour is precise enough for eviction.
TOUCH_EVERY = 3600.0


@implementer(IDescriptorBlob)
@frozen
class OpenFile:
    """A blob's file opened for reading: its descriptor (owned by the caller) and size."""

    fd: int
    size: int
    _run: Runner

    async def read(self, offset: int, length: int) -> bytes:
        data: bytes = await self._run(_read_at, self.fd, offset, length)
        return data

    def close(self) -> None:
        os.close(self.fd)


@implementer(ICacheStore)
@define(eq=False)
class FilesystemStore:
    root: str
    _run: Runner
    # What the cache holds (blobs and manifests); None until `measure` ran.
    # `bytes` shadows the type in this class: its methods spell it builtins.bytes.
    bytes: int | None = None
    entries: int | None = None
    writes: WriteHealth = field(factory=WriteHealth)
    layout: Layout = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.layout = Layout(self.root)

    @property
    def _spools(self) -> LocalSpools:
        return LocalSpools(self.layout.spool_dir, self._run, self.writes)

    async def measure(self) -> None:
        """Count the cache once, off the reactor; commits and removals keep the count."""
        self.bytes, self.entries = await self._run(self.layout.measure)

    def _count(self, committed: Committed) -> None:
        size, replaced = committed
        if self.bytes is not None and self.entries is not None:
            self.bytes += size - (replaced or 0)
            self.entries += 1 if replaced is None else 0

    def _uncount(self, size: int) -> None:
        if self.bytes is not None and self.entries is not None:
            self.bytes -= size
            self.entries -= 1

    # -- start-up (before the service accepts connections) -----------------

    def prepare(self) -> int:
        """Create the layout, prove it writable, sweep leftovers; count swept."""
        spool = self.layout.spool_dir
        try:
            os.makedirs(spool, exist_ok=True)
            probe = os.path.join(spool, f"probe-{uuid.uuid4().hex}")
            with open(probe, "wb") as f:
                f.write(b"ok")
            os.unlink(probe)
        except OSError as e:
            raise CacheDirError(
                f"cache directory {self.root!r} is not usable: {e.strerror or e}"
            ) from None
        swept, failed = _sweep(spool)
        for path, error in failed:
            log.warn("cannot sweep {path}: {error}", path=path, error=error)
        return swept

    async def probe_writable(self) -> str | None:
        """Why a small file cannot be written to the cache now; None if it can."""
        why: str | None = await self._run(_probe_writable, self.layout.spool_dir)
        return why

    # -- paths (the layout's, for tests and tools that look at the files) ------

    def blob_path(self, registry: str, digest: Digest) -> str:
        return self.layout.blob_path(registry, digest)

    def manifest_path(self, registry: str, digest: Digest) -> str:
        return self.layout.manifest_path(registry, digest)

    def tag_path(self, registry: str, repository: str, tag: str, variant: str | None = None) -> str:
        return self.layout.tag_path(registry, repository, tag, variant)

    # -- blobs ------------------------------------------------------------------

    async def open_blob(self, registry: str, digest: Digest) -> OpenFile | None:
        opened: tuple[int, int] | None = await self._run(_open_for_reading, self.blob_path(registry, digest))
        if opened is None:
            return None
        fd, size = opened
        return OpenFile(fd, size, self._run)

    async def blob_size(self, registry: str, digest: Digest) -> int | None:
        size: int | None = await self._run(_size, self.blob_path(registry, digest))
        return size

    async def mark_used(self, registry: str, digest: Digest) -> None:
        await self._run(_touch, self.blob_path(registry, digest), TOUCH_EVERY)

    async def new_spool(self) -> Spool:
        return await self._spools.new()

    async def write_spool(self, spool: Spool, offset: int, chunks: list[builtins.bytes], hasher: Any) -> int:
        return await self._spools.write(spool, offset, chunks, hasher)

    def share(self, fd: int) -> int:
        return os.dup(fd)

    async def commit_blob(self, spool: Spool, registry: str, digest: Digest) -> None:
        try:
            committed = await self._run(_commit, spool.fd, spool.path, self.blob_path(registry, digest))
        except OSError as e:
            self.writes.failed(e)
            raise
        self.writes.succeeded()
        self._count(committed)

    async def discard(self, spool: Spool) -> None:
        await self._spools.discard(spool)

    async def stored_blobs(self) -> list[StoredBlob]:
        found: list[StoredBlob] = await self._run(_stored_blobs, self.layout)
        return found

    async def remove_blob(self, registry: str, digest: Digest) -> int | None:
        freed: int | None = await self._run(_remove, self.blob_path(registry, digest))
        if freed is not None:
            self._uncount(freed)
        return freed

    # -- manifests and tags -------------------------------------------------

    async def read_manifest(self, registry: str, digest: Digest) -> StoredManifest | None:
        path = self.manifest_path(registry, digest)
        found = await self._run(_read_manifest, path, type_path(path))
        if found is None:
            return None
        body, media_type = found
        return StoredManifest(body, media_type)

    async def write_manifest(
        self, registry: str, digest: Digest, body: builtins.bytes, media_type: str
    ) -> None:
        path = self.manifest_path(registry, digest)
        # The type goes first: a manifest without its type is not served,
        # and a type without its manifest is harmless.
        await self._write_file(type_path(path), media_type.encode("utf-8"))
        self._count(await self._write_file(path, body))

    async def cache_stamp(self) -> builtins.bytes | None:
        """The current `CACHE_STAMP`: when it changes, files went."""
        stamp: bytes | None = await self._run(_read_small, self.layout.stamp_path)
        return stamp

    async def read_tag(
        self, registry: str, repository: str, tag: str, variant: str | None = None
    ) -> TagRecord | None:
        data = await self._run(_read_small, self.tag_path(registry, repository, tag, variant))
        if data is None:
            return None
        try:
            return TagRecord.from_json(data)
        except (ValueError, KeyError, TypeError):
            log.warn("ignoring unreadable tag record {repository}:{tag}", repository=repository, tag=tag)
            return None

    async def write_tag(
        self, registry: str, repository: str, tag: str, record: TagRecord, variant: str | None = None
    ) -> None:
        await self._write_file(self.tag_path(registry, repository, tag, variant), record.to_json())

    async def _write_file(self, path: str, data: builtins.bytes) -> Committed:
        spool = await self.new_spool()
        try:
            committed: Committed = await self._run(_write_and_commit, spool.fd, spool.path, path, data)
        except OSError as e:
            self.writes.failed(e)
            raise
        self.writes.succeeded()
        return committed
