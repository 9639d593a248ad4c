"""The S3 store's blocking halves that take more than one request: each
runs in the thread pool, one call a job."""

from __future__ import annotations

import uuid

from ...registry.names import Digest
from ..values import StoredBlob
from .bucket import Bucket, Listed
from .keys import BLOBS, MANIFESTS
from .listing import last_uses


def probe(bucket: Bucket) -> None:
    """Write and delete a small object: S3Error if the bucket takes no writes."""
    bucket.check_exists()
    key = bucket.keys.probe(uuid.uuid4().hex)
    bucket.put_small(key, b"ok")
    bucket.delete(key)


def measure(bucket: Bucket) -> tuple[int, int]:
    """Bytes and count of the blobs and manifests of every registry."""
    total = entries = 0
    for registry in bucket.registries():
        for kind in (BLOBS, MANIFESTS):
            for found in bucket.listing(bucket.keys.kind(registry, kind)):
                if bucket.keys.content_at(found.key, registry, kind) is not None:
                    total += found.size
                    entries += 1
    return total, entries


def _markers(bucket: Bucket, registry: str, digest: Digest) -> list[tuple[str, float]]:
    """A blob's last-use markers: their keys and the times they record."""
    found = []
    for listed in bucket.listing(bucket.keys.markers(registry, digest)):
        marked = bucket.keys.marker_at(listed.key, registry)
        if marked is not None and marked[0] == digest:
            found.append((listed.key, marked[1]))
    return found


def last_use(bucket: Bucket, registry: str, digest: Digest) -> float | None:
    """When the blob was last used (its newest marker, else its upload); None if absent."""
    blob = bucket.head_listed(bucket.keys.blob(registry, digest))
    if blob is None:
        return None
    return max((when for _, when in _markers(bucket, registry, digest)), default=blob.modified)


def mark_used(bucket: Bucket, registry: str, digest: Digest, now: float, every: float) -> None:
    """Record a use of the blob at `now`, unless one was within `every` seconds."""
    used = last_use(bucket, registry, digest)
    if used is not None and now - used > every:
        set_last_use(bucket, registry, digest, now)


def set_last_use(bucket: Bucket, registry: str, digest: Digest, when: float) -> None:
    """One marker recording `when`; the older ones go."""
    stale = _markers(bucket, registry, digest)
    key = bucket.keys.marker(registry, digest, when)
    bucket.put_small(key, b"")
    for old, _ in stale:
        if old != key:
            bucket.delete(old)


def stored_blobs(bucket: Bucket) -> list[StoredBlob]:
    found = []
    for registry in bucket.registries():
        used = last_uses(bucket, registry)
        for listed in bucket.listing(bucket.keys.kind(registry, BLOBS)):
            blob = bucket.keys.content_at(listed.key, registry, BLOBS)
            if blob is not None:
                found.append(StoredBlob(registry, blob, listed.size, used.get(blob, listed.modified)))
    return found


def remove_blob(bucket: Bucket, registry: str, digest: Digest) -> int | None:
    """Delete the blob and its markers; its size, or None if it was not there."""
    blob: Listed | None = bucket.head_listed(bucket.keys.blob(registry, digest))
    if blob is None:
        return None
    bucket.delete(blob.key)
    for marker, _ in _markers(bucket, registry, digest):
        bucket.delete(marker)
    return blob.size
