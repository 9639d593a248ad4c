"""Keeping the cache under its size: least recently used blobs go first.

A blob file's mtime is its last use: the cache touches it when it serves it
(at most once per `TOUCH_EVERY`), so recency survives restarts and needs no
database beside the files.  When the cache grows past its limit, blobs are
removed oldest first until it is under the low-water mark; a blob being
filled or served right now is never removed, and a removed blob is simply
fetched again the next time someone asks for it.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable

from attrs import define
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..common.runner import Runner
from ..registry.names import Digest
from ..storage.filesystem import FilesystemStore

log = Logger()

LOW_WATER = 0.9
# Touching every hit would be a write per request; an hour is precise enough.
TOUCH_EVERY = 3600.0
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``50G``, ``512M``, ``1.5T``, ``1000000``: binary units."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (e.g. 50G, 512M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@define(eq=False)
class Evictor:
    _store: FilesystemStore
    _run: Runner
    _max_bytes: int
    # (registry, digest) pairs that must stay: being filled or served.
    _in_use: Callable[[], set[tuple[str, str]]]
    evicted: int = 0
    _running: bool = False

    def touch(self, registry: str, digest: Digest) -> None:
        """Mark a blob as just used (in the pool; errors don't matter)."""
        self._run(_touch, self._store.blob_path(registry, digest)).addErrback(lambda _: None)

    def check(self) -> None:
        """Evict if the cache is over its limit; one eviction at a time."""
        if self._running or self._store.bytes is None or self._store.bytes <= self._max_bytes:
            return
        self._running = True
        Deferred.fromCoroutine(self._evict()).addBoth(self._done)

    def _done(self, result: object) -> None:
        self._running = False
        if isinstance(result, Exception):
            log.error("eviction failed: {error}", error=str(result))

    async def _evict(self) -> None:
        # Count again first: `mirrorproxy gc`, `purge` and `verify` remove
        # files behind the service's back.
        await self._store.measure()
        assert self._store.bytes is not None
        if self._store.bytes <= self._max_bytes:
            return
        target = int(self._max_bytes * LOW_WATER)
        excess = self._store.bytes - target
        protected = {os.path.join(r, "blobs", "sha256", d[7:9], d[7:]) for r, d in self._in_use()}
        removed, freed = await self._run(_evict_oldest, self._store.root, excess, protected)
        self.evicted += removed
        if self._store.bytes is not None and self._store.entries is not None:
            self._store.bytes -= freed
            self._store.entries -= removed
        log.info(
            "evicted {count} blobs ({freed} bytes); cache now {size} bytes",
            count=removed,
            freed=freed,
            size=self._store.bytes,
        )


def _touch(path: str) -> None:
    try:
        if time.time() - os.stat(path).st_mtime > TOUCH_EVERY:
            os.utime(path)
    except FileNotFoundError:
        pass


def _evict_oldest(root: str, excess: int, protected: set[str]) -> tuple[int, int]:
    """Remove least recently used blobs until `excess` bytes are freed."""
    candidates = []
    for registry in os.listdir(root):
        blobs = os.path.join(root, registry, "blobs")
        if not os.path.isdir(blobs):
            continue
        for directory, _, files in os.walk(blobs):
            for name in files:
                path = os.path.join(directory, name)
                if os.path.relpath(path, root) in protected:
                    continue
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    continue
                candidates.append((info.st_mtime, info.st_size, path))
    candidates.sort()
    removed = freed = 0
    for _, size, path in candidates:
        if freed >= excess:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed += 1
        freed += size
    return removed, freed
