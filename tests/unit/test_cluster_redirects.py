"""--blob-redirect on a cluster node: where a cached blob's GET is sent."""

from __future__ import annotations

from attrs import define, field
from twisted.internet.task import Clock

from mirrorproxy.cache.cluster.node import PRESIGNED_EXPIRY, ClusterNode
from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.s3.keys import Keys
from mirrorproxy.storage.s3.location import S3Location

from .cachebuilder import run

DIGEST = Digest("ab" * 32)


@define
class FakeBucketObject:
    keys: Keys = field(factory=lambda: Keys(S3Location("mirror-cache", "hub/")))


@define
class FakeBucket:
    holds: bool = True
    bucket: FakeBucketObject = field(factory=FakeBucketObject)
    heads: int = 0
    presigned: list[int] = field(factory=list)

    async def blob_size(self, registry: str, digest: Digest) -> int | None:
        self.heads += 1
        return 5 if self.holds else None

    async def presigned_get(self, registry: str, digest: Digest, expires: int) -> str:
        self.presigned.append(expires)
        return f"http://s3.internal:8333/mirror-cache/hub/{registry}/signed?X-Amz-Expires={expires}"


def node(redirect: str, bucket: FakeBucket) -> ClusterNode:
    return ClusterNode(bucket, None, None, "node-a", Clock(), redirect=redirect)  # type: ignore[arg-type]


def test_a_cdn_gets_the_objects_key_under_its_base():
    bucket = FakeBucket()

    url = run(node("https://cdn.example/mirror-cache", bucket).redirect_url("docker.io", DIGEST))

    assert url == f"https://cdn.example/mirror-cache/hub/docker.io/blobs/sha256/ab/{DIGEST.hex}"


def test_presigned_urls_last_long_enough_for_a_slow_client_and_the_bucket_is_asked_once():
    bucket = FakeBucket()
    presigning = node("presigned", bucket)

    first = run(presigning.redirect_url("docker.io", DIGEST))
    run(presigning.redirect_url("docker.io", DIGEST))

    assert first.startswith("http://s3.internal:8333/mirror-cache/")
    assert bucket.presigned == [PRESIGNED_EXPIRY] * 2 and PRESIGNED_EXPIRY >= 3600
    assert bucket.heads == 1


def test_a_blob_the_bucket_lacks_is_served_by_the_node():
    assert run(node("presigned", FakeBucket(holds=False)).redirect_url("docker.io", DIGEST)) is None


def test_off_asks_nothing():
    bucket = FakeBucket()

    assert run(node("off", bucket).redirect_url("docker.io", DIGEST)) is None
    assert bucket.heads == 0
