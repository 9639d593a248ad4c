"""The cache in an S3 bucket (`ICacheStore`), shared by every node that
points at it.

Spools stay local files (under the local directory the store is given), so
fills and their followers work as on the filesystem; `commit_blob` uploads a
verified spool to the key of its digest (`upload`).  Control-plane calls are
blocking botocore calls run through `_run` (a thread pool in the service);
bytes go through treq (`transfer`).

What the S3 store promises beyond the interface, and where it differs:

- **Last use** is coarse: a marker object per blob whose key records the
  time (`keys`), written at most once an hour per blob, and checked at most
  once an hour per blob by each store (a HEAD and a listing), so a hit costs
  no request most of the time.
- **An open blob** reads with ranged GETs.  Objects are immutable by digest,
  so every byte read is right; but a blob removed while open (by this node
  or another: S3 keeps no unlinked-but-open objects) fails its next read
  with `BlobGone`, an OSError, rather than reading to its end: never with
  other bytes.
"""

from __future__ import annotations

import builtins
import os
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ...common.runner import Runner
from ...registry.names import Digest
from .. import ICacheStore, IOpenBlob
from ..fileops import _probe_writable, _sweep
from ..layout import SPOOL
from ..spools import LocalSpools
from ..values import (
    CacheDirError,
    Spool,
    StoredBlob,
    StoredManifest,
    TagRecord,
    WriteHealth,
)
from . import ops
from .bucket import UNREACHABLE, Bucket, S3Error, open_bucket
from .location import S3Endpoint, S3Location
from .transfer import Transfer
from .upload import MULTIPART_THRESHOLD, PART_SIZE, Uploader

log = Logger()

# How often a blob's last use is written (as the filesystem store touches files).
TOUCH_EVERY = 3600.0
# SigV4's limit: a presigned URL lives at most a week.
MAX_PRESIGNED_EXPIRY = 7 * 24 * 3600
# How many blobs' last checks a store remembers before it starts afresh.
_CHECKS_REMEMBERED = 100_000
_ABSENT = {"404", "NoSuchKey", "NotFound"}


class StorageUnreachable(CacheDirError):
    """The bucket's server could not be reached at all (not a refusal)."""


class BlobGone(S3Error):
    """The blob was removed from the bucket while it was open."""


@implementer(IOpenBlob)
@define(eq=False)
class S3Blob:
    """A committed blob, read with ranged GETs."""

    _transfer: Transfer
    _key: str
    size: int
    _closed: bool = False

    async def read(self, offset: int, length: int) -> builtins.bytes:
        if self._closed:
            raise ValueError("read of a closed blob")
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        try:
            return await self._transfer.read_range(self._key, offset, length)
        except S3Error as e:
            if e.code in _ABSENT:
                raise BlobGone(f"{e.strerror} (removed while open)", e.code) from None
            raise

    def close(self) -> None:
        self._closed = True


@implementer(ICacheStore)
@define(eq=False)
class S3Store:
    bucket: Bucket
    # A local directory for the spools (files being written).
    local: str
    _run: Runner
    _treq: Any
    # The reactor (or a test's clock): last-use times, silence timeouts.
    _clock: IReactorTime
    multipart_threshold: int = MULTIPART_THRESHOLD
    part_size: int = PART_SIZE
    # Seconds a transfer may go without progress before it fails.
    silence: float = 60.0
    bytes: int | None = None
    entries: int | None = None
    writes: WriteHealth = field(factory=WriteHealth)
    # When this store last checked each blob's last use.
    _checked: dict[tuple[str, Digest], float] = field(factory=dict)

    @classmethod
    def open(
        cls,
        session: Any,
        endpoint: S3Endpoint,
        location: S3Location,
        local: str,
        run: Runner,
        treq: Any,
        clock: IReactorTime,
        **options: Any,
    ) -> S3Store:
        """The store at `location` on the server at `endpoint`, with the
        botocore `session`'s credentials (found the AWS way: the environment,
        AWS_PROFILE, the config files), its spools under `local`."""
        return cls(open_bucket(session, endpoint, location), local, run, treq, clock, **options)

    @property
    def spool_dir(self) -> str:
        return os.path.join(self.local, SPOOL)

    @property
    def _spools(self) -> LocalSpools:
        return LocalSpools(self.spool_dir, self._run, self.writes)

    @property
    def _transfer(self) -> Transfer:
        return Transfer(self.bucket, self._treq, self._run, self._clock, self.silence)

    def _key(self, registry: str, digest: Digest) -> str:
        return self.bucket.keys.blob(registry, digest)

    def _count(self, size: int) -> None:
        if self.bytes is not None and self.entries is not None:
            self.bytes += size
            self.entries += 1

    def _uncount(self, size: int) -> None:
        if self.bytes is not None and self.entries is not None:
            self.bytes -= size
            self.entries -= 1

    # -- start-up and health --------------------------------------------------------

    def prepare(self) -> int:
        """Make the spool, prove it and the bucket writable, sweep leftovers;
        blocking (before the service accepts connections)."""
        try:
            os.makedirs(self.spool_dir, exist_ok=True)
            why = _probe_writable(self.spool_dir)
            if why is not None:
                raise OSError(why)
        except OSError as e:
            raise CacheDirError(
                f"spool directory {self.spool_dir!r} is not usable: {e.strerror or e}"
            ) from None
        try:
            ops.probe(self.bucket)
        except S3Error as e:
            kind = StorageUnreachable if e.code == UNREACHABLE else CacheDirError
            raise kind(f"S3 storage {self.bucket.location} is not usable: {e.strerror}") from None
        swept, failed = _sweep(self.spool_dir)
        for path, error in failed:
            log.warn("cannot sweep {path}: {error}", path=path, error=error)
        return swept

    async def probe_writable(self) -> str | None:
        why: str | None = await self._run(_probe_writable, self.spool_dir)
        if why is not None:
            return why
        try:
            await self._run(ops.probe, self.bucket)
        except S3Error as e:
            return e.strerror
        return None

    async def measure(self) -> None:
        self.bytes, self.entries = await self._run(ops.measure, self.bucket)

    async def cache_stamp(self) -> builtins.bytes | None:
        found = await self._run(self.bucket.get_small, self.bucket.keys.stamp)
        return None if found is None else found[0]

    # -- blobs: hits ------------------------------------------------------------------

    async def open_blob(self, registry: str, digest: Digest) -> S3Blob | None:
        key = self._key(registry, digest)
        size: int | None = await self._run(self.bucket.head, key)
        return None if size is None else S3Blob(self._transfer, key, size)

    async def blob_size(self, registry: str, digest: Digest) -> int | None:
        size: int | None = await self._run(self.bucket.head, self._key(registry, digest))
        return size

    async def mark_used(self, registry: str, digest: Digest) -> None:
        now = self._clock.seconds()
        checked = self._checked.get((registry, digest))
        if checked is not None and now - checked < TOUCH_EVERY:
            return
        await self._run(ops.mark_used, self.bucket, registry, digest, now, TOUCH_EVERY)
        if len(self._checked) >= _CHECKS_REMEMBERED:
            self._checked.clear()
        self._checked[(registry, digest)] = now

    async def presigned_get(self, registry: str, digest: Digest, expires: int) -> str:
        """A URL a client may GET the blob with for `expires` seconds, signed
        with the store's credentials (for redirecting hits to the bucket)."""
        if not 1 <= expires <= MAX_PRESIGNED_EXPIRY:
            raise ValueError(f"a presigned URL expires in 1 to {MAX_PRESIGNED_EXPIRY} seconds, not {expires}")
        url: str = await self._run(self.bucket.presigned_get, self._key(registry, digest), expires)
        return url

    # -- blobs: fills ---------------------------------------------------------------

    async def new_spool(self) -> Spool:
        return await self._spools.new()

    async def write_spool(self, spool: Spool, offset: int, chunks: list[builtins.bytes], hasher: Any) -> int:
        return await self._spools.write(spool, offset, chunks, hasher)

    def share(self, fd: int) -> int:
        return os.dup(fd)

    async def commit_blob(self, spool: Spool, registry: str, digest: Digest) -> None:
        try:
            await self.upload_blob(spool.fd, registry, digest)
        finally:
            # The spool's descriptor stays open (its readers read on); its name goes.
            await self._run(_unlink, spool.path)

    async def upload_blob(self, fd: int, registry: str, digest: Digest) -> bool:
        """Put the verified blob open at `fd` in the bucket, unless it is
        there already (whoever put it, the bytes are the same); whether this
        call added it.  The file is left as it is: a cluster node uploads
        what its own cache committed."""
        uploader = Uploader(self.bucket, self._transfer, self._run, self.multipart_threshold, self.part_size)
        try:
            size: int = (await self._run(os.fstat, fd)).st_size
            added: bool = await uploader.upload(fd, size, self._key(registry, digest), digest)
        except OSError as e:
            self.writes.failed(e)
            raise
        self.writes.succeeded()
        if added:
            self._count(size)
        return added

    async def blob_response(self, registry: str, digest: Digest, start: int = 0) -> Any:
        """The blob's bytes from `start` as an HTTP response whose body the
        caller delivers or discards (a fill's origin); None if the bucket
        lacks it."""
        return await self._transfer.open_stream(self._key(registry, digest), start)

    async def discard(self, spool: Spool) -> None:
        await self._spools.discard(spool)

    # -- blobs: eviction --------------------------------------------------------------

    async def stored_blobs(self) -> list[StoredBlob]:
        found: list[StoredBlob] = await self._run(ops.stored_blobs, self.bucket)
        return found

    async def remove_blob(self, registry: str, digest: Digest) -> int | None:
        freed: int | None = await self._run(ops.remove_blob, self.bucket, registry, digest)
        if freed is not None:
            self._uncount(freed)
            self._checked.pop((registry, digest), None)
        return freed

    # -- manifests and tag records -----------------------------------------------------

    async def read_manifest(self, registry: str, digest: Digest) -> StoredManifest | None:
        found = await self._run(self.bucket.get_small, self.bucket.keys.manifest(registry, digest))
        if found is None or not found[1]:
            return None
        body, media_type = found
        return StoredManifest(body, media_type)

    async def write_manifest(
        self, registry: str, digest: Digest, body: builtins.bytes, media_type: str
    ) -> None:
        key = self.bucket.keys.manifest(registry, digest)
        # The media type is the object's Content-Type: one PUT puts both in place.
        added = await self._write(self.bucket.put_small, key, body, media_type, True)
        if added:
            self._count(len(body))

    async def read_tag(
        self, registry: str, repository: str, tag: str, variant: str | None = None
    ) -> TagRecord | None:
        key = self.bucket.keys.tag(registry, repository, tag, variant)
        found = await self._run(self.bucket.get_small, key)
        if found is None:
            return None
        try:
            return TagRecord.from_json(found[0])
        except (ValueError, KeyError, TypeError):
            log.warn("ignoring unreadable tag record {repository}:{tag}", repository=repository, tag=tag)
            return None

    async def write_tag(
        self, registry: str, repository: str, tag: str, record: TagRecord, variant: str | None = None
    ) -> None:
        key = self.bucket.keys.tag(registry, repository, tag, variant)
        await self._write(self.bucket.put_small, key, record.to_json(), "application/json")

    async def _write(self, put: Any, *args: Any) -> bool:
        try:
            added: bool = await self._run(put, *args)
        except OSError as e:
            self.writes.failed(e)
            raise
        self.writes.succeeded()
        return added


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
