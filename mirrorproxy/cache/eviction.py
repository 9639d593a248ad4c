"""Keeping the cache under its size: least recently used blobs go first.

The store records a blob's last use when the cache serves it (see
`ICacheStore.mark_used`), so recency survives restarts.  When the cache grows
past its limit, blobs are removed oldest first until it is under the
low-water mark; a blob being filled or served right now is never removed,
and a removed blob is simply fetched again the next time someone asks for it.
"""

from __future__ import annotations

import re
from typing import Callable

from attrs import define
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..registry.names import Digest
from ..storage import ICacheStore
from ..storage.values import StoredBlob

log = Logger()

LOW_WATER = 0.9
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
    _store: ICacheStore
    _max_bytes: int
    # (registry, digest) pairs that must stay: being filled or served.
    _in_use: Callable[[], set[tuple[str, str]]]
    evicted: int = 0
    _running: bool = False

    def touch(self, registry: str, digest: Digest) -> None:
        """Mark a blob as just used (errors don't matter)."""
        Deferred.fromCoroutine(self._store.mark_used(registry, digest)).addErrback(lambda _: None)

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
        excess = self._store.bytes - int(self._max_bytes * LOW_WATER)
        removed = freed = 0
        for blob in _least_recently_used(await self._store.stored_blobs()):
            if freed >= excess:
                break
            # Asked again for each: a request may have started on it since.
            if (blob.registry, str(blob.digest)) in self._in_use():
                continue
            size = await self._store.remove_blob(blob.registry, blob.digest)
            if size is not None:
                removed += 1
                freed += size
        self.evicted += removed
        log.info(
            "evicted {count} blobs ({freed} bytes); cache now {size} bytes",
            count=removed,
            freed=freed,
            size=self._store.bytes,
        )


def _least_recently_used(blobs: list[StoredBlob]) -> list[StoredBlob]:
    return sorted(blobs, key=lambda b: (b.last_used, b.size, b.registry, b.digest.hex))
