"""Where one fill's bytes come from on a node of a cluster.

Asked for the blob (and again, from where it stopped, after a failure), the
origin tries in turn: the bucket, if it holds the blob; the node holding the
digest's fill claim, if another holds it; upstream, under this node's claim
(or, when Redis cannot coordinate, under none: this node then only
coalesces its own clients).  A peer that dies mid-blob is noticed by the
fill as a connection lost, and the next ask finds its claim expiring: the
rest then comes from upstream with a Range.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from attrs import define
from twisted.logger import Logger
from twisted.web.iweb import IResponse

from ...cluster.claims import Claim, HeldBy, LocalOnly
from ...registry.names import Digest
from ...upstream.client import UpstreamClient

if TYPE_CHECKING:
    from .node import ClusterNode

log = Logger()


class BlobSource(enum.Enum):
    BUCKET = "bucket"
    PEER = "peer"
    UPSTREAM = "upstream"


@define(eq=False)
class ClusterOrigin:
    _node: ClusterNode
    registry: str
    _upstream: UpstreamClient
    # Where the latest answer came from.
    source: BlobSource | None = None
    # This node's claim on the digest, while it fetches it from upstream.
    claim: Claim | None = None
    _bucket_may_have: bool = True

    async def get_blob(self, repository: str, digest: Digest, start: int = 0) -> IResponse:
        if self._bucket_may_have:
            response = await self._node.from_bucket(self.registry, digest, start)
            if response is not None:
                return self._answered(BlobSource.BUCKET, response)
            self._bucket_may_have = False
        if self.claim is None or not self.claim.held:
            claimed = await self._node.claim(self.registry, digest)
            if isinstance(claimed, HeldBy):
                response = await self._follow(claimed, repository, digest, start)
                if response is not None:
                    return response
                # Its holder cannot give it (dead, or holding no fill):
                # take its claim over, so later nodes follow this one.
                claimed = await self._node.take_over(self.registry, digest, claimed.holder)
                if isinstance(claimed, HeldBy):
                    response = await self._follow(claimed, repository, digest, start)
                    if response is not None:
                        return response
            if not isinstance(claimed, (HeldBy, LocalOnly)):
                # The claim may be free because its holder just finished: it
                # put the blob in the bucket before letting go.
                response = await self._node.from_bucket(self.registry, digest, start)
                if response is not None:
                    await claimed.release()
                    return self._answered(BlobSource.BUCKET, response)
                # (A claim comes renewing: it is kept until `finished`.)
                self.claim = claimed
        response = await self._upstream.get_blob(repository, digest, start)
        return self._answered(BlobSource.UPSTREAM, response)

    async def _follow(self, held: HeldBy, repository: str, digest: Digest, start: int) -> IResponse | None:
        # The peer routes by the registry's name, as clients do.
        namespace = self._upstream.registry.namespace
        response = await self._node.from_peer(held.holder.url, namespace, repository, digest, start)
        return None if response is None else self._answered(BlobSource.PEER, response)

    def _answered(self, source: BlobSource, response: IResponse) -> IResponse:
        if source is not self.source:
            self._node.fills_by_source[source.value] += 1
        self.source = source
        return response

    async def finished(self) -> None:
        """The fill is over (committed, and published if it had to be, or
        failed): the claim, if this node held one, goes."""
        if self.claim is not None:
            await self.claim.release()
            self.claim = None
