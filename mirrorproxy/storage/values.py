"""What the cache and a store hand each other: records, errors, write health.

The same for every store: a tag record is JSON wherever it is kept, and a
spool file that cannot take a batch fails the same way on any backend.
"""

from __future__ import annotations

import json

from attrs import define, frozen

from ..registry.names import Digest


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
class Spool:
    """A file being written, not yet anywhere a reader would look."""

    fd: int
    path: str


@frozen
class StoredBlob:
    """A committed blob as eviction weighs it: its size and when it was
    last served (or written)."""

    registry: str
    digest: Digest
    size: int
    last_used: float


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
