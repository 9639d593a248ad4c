"""Several ``twistd mirrorproxy`` nodes sharing a SeaweedFS bucket and a
redis-server, in front of the reference registry."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .harness.cluster import Cluster
from .harness.fetching import Received, fetch
from .harness.mirror import MirrorFactory
from .harness.publish import Publisher
from .harness.redisserver import RedisServer
from .harness.registry import UpstreamRegistry
from .harness.s3service import S3Service

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def cluster(
    seaweedfs: S3Service, redis_server: RedisServer, tmp_path: Path, start_mirror: MirrorFactory
) -> Cluster:
    return Cluster.empty(seaweedfs, redis_server, tmp_path, start_mirror)


def test_thirty_clients_over_three_nodes_cost_one_upstream_get_and_one_object(
    cluster: Cluster, publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    blob = publisher.blob(f"org/{unique('herd')}", 24 * MiB + 7)
    nodes = [cluster.start_node() for _ in range(3)]
    mark = upstream.mark()
    start = threading.Barrier(30)

    with ThreadPoolExecutor(30) as pool:
        received = list(pool.map(lambda i: fetch(nodes[i % 3], blob.path, start), range(30)))

    assert received == [Received(200, len(blob.data), blob.digest)] * 30
    assert upstream.fetches(blob.path, mark) == 1
    # Stored once, under its digest.
    [key] = cluster.blob_keys()
    assert key.startswith("cache/") and key.endswith(blob.digest.removeprefix("sha256:"))


def test_a_fresh_node_serves_what_the_bucket_has_without_upstream(
    cluster: Cluster, publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    blob = publisher.blob(f"org/{unique('fresh')}", 3 * MiB + 5)
    first = cluster.start_node()
    assert fetch(first, blob.path) == Received(200, len(blob.data), blob.digest)

    fresh = cluster.start_node()
    mark = upstream.mark()

    assert fetch(fresh, blob.path) == Received(200, len(blob.data), blob.digest)
    assert [f"{r.method} {r.path}" for r in upstream.requests(mark) if r.path != "/v2/"] == []


def test_with_presigned_redirects_a_cached_blob_is_a_307_to_the_bucket(
    cluster: Cluster, publisher: Publisher, unique: Callable[[str], str]
) -> None:
    blob = publisher.blob(f"org/{unique('presigned')}", 2 * MiB + 1)
    node = cluster.start_node(extra='blob-redirect = "presigned"')

    first = node.get(blob.path)
    assert (first[0], first[1]["x-cache"], hashlib.sha256(first[2]).hexdigest()) == (
        200,
        "MISS",
        blob.digest.removeprefix("sha256:"),
    )
    # Once uploaded (just after the commit), hits go to the bucket.
    status, headers = 0, {}
    deadline = time.monotonic() + 20
    while status != 307 and time.monotonic() < deadline:
        status, headers, _ = node.get(blob.path)
    assert (status, headers["x-cache"]) == (307, "REDIRECT")
    location = headers["location"]
    assert location.startswith(cluster.s3.endpoint + "/")
    # The URL alone, without credentials, gives the exact bytes.
    with urllib.request.urlopen(location, timeout=30) as answer:
        assert answer.read() == blob.data
