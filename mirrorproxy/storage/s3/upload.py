"""Committing a spool to the bucket: one PUT, or a multipart upload for a
large blob, each byte covered by a sha256 the server checks, and the object
put in place only if none is there yet (``If-None-Match: *``): two nodes
committing the same digest never overwrite each other, and the loser learns
the blob is there (the same bytes, since the key is their digest).

A failed or interrupted multipart upload is aborted, so it leaves no parts
behind to be billed or to clutter the bucket.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from attrs import define
from twisted.logger import Logger

from ...common.runner import Runner
from ...registry.names import Digest
from .body import SpoolBody
from .bucket import Bucket, S3Error, b64_sha256
from .transfer import Transfer

log = Logger()

MiB = 1024 * 1024
# Below this, one PUT; above, a multipart upload (S3 takes at most 5 GiB in
# a PUT, and a part failing costs less to redo than a whole blob).
MULTIPART_THRESHOLD = 64 * MiB
PART_SIZE = 16 * MiB
# S3's limits: parts of at least 5 MiB (but the last), at most 10000 of them.
MIN_PART_SIZE, MAX_PARTS = 5 * MiB, 10_000
_HASH_CHUNK = MiB


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each part of a `size`-byte upload."""
    part = max(part_size, MIN_PART_SIZE, -(-size // MAX_PARTS))
    return [(offset, min(part, size - offset)) for offset in range(0, size, part)]


def _hash_range(fd: int, offset: int, length: int, whole: Any) -> str:
    """The sha256 of a range of the spool, fed to `whole` too (blocking)."""
    part = hashlib.sha256()
    position, end = offset, offset + length
    while position < end:
        chunk = os.pread(fd, min(_HASH_CHUNK, end - position), position)
        if not chunk:
            raise S3Error(f"the spool ended at {position} bytes, before {end}")
        part.update(chunk)
        whole.update(chunk)
        position += len(chunk)
    return part.hexdigest()


@define(eq=False)
class Uploader:
    _bucket: Bucket
    _transfer: Transfer
    _run: Runner
    multipart_threshold: int = MULTIPART_THRESHOLD
    part_size: int = PART_SIZE

    async def upload(self, fd: int, size: int, key: str, digest: Digest) -> bool:
        """Put the spool at `fd` (`size` bytes, sha256 `digest`) at `key`;
        False if the object was already there."""
        if size < self.multipart_threshold:
            body = SpoolBody(fd, 0, size, self._run)
            return await self._transfer.put(key, body, digest.hex, if_absent=True)
        # A large blob another node already holds is not uploaded again.
        if await self._run(self._bucket.head, key) is not None:
            return False
        return await self._multipart(fd, size, key, digest)

    async def _multipart(self, fd: int, size: int, key: str, digest: Digest) -> bool:
        upload_id: str = await self._run(self._bucket.start_upload, key)
        try:
            whole = hashlib.sha256()
            parts = []
            for number, (offset, length) in enumerate(part_ranges(size, self.part_size), 1):
                part_hex: str = await self._run(_hash_range, fd, offset, length, whole)
                body = SpoolBody(fd, offset, length, self._run)
                etag = await self._transfer.put_part(key, upload_id, number, body, part_hex)
                parts.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": b64_sha256(part_hex)})
            # The server checks each part; the whole is ours to check.
            if whole.hexdigest() != digest.hex:
                raise S3Error(f"S3 upload s3://{self._bucket.name}/{key}: the spool is not {digest}")
            completed: bool = await self._run(self._bucket.complete_upload, key, upload_id, parts)
        except BaseException:
            await self._abort(key, upload_id)
            raise
        if not completed:  # another node's upload got there first
            await self._abort(key, upload_id)
        return completed

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._run(self._bucket.abort_upload, key, upload_id)
        except S3Error as e:
            log.warn(
                "cannot abort the upload {upload_id} of {key}: {error}", upload_id=upload_id, key=key, error=e
            )
