"""Where a cluster node's fill takes its bytes from, in order: the bucket,
the node holding the digest's claim, upstream under this node's claim."""

from __future__ import annotations

from collections import Counter

from attrs import define, field
from twisted.internet.defer import Deferred

from mirrorproxy.cache.cluster.origin import BlobSource, ClusterOrigin
from mirrorproxy.cluster.claims import ClaimHolder, HeldBy, LocalOnly
from mirrorproxy.registry.names import Digest

DIGEST = Digest("a" * 64)


@define
class FakeClaim:
    """A claim as FillClaims.claim gives it: held, and already renewing."""

    held: bool = True
    released: bool = False

    def start_renewing(self) -> None:
        raise AssertionError("a claim comes renewing; a second renewal loop would never stop")

    async def release(self) -> bool:
        self.released, self.held = True, False
        return True


@define
class FakeNode:
    bucket: object | None = None
    claims: list[object] = field(factory=list)
    peer: object | None = None
    asked: list[str] = field(factory=list)
    fills_by_source: Counter[str] = field(factory=Counter)

    async def from_bucket(self, registry: str, digest: Digest, start: int) -> object | None:
        self.asked.append(f"bucket {start}")
        # A list: the bucket's answers in turn (it may gain the blob).
        return self.bucket.pop(0) if isinstance(self.bucket, list) else self.bucket

    async def claim(self, registry: str, digest: Digest) -> object:
        self.asked.append("claim")
        return self.claims.pop(0)

    async def from_peer(self, url: str, registry: str, repository: str, digest: Digest, start: int) -> object | None:
        self.asked.append(f"peer {url} {registry} {start}")
        # A list: the peers' answers in turn.
        return self.peer.pop(0) if isinstance(self.peer, list) else self.peer

    async def take_over(self, registry: str, digest: Digest, gone: ClaimHolder) -> object:
        self.asked.append(f"take over from {gone.node_id}")
        return self.claims.pop(0)


@define
class FakeRegistry:
    namespace: str = "docker.io"


@define
class FakeUpstream:
    registry: FakeRegistry = field(factory=FakeRegistry)
    asked: list[int] = field(factory=list)

    async def get_blob(self, repository: str, digest: Digest, start: int = 0) -> object:
        self.asked.append(start)
        return f"upstream from {start}"


def ask(origin: ClusterOrigin, start: int = 0) -> object:
    result: list[object] = []
    Deferred.fromCoroutine(origin.get_blob("library/alpine", DIGEST, start)).addBoth(result.append)
    [answer] = result
    if isinstance(answer, BaseException):
        raise answer
    return answer


def origin_over(node: FakeNode, upstream: FakeUpstream) -> ClusterOrigin:
    return ClusterOrigin(node, "docker.io", upstream)  # type: ignore[arg-type]


def test_the_bucket_first_and_nothing_else_when_it_has_the_blob():
    node, upstream = FakeNode(bucket="bucket bytes"), FakeUpstream()
    origin = origin_over(node, upstream)

    assert ask(origin) == "bucket bytes"
    assert (node.asked, upstream.asked, origin.source) == (["bucket 0"], [], BlobSource.BUCKET)


def test_without_the_bucket_a_won_claim_fetches_upstream_and_is_renewed_then_released():
    claim = FakeClaim()
    node, upstream = FakeNode(claims=[claim]), FakeUpstream()
    origin = origin_over(node, upstream)

    assert ask(origin) == "upstream from 0"
    assert (node.asked, origin.claim, origin.source) == (
        ["bucket 0", "claim", "bucket 0"],
        claim,
        BlobSource.UPSTREAM,
    )
    # A resume keeps the claim and does not ask the bucket again.
    assert ask(origin, 100) == "upstream from 100"
    assert node.asked == ["bucket 0", "claim", "bucket 0"]
    Deferred.fromCoroutine(origin.finished())
    assert claim.released


def test_a_claim_held_elsewhere_is_followed_at_that_node():
    holder = ClaimHolder("node-a", "http://10.0.0.5:5000", "t")
    node, upstream = FakeNode(claims=[HeldBy(holder)], peer="peer bytes"), FakeUpstream()
    origin = origin_over(node, upstream)

    assert ask(origin) == "peer bytes"
    assert node.asked == ["bucket 0", "claim", "peer http://10.0.0.5:5000 docker.io 0"]
    assert (upstream.asked, origin.source, dict(node.fills_by_source)) == ([], BlobSource.PEER, {"peer": 1})


def test_a_peer_that_died_mid_blob_is_asked_no_more_once_the_claim_is_free():
    holder = ClaimHolder("node-a", "http://10.0.0.5:5000", "t")
    claim = FakeClaim()
    node, upstream = FakeNode(claims=[HeldBy(holder), HeldBy(holder), claim], peer="peer bytes"), FakeUpstream()
    origin = origin_over(node, upstream)
    ask(origin)

    # The peer's connection broke at byte 500: it died, its claim is still there.
    node.peer = None
    assert ask(origin, 500) == "upstream from 500"
    assert node.asked[-4:] == ["claim", "peer http://10.0.0.5:5000 docker.io 500", "take over from node-a", "bucket 500"]
    assert origin.claim is claim
    assert dict(node.fills_by_source) == {"peer": 1, "upstream": 1}


def test_a_claim_whose_holder_cannot_give_the_blob_is_taken_over():
    holder = ClaimHolder("node-a", "http://10.0.0.5:5000", "t")
    claim = FakeClaim()
    node, upstream = FakeNode(claims=[HeldBy(holder), claim], peer=None), FakeUpstream()
    origin = origin_over(node, upstream)

    assert ask(origin) == "upstream from 0"
    assert node.asked[2:] == ["peer http://10.0.0.5:5000 docker.io 0", "take over from node-a", "bucket 0"]
    assert origin.claim is claim


def test_a_claim_taken_over_by_another_node_first_is_followed_there():
    dead = ClaimHolder("node-a", "http://10.0.0.5:5000", "t")
    alive = ClaimHolder("node-c", "http://10.0.0.7:5000", "u")
    node, upstream = FakeNode(claims=[HeldBy(dead), HeldBy(alive)], peer=[None, "peer c bytes"]), FakeUpstream()
    origin = origin_over(node, upstream)

    assert ask(origin) == "peer c bytes"
    assert node.asked[-1] == "peer http://10.0.0.7:5000 docker.io 0"
    assert upstream.asked == [] and origin.source is BlobSource.PEER


def test_redis_away_means_upstream_without_a_claim():
    node, upstream = FakeNode(claims=[LocalOnly("redis unreachable")]), FakeUpstream()
    origin = origin_over(node, upstream)

    assert ask(origin) == "upstream from 0"
    assert origin.claim is None
    Deferred.fromCoroutine(origin.finished())


def test_a_claim_won_just_after_its_holder_finished_takes_the_bucket_not_upstream():
    claim = FakeClaim()
    node, upstream = FakeNode(bucket=[None, "bucket bytes"], claims=[claim]), FakeUpstream()
    origin = origin_over(node, upstream)

    assert ask(origin) == "bucket bytes"
    assert (upstream.asked, claim.released, origin.claim) == ([], True, None)
