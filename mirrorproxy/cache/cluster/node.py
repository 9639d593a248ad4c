"""What this node shares with the other nodes of its cluster: the bucket,
the fill claims in Redis, the peers' fills; and what it counts of them.

Nothing here is allowed to make a pull fail that a single mirror would
serve: the bucket unreachable means fills from peers or upstream and no
upload (logged, counted); Redis unreachable means each node coalesces only
its own clients (the claims answer local-only).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IResponse

from ...cluster.claims import ClaimHolder, ClaimOutcome, LocalOnly
from ...cluster.coordination import Coordination
from ...registry.names import Digest
from ...storage import ICacheStore, IDescriptorBlob
from ...storage.s3.store import S3Store
from ...upstream.client import UpstreamClient
from .origin import ClusterOrigin
from .peers import peer_blob

log = Logger()

# How long a presigned GET stays good: long enough for a slow client to
# fetch a large layer (SigV4 allows up to a week).
PRESIGNED_EXPIRY = 6 * 3600
# Digests known to be in the bucket, for redirecting hits without asking it.
_KNOWN_IN_BUCKET = 100_000


@define(eq=False)
class ClusterNode:
    bucket: S3Store
    # None: no Redis; each node fetches for its own clients only.
    coordination: Coordination | None
    # For following other nodes' fills.
    peers: Any
    node_id: str
    _clock: IReactorTime
    # Fills by where their bytes came from ("bucket", "peer", "upstream").
    fills_by_source: Counter[str] = field(factory=Counter)
    # Blobs put in the bucket by this node: "added", "present" (another
    # node was first), "failed".
    uploads: Counter[str] = field(factory=Counter)
    # Calls to the bucket that failed, by what was asked.
    bucket_errors: Counter[str] = field(factory=Counter)
    # Cached blob GETs: "off", "presigned", or a CDN's base URL.
    redirect: str = "off"
    _in_bucket: OrderedDict[tuple[str, Digest], None] = field(factory=OrderedDict)

    def origin(self, registry: str, upstream: UpstreamClient) -> ClusterOrigin:
        return ClusterOrigin(self, registry, upstream)

    async def from_bucket(self, registry: str, digest: Digest, start: int) -> IResponse | None:
        try:
            response: IResponse | None = await self.bucket.blob_response(registry, digest, start)
            return response
        except Exception as e:
            self.bucket_errors["read"] += 1
            log.warn("bucket: cannot read {digest}: {error}", digest=str(digest), error=str(e))
            return None

    async def blob_size(self, registry: str, digest: Digest) -> int | None:
        try:
            size: int | None = await self.bucket.blob_size(registry, digest)
            return size
        except Exception as e:
            self.bucket_errors["head"] += 1
            log.warn("bucket: cannot look up {digest}: {error}", digest=str(digest), error=str(e))
            return None

    async def redirect_url(self, registry: str, digest: Digest) -> str | None:
        """Where to send a client for a blob the bucket holds (presigned,
        or through the CDN); None to serve it from here."""
        if self.redirect == "off":
            return None
        if (registry, digest) not in self._in_bucket:
            if await self.blob_size(registry, digest) is None:
                return None
            self._known(registry, digest)
        if self.redirect != "presigned":
            return f"{self.redirect}/{self.bucket.bucket.keys.blob(registry, digest)}"
        try:
            return await self.bucket.presigned_get(registry, digest, PRESIGNED_EXPIRY)
        except Exception as e:
            self.bucket_errors["presign"] += 1
            log.warn("bucket: cannot presign {digest}: {error}", digest=str(digest), error=str(e))
            return None

    def _known(self, registry: str, digest: Digest) -> None:
        self._in_bucket[(registry, digest)] = None
        self._in_bucket.move_to_end((registry, digest))
        while len(self._in_bucket) > _KNOWN_IN_BUCKET:
            self._in_bucket.popitem(last=False)

    def used(self, registry: str, digest: Digest) -> None:
        """A hit: the bucket's last-use marker (the store writes it at most
        hourly), which the admin command's gc weighs."""

        def failed(failure: Any) -> None:
            self.bucket_errors["mark used"] += 1

        Deferred.fromCoroutine(self.bucket.mark_used(registry, digest)).addErrback(failed)

    async def claim(self, registry: str, digest: Digest) -> ClaimOutcome:
        if self.coordination is None:
            return LocalOnly("no redis")
        return await self.coordination.claims.claim(registry, digest)

    async def take_over(self, registry: str, digest: Digest, gone: ClaimHolder) -> ClaimOutcome:
        if self.coordination is None:
            return LocalOnly("no redis")
        return await self.coordination.claims.take_over(registry, digest, gone)

    async def from_peer(
        self, url: str, registry: str, repository: str, digest: Digest, start: int
    ) -> IResponse | None:
        return await peer_blob(self.peers, self.node_id, url, registry, repository, digest, start)

    async def publish(self, local: ICacheStore, registry: str, digest: Digest) -> None:
        """Put what this node's cache just committed in the bucket, for the
        other nodes (and this one, once its local tier lets it go)."""
        opened = await local.open_blob(registry, digest)
        if opened is None:
            return
        try:
            # The local tier is a filesystem store: its blobs are files.
            assert IDescriptorBlob.providedBy(opened)
            added = await self.bucket.upload_blob(opened.fd, registry, digest)
        except Exception as e:
            self.uploads["failed"] += 1
            log.warn("bucket: cannot upload {digest}: {error}", digest=str(digest), error=str(e))
            return
        finally:
            opened.close()
        self.uploads["added" if added else "present"] += 1
        self._known(registry, digest)
