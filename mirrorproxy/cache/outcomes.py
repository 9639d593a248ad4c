"""What the cache did for an answer: the ``X-Cache`` header, the metrics'
``outcome`` label, the access log's ``cache`` field."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    HIT = "HIT"  # from the cache
    MISS = "MISS"  # fetched from upstream for this request
    JOIN = "JOIN"  # joined a fetch already under way
    REVALIDATED = "REVALIDATED"  # a tag past its TTL, upstream said it is unchanged
    STALE = "STALE"  # upstream failed; the cached answer, past its TTL
    REDIRECT = "REDIRECT"  # a cluster's cached blob: the client sent to the bucket (or its CDN)

    @property
    def from_cache(self) -> bool:
        """Whether the bytes came from the cache rather than from upstream."""
        return self is not Outcome.MISS and self is not Outcome.JOIN
