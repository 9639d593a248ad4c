"""The filesystem store's blocking halves: each runs in the thread pool, one call a job.

Every file reaches its final path the same way: written to a spool file in
the same filesystem, fsynced, renamed; so a final path only ever holds a
complete file.  A commit tells what it added (its size, and the size of the
file it replaced, if any), so the store can keep its count without walking.
The names keep their underscore: they are the store's, and its tests name
the jobs they hold back or fail.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from .layout import BLOB, Layout
from .values import SpoolWriteFailed, StoredBlob

# What a commit did: the size it put in place, and the size of the file it
# replaced (None if the path was empty).
Committed = tuple[int, int | None]


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


def _open_for_reading(path: str) -> tuple[int, int] | None:
    """A descriptor of the file at `path` and its size; None if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    return fd, os.fstat(fd).st_size


def _read_at(fd: int, offset: int, length: int) -> bytes:
    return os.pread(fd, length, offset)


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _stored_blobs(layout: Layout) -> list[StoredBlob]:
    return [
        StoredBlob(registry, found.digest, found.size, found.changed)
        for registry in layout.registries()
        for found in layout.content(registry, BLOB)
    ]


def _touch(path: str, every: float) -> None:
    """Mark a file used now, unless it was within `every` seconds."""
    try:
        if time.time() - os.stat(path).st_mtime > every:
            os.utime(path)
    except FileNotFoundError:
        pass


def _remove(path: str) -> int | None:
    """Unlink `path`; its size, or None if it was already gone."""
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return None
    return size


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(fd: int, spool_path: str, final_path: str) -> Committed:
    """fsync, then rename into place: the final path is whole or absent.

    Leaves `fd` open; removes the spool file if it cannot be committed.
    """
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
        directory = os.path.dirname(final_path)
        os.makedirs(directory, exist_ok=True)
        replaced = _size(final_path)
        os.replace(spool_path, final_path)
        _fsync_directory(directory)
    except BaseException:
        try:
            os.unlink(spool_path)
        except FileNotFoundError:
            pass
        raise
    return size, replaced


def _discard(fd: int, spool_path: str) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
    try:
        os.unlink(spool_path)
    except FileNotFoundError:
        pass


def _write_and_commit(fd: int, spool_path: str, final_path: str, data: bytes) -> Committed:
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        _discard(fd, spool_path)
        raise
    try:
        return _commit(fd, spool_path, final_path)
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


def _read_manifest(path: str, type_path: str) -> tuple[bytes, str] | None:
    media_type = _read_small(type_path)
    body = _read_small(path)
    if media_type is None or body is None:
        return None
    return body, media_type.decode("utf-8")


def _sweep(directory: str) -> tuple[int, list[tuple[str, str]]]:
    """Remove every file in `directory`: how many went, and those that would not."""
    swept, failed = 0, []
    for entry in os.scandir(directory):
        try:
            os.unlink(entry.path)
            swept += 1
        except OSError as e:
            failed.append((entry.path, str(e)))
    return swept, failed
