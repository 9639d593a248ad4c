"""The OCI 1.1 referrers API: the manifests (signatures, SBOMs,
attestations) that name a manifest as their subject.

Upstream's answer, an image index, is relayed as it came and kept per
(repository, subject digest, artifactType) for the tag TTL, not for ever as a
manifest by digest is: referrers are added to an image over time (a new
signature, a new scan).  Past the TTL upstream is asked again, and if it
cannot answer the kept index is served stale.  A registry with the API
answers an empty index for a subject it knows nothing of; a 404 means it has
no such API (Docker Hub), which the client is told, so that it falls back to
the ``sha256-<hex>`` tag schema (ordinary tags, which the mirror serves like
any other).  The 404 is remembered for the negative TTL, for that subject
only: it says nothing about the repository's manifests.
"""

from __future__ import annotations

import json
from collections import OrderedDict

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..common.coalescer import Coalescer
from ..registry.names import Digest
from ..upstream.answers import ReferrersPage
from ..upstream.client import UpstreamClient
from ..upstream.errors import (
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .negative import NotFoundCache
from .outcomes import Outcome

log = Logger()

# Indexes kept in memory, oldest dropped first.
MEMORY_BUDGET = 16 * 1024 * 1024

_Key = tuple[str, Digest, str | None]


@frozen
class ServedReferrers:
    body: bytes = field(repr=False)
    filters_applied: str | None
    outcome: Outcome


@define(eq=False)
class ReferrersCache:
    _upstream: UpstreamClient
    _clock: IReactorTime
    _ttl: float
    _missing: NotFoundCache
    _pages: OrderedDict[_Key, tuple[float, ReferrersPage]] = field(factory=OrderedDict)
    _size: int = 0
    _fetches: Coalescer = field(factory=Coalescer)

    async def get(self, repository: str, subject: Digest, artifact_type: str | None) -> ServedReferrers:
        key = (repository, subject, artifact_type)
        cached = self._pages.get(key)
        if cached is not None and self._clock.seconds() - cached[0] < self._ttl:
            self._pages.move_to_end(key)
            return _served(cached[1], Outcome.HIT)
        reference = _reference(subject, artifact_type)
        self._missing.check(repository, reference)
        try:
            page: ReferrersPage = await self._fetches.run(
                key, lambda: Deferred.fromCoroutine(self._fetch(repository, subject, artifact_type))
            )
        except (UpstreamUnavailable, UpstreamTimeout, UpstreamRateLimited) as e:
            if cached is None:
                raise
            log.warn(
                "serving the referrers of {repository}@{subject} stale: {error}",
                repository=repository,
                subject=str(subject),
                error=str(e),
            )
            return _served(cached[1], Outcome.STALE)
        except UpstreamNotFound:
            self._drop(key)
            raise
        self._keep(key, page)
        return _served(page, Outcome.MISS)

    async def _fetch(self, repository: str, subject: Digest, artifact_type: str | None) -> ReferrersPage:
        try:
            return await self._upstream.get_referrers(repository, subject, artifact_type)
        except UpstreamNotFound as e:
            # Remembered for this subject alone, whatever code it came with.
            missing = UpstreamNotFound(None if e.code == "NAME_UNKNOWN" else e.code, e.message)
            self._missing.remember(repository, _reference(subject, artifact_type), missing)
            raise missing from None

    def _keep(self, key: _Key, page: ReferrersPage) -> None:
        self._drop(key)
        self._pages[key] = (self._clock.seconds(), page)
        self._size += len(page.body)
        while self._size > MEMORY_BUDGET and len(self._pages) > 1:
            _, (_, old) = self._pages.popitem(last=False)
            self._size -= len(old.body)

    def _drop(self, key: _Key) -> None:
        entry = self._pages.pop(key, None)
        if entry is not None:
            self._size -= len(entry[1].body)


def _reference(subject: Digest, artifact_type: str | None) -> str:
    """The negative cache's reference for a referrers answer: no tag has a "/"."""
    return f"referrers/{subject}" + (f"?artifactType={artifact_type}" if artifact_type else "")


def _served(page: ReferrersPage, outcome: Outcome) -> ServedReferrers:
    return ServedReferrers(page.body, page.filters_applied, outcome)


def subject_of(body: bytes) -> Digest | None:
    """The digest of the manifest `body` names as its subject (OCI 1.1), if any."""
    if b'"subject"' not in body:
        return None
    try:
        subject = json.loads(body).get("subject")
        return Digest.parse(subject["digest"]) if isinstance(subject, dict) else None
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
