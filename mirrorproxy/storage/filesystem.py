"""The cache on a filesystem: content by digest, tags by name, atomic commits.

Layout under the cache directory (``<registry>`` is the upstream's namespace,
e.g. ``docker.io``, so several upstreams can share one cache)::

    spool/                                   files being written; swept at start
    <registry>/blobs/sha256/<ab>/<hex>       layers and configs, verified
    <registry>/manifests/sha256/<ab>/<hex>   manifests, exact bytes, verified
    <registry>/manifests/sha256/<ab>/<hex>.type   their media type
    <registry>/repositories/<name>/_tags/<tag>    JSON: digest, type, size, time

Every file reaches its final path the same way: written to a spool file in
the same filesystem, fsynced, renamed; so a final path only ever holds a
complete file.  Every call that touches the disk runs through `_run`, which
in the service is a thread pool: open, fsync, rename and cold reads never
stall the reactor.  Repository names and tags are checked by `names` before
they get here; their grammar cannot climb out of the cache.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from typing import Any

from attrs import define, field, frozen
from twisted.logger import Logger

from ..common.runner import Runner
from ..registry.names import Digest

log = Logger()



class CacheDirError(Exception):
    """The cache directory cannot be created or written."""


class SpoolWriteFailed(Exception):
    """A spool file could not take a batch (disk full, read-only); the batch
    was hashed all the same."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@define(eq=False)
class WriteHealth:
    """Whether the cache's latest write worked, for /readyz: a cache that
    cannot take writes serves what it has, but is not ready for more."""

    last_error: str | None = None
    failures: int = 0

    def failed(self, error: BaseException) -> None:
        self.failures += 1
        self.last_error = getattr(error, "strerror", None) or str(error)

    def succeeded(self) -> None:
        self.last_error = None


@frozen
class OpenFile:
    """A file opened for reading: its descriptor (owned by the caller) and size."""

    fd: int
    size: int


@frozen
class Spool:
    """A file being written, not yet anywhere a reader would look."""

    fd: int
    path: str


@frozen
class StoredManifest:
    body: bytes
    media_type: str


@frozen
class TagRecord:
    """What a tag pointed at, and when upstream last told us so."""

    digest: Digest
    media_type: str
    size: int
    learnt: float

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "digest": str(self.digest),
                "mediaType": self.media_type,
                "size": self.size,
                "learnt": self.learnt,
            }
        ).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> TagRecord:
        document = json.loads(data)
        return cls(
            Digest.parse(document["digest"]),
            str(document["mediaType"]),
            int(document["size"]),
            float(document["learnt"]),
        )


def _sharded(directory: str, digest: Digest) -> str:
    return os.path.join(directory, "sha256", digest.hex[:2], digest.hex)


# Rewritten (a new random token) by whatever removes tag records or content
# behind a running mirror's back (`mirrorproxy purge`, `gc`, `verify`).  A
# mirror holds tag records and manifests in memory and reads this at most
# once a second: a change makes it forget them and count the cache again.
CACHE_STAMP = "cache-stamp"


def stamp_cache_changed(root: str) -> None:
    """Tell running mirrors on this cache that files were removed."""
    path = os.path.join(root, CACHE_STAMP)
    spool_dir = os.path.join(root, "spool")
    os.makedirs(spool_dir, exist_ok=True)
    spool = os.path.join(spool_dir, f"stamp-{uuid.uuid4().hex}")
    with open(spool, "wb") as f:
        f.write(uuid.uuid4().hex.encode())
    os.replace(spool, path)


@define(eq=False)
class FilesystemStore:
    root: str
    _run: Runner
    # What the cache holds (blobs and manifests); None until `measure` ran.
    bytes: int | None = None
    entries: int | None = None
    writes: WriteHealth = field(factory=WriteHealth)

    async def measure(self) -> None:
        """Count the cache once, off the reactor; commits keep the count."""
        self.bytes, self.entries = await self._run(_measure, self.root)

    def count_committed(self, size: int) -> None:
        if self.bytes is not None and self.entries is not None:
            self.bytes += size
            self.entries += 1

    # -- start-up (before the service accepts connections) -----------------

    def prepare(self) -> int:
        """Create the layout, prove it writable, sweep leftovers; count swept."""
        spool = os.path.join(self.root, "spool")
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
        swept = 0
        for entry in os.scandir(spool):
            try:
                os.unlink(entry.path)
                swept += 1
            except OSError as e:
                log.warn("cannot sweep {path}: {error}", path=entry.path, error=str(e))
        return swept

    async def probe_writable(self) -> str | None:
        """Why a small file cannot be written to the cache now; None if it can."""
        why: str | None = await self._run(_probe_writable, os.path.join(self.root, "spool"))
        return why

    # -- paths ------------------------------------------------------------------

    def blob_path(self, registry: str, digest: Digest) -> str:
        return _sharded(os.path.join(self.root, registry, "blobs"), digest)

    def manifest_path(self, registry: str, digest: Digest) -> str:
        return _sharded(os.path.join(self.root, registry, "manifests"), digest)

    def tag_path(self, registry: str, repository: str, tag: str, variant: str | None = None) -> str:
        """A tag's record; `variant` names the answer to a narrower Accept,
        kept beside it (``@`` is in no tag, so no tag can collide)."""
        name = tag if variant is None else f"{tag}@{variant}"
        return os.path.join(self.root, registry, "repositories", repository, "_tags", name)

    # -- blobs ------------------------------------------------------------------

    async def open_blob(self, registry: str, digest: Digest) -> OpenFile | None:
        result: OpenFile | None = await self._run(_open_for_reading, self.blob_path(registry, digest))
        return result

    async def blob_size(self, registry: str, digest: Digest) -> int | None:
        size: int | None = await self._run(_size, self.blob_path(registry, digest))
        return size

    async def new_spool(self) -> Spool:
        path = os.path.join(self.root, "spool", uuid.uuid4().hex)
        try:
            fd: int = await self._run(os.open, path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                self.writes.failed(e)
            raise
        return Spool(fd, path)

    async def write_spool(self, spool: Spool, offset: int, chunks: list[bytes], hasher: Any) -> int:
        """Hash a batch, then write it at `offset`, in one pool job (the
        hops, not the work, are what a batch of a MiB costs the reactor);
        SpoolWriteFailed, after hashing, if the file cannot take it."""
        try:
            written: int = await self._run(_hash_and_write, hasher, spool.fd, offset, chunks)
        except SpoolWriteFailed as e:
            self.writes.failed(e.error)
            raise
        self.writes.succeeded()
        return written

    def share(self, fd: int) -> int:
        """A descriptor of its own for one more reader of an open file.

        OSError (EMFILE, ENFILE) when the process has none left: the caller
        fails that one reader, nothing else."""
        return os.dup(fd)

    async def commit_blob(self, spool: Spool, registry: str, digest: Digest) -> None:
        """Move a verified spool file into place.  Its descriptor stays open
        (and the caller's to close): readers may still be sharing it."""
        try:
            await self._run(_commit, spool.fd, spool.path, self.blob_path(registry, digest))
        except OSError as e:
            self.writes.failed(e)
            raise
        self.writes.succeeded()

    async def discard(self, spool: Spool) -> None:
        await self._run(_discard, spool.fd, spool.path)

    # -- manifests and tags -------------------------------------------------

    async def read_manifest(self, registry: str, digest: Digest) -> StoredManifest | None:
        path = self.manifest_path(registry, digest)
        found = await self._run(_read_manifest, path)
        if found is None:
            return None
        body, media_type = found
        return StoredManifest(body, media_type)

    async def write_manifest(
        self, registry: str, digest: Digest, body: bytes, media_type: str
    ) -> None:
        path = self.manifest_path(registry, digest)
        # The type goes first: a manifest without its type is not served,
        # and a type without its manifest is harmless.
        await self._write_file(path + ".type", media_type.encode("utf-8"))
        await self._write_file(path, body)
        self.count_committed(len(body))

    async def cache_stamp(self) -> bytes | None:
        """The current `CACHE_STAMP`: when it changes, files went."""
        stamp: bytes | None = await self._run(_read_small, os.path.join(self.root, CACHE_STAMP))
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

    async def _write_file(self, path: str, data: bytes) -> None:
        spool = await self.new_spool()
        try:
            await self._run(_write_and_commit, spool.fd, spool.path, path, data)
        except OSError as e:
            self.writes.failed(e)
            raise
        self.writes.succeeded()


# -- the blocking halves, run off the reactor thread ------------------------


def hash_all(hasher: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


def _write_all(fd: int, offset: int, chunks: list[bytes]) -> int:
    written = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.pwrite(fd, view, offset + written)
            written += n
            view = view[n:]
    return written


def _hash_and_write(hasher: Any, fd: int, offset: int, chunks: list[bytes]) -> int:
    """A batch that cannot be written is still hashed (the fill relays it
    from memory)."""
    hash_all(hasher, chunks)
    try:
        return _write_all(fd, offset, chunks)
    except OSError as e:
        raise SpoolWriteFailed(e) from e


def _probe_writable(directory: str) -> str | None:
    path = os.path.join(directory, f"ready-{uuid.uuid4().hex}")
    try:
        with open(path, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        os.unlink(path)
        return None
    except OSError as e:
        return e.strerror or str(e)


def _open_for_reading(path: str) -> OpenFile | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    return OpenFile(fd, os.fstat(fd).st_size)


def _measure(root: str) -> tuple[int, int]:
    """Bytes and count of the blobs and manifests under each registry."""
    total = entries = 0
    for registry in os.listdir(root):
        if registry in ("spool", "quarantine"):
            continue
        for kind in ("blobs", "manifests"):
            for directory, _, files in os.walk(os.path.join(root, registry, kind)):
                for name in files:
                    if name.endswith(".type"):
                        continue
                    try:
                        total += os.stat(os.path.join(directory, name)).st_size
                        entries += 1
                    except FileNotFoundError:
                        pass
    return total, entries


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(fd: int, spool_path: str, final_path: str) -> None:
    """fsync, then rename into place: the final path is whole or absent.

    Leaves `fd` open; removes the spool file if it cannot be committed.
    """
    try:
        os.fsync(fd)
        directory = os.path.dirname(final_path)
        os.makedirs(directory, exist_ok=True)
        os.replace(spool_path, final_path)
        _fsync_directory(directory)
    except BaseException:
        try:
            os.unlink(spool_path)
        except FileNotFoundError:
            pass
        raise


def _discard(fd: int, spool_path: str) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
    try:
        os.unlink(spool_path)
    except FileNotFoundError:
        pass


def _write_and_commit(fd: int, spool_path: str, final_path: str, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        _discard(fd, spool_path)
        raise
    try:
        _commit(fd, spool_path, final_path)
    finally:
        os.close(fd)


def _read_small(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def _read_manifest(path: str) -> tuple[bytes, str] | None:
    media_type = _read_small(path + ".type")
    body = _read_small(path)
    if media_type is None or body is None:
        return None
    return body, media_type.decode("utf-8")


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
