"""Spool files on local disk: where a fill writes a blob before it is
verified and committed, whatever store the blob is committed to."""

from __future__ import annotations

import builtins
import errno
import os
import uuid
from typing import Any

from attrs import frozen

from ..common.runner import Runner
from .fileops import _discard, _hash_and_write
from .values import Spool, SpoolWriteFailed, WriteHealth


@frozen
class LocalSpools:
    directory: str
    _run: Runner
    # The store's: a spool that cannot be written is a write that failed.
    _writes: WriteHealth

    async def new(self) -> Spool:
        path = os.path.join(self.directory, uuid.uuid4().hex)
        try:
            fd: int = await self._run(os.open, path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                self._writes.failed(e)
            raise
        return Spool(fd, path)

    async def write(self, spool: Spool, offset: int, chunks: list[builtins.bytes], hasher: Any) -> int:
        """Hash a batch, then write it at `offset`, in one pool job (the
        hops, not the work, are what a batch of a MiB costs the reactor)."""
        try:
            written: int = await self._run(_hash_and_write, hasher, spool.fd, offset, chunks)
        except SpoolWriteFailed as e:
            self._writes.failed(e.error)
            raise
        self._writes.succeeded()
        return written

    async def discard(self, spool: Spool) -> None:
        await self._run(_discard, spool.fd, spool.path)
