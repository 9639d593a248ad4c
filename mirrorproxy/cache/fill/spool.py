"""A fill's spool file: written and hashed batch by batch, shared with each
follower, then committed into the cache or discarded.

Each batch is written and hashed in one pool job, so neither write nor
sha256 of a large buffer blocks the reactor.  When the file cannot take the
bytes (disk full, read-only cache) they are still hashed, and kept for the
followers in a relay tail instead: the blob reaches its clients uncached.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ...common.runner import Runner
from ...registry.names import Digest
from ...storage import ICacheStore
from ...storage.fileops import hash_all
from ...storage.values import Spool, SpoolWriteFailed
from .state import FailureKind
from .tail import RelayTail
from .writes import WriteQueue

# The fill's events, whichever of its parts tells them.
log = Logger(namespace=__package__)


def _empty_descriptor() -> int:
    """A descriptor for followers of a fill with no spool file.

    They take every byte from memory (`in_file` stays 0) and never read it;
    were one to, it would read nothing and abort, never send wrong bytes.
    /dev/null is no disk file: opening it cannot block the reactor.
    """
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


@define(eq=False)
class SpoolWriter:
    """Writes one blob's bytes in order; `on_batch` after each batch is
    written (or relayed), `on_error` if one cannot even be hashed."""

    _store: ICacheStore
    _run: Runner
    _digest: Digest
    _on_batch: Callable[[], None]
    _on_error: Callable[[str], None]
    written: int = 0  # bytes in the file
    hashed: int = 0
    _queue: WriteQueue = field(factory=WriteQueue)
    # Relaying: bytes past `written` are kept here until every follower has
    # sent them; nothing will be committed.
    tail: RelayTail | None = None
    _spool: Spool | None = None
    _hasher: Any = field(factory=hashlib.sha256)
    _abandoned: Deferred[None] | None = None

    async def create(self) -> None:
        try:
            self._spool = await self._store.new_spool()
        except OSError as e:
            # Read-only, out of inodes, out of quota: the cache cannot take a
            # byte, the clients still can.  Relay it all from memory.
            log.error(
                "cannot create a spool file for blob {digest} ({error}): relaying it to "
                "its clients without caching it",
                digest=str(self._digest),
                error=str(e),
            )
            self.tail = RelayTail()

    @property
    def has_file(self) -> bool:
        """Whether the spool file is open (not yet released or discarded)."""
        return self._spool is not None

    def add(self, data: bytes) -> None:
        self._queue.add(data)
        if self.tail is not None:
            self.tail.add(data)

    def write_next(self) -> bool:
        """Start writing what waits, unless a batch is being written; whether it started."""
        batch = self._queue.take()
        if batch is None:
            return False
        d = Deferred.fromCoroutine(self._write(batch))
        d.addCallbacks(self._wrote, self._write_failed, errbackArgs=(batch,))
        return True

    async def _write(self, batch: list[bytes]) -> int:
        # One pool job per batch, hash then write: a job of its own for each
        # would cost a second thread hop, and at a MiB or more a batch the
        # hops, not the work, are what costs the reactor.
        if self.tail is not None:
            await self._run(hash_all, self._hasher, batch)
            return 0
        assert self._spool is not None
        return await self._store.write_spool(self._spool, self.written, batch, self._hasher)

    def _wrote(self, count: int) -> None:
        size = self._queue.done()
        if self._abandoned is not None:
            self._discard()
            return
        self.written += count
        self.hashed += size
        self._on_batch()

    def _write_failed(self, failure: Failure, batch: list[bytes]) -> None:
        size = self._queue.done()
        if self._abandoned is not None:
            self._discard()
            return
        refused = failure.value
        if not isinstance(refused, SpoolWriteFailed):
            self._on_error(f"cannot hash the blob: {failure.getErrorMessage()}")
            return
        # The cache cannot take it; the clients still can.  The batch was
        # hashed; it and everything after it is relayed from memory.
        log.error(
            "cannot write blob {digest} to the cache ({error}): relaying it to its "
            "clients without caching it",
            digest=str(self._digest),
            error=str(refused.error),
        )
        self.hashed += size
        self.tail = RelayTail(self.written, deque(batch + self._queue.waiting()))
        self._on_batch()

    def full(self) -> bool:
        """Upstream must pause: the disk lags, or a relay's slowest follower does."""
        return self._queue.full() or (self.tail is not None and self.tail.full())

    def drained(self) -> bool:
        """Upstream may go on, as far as the bytes held in memory are concerned."""
        return self._queue.drained() and (self.tail is None or self.tail.drained())

    @property
    def idle(self) -> bool:
        """Nothing being written, nothing waiting."""
        return self._queue.idle

    def mismatch(self, expected: int | None) -> tuple[FailureKind, str] | None:
        """Why the bytes hashed so far are not the blob, if they are not."""
        if expected is not None and self.hashed != expected:
            return FailureKind.LENGTH, f"upstream sent {self.hashed} of {expected} bytes"
        actual = self._hasher.hexdigest()
        if actual != self._digest.hex:
            return FailureKind.DIGEST, f"content hashes to sha256:{actual}"
        return None

    def descriptor(self) -> Deferred[int]:
        """A descriptor of the file of its own for one follower (who closes
        it), or that follower's own failure when the process has none left."""
        try:
            fd = _empty_descriptor() if self._spool is None else self._store.share(self._spool.fd)
        except OSError as e:
            log.error(
                "a client of blob {digest} got no file descriptor ({error}); the fill goes on",
                digest=str(self._digest),
                error=str(e),
            )
            return fail(e)
        return succeed(fd)

    async def commit(self, registry: str) -> None:
        """Move the verified file into the cache.  Its descriptor stays open
        until `release`: late joiners still share it, after the rename too."""
        assert self._spool is not None
        await self._store.commit_blob(self._spool, registry, self._digest)

    def release(self) -> None:
        """Close the file's descriptor once no one can join the fill any more."""
        spool, self._spool = self._spool, None
        if spool is not None:
            os.close(spool.fd)

    def abandon(self) -> Deferred[None]:
        """Write nothing more, and remove the file once no write is in
        flight (closing under a write could let another file be written);
        fires when it is gone."""
        self._queue.drop()
        self._abandoned = Deferred()
        if not self._queue.writing:
            self._discard()
        return self._abandoned

    def _discard(self) -> None:
        assert self._abandoned is not None
        Deferred.fromCoroutine(self._discard_spool()).chainDeferred(self._abandoned)

    async def _discard_spool(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            await self._store.discard(spool)
