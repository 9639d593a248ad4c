"""Several ``twistd mirrorproxy`` nodes sharing a SeaweedFS bucket and a
redis-server, in front of the reference registry."""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .harness.cluster import Cluster
from .harness.containerd import Containerd
from .harness.dockerd import Dockerd
from .harness.fetching import Received, fetch
from .harness.mirror import Mirror, MirrorFactory
from .harness.nodelog import accesses, said, wait_until_redis_answered
from .harness.oci import HOST
from .harness.processes import free_port
from .harness.progress import Download
from .harness.publish import ACCEPT_MANIFESTS, Publisher
from .harness.redisserver import RedisServer
from .harness.registry import LogMark, UpstreamRegistry
from .harness.requestlog import RequestLog
from .harness.s3service import S3Service
from .harness.slowlink import SlowLink
from .harness.tools import require_tool

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
    # Stored once, under its digest (uploaded just after the commit, so
    # maybe after the clients' last byte).
    cluster.wait_for_blobs([blob.digest])
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
    status, headers = 0, dict[str, str]()
    deadline = time.monotonic() + 20
    while status != 307 and time.monotonic() < deadline:
        status, headers, _ = node.get(blob.path)
    assert (status, headers["x-cache"]) == (307, "REDIRECT")
    location = headers["location"]
    assert location.startswith(cluster.s3.endpoint + "/")
    # The URL alone, without credentials, gives the exact bytes.
    with urllib.request.urlopen(location, timeout=30) as answer:
        assert answer.read() == blob.data


def begin_get(node: Mirror, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send ``GET path`` and read the answer's head; the body is the caller's
    to read, the connection the caller's to close."""
    connection = node.connection(timeout=30)
    connection.request("GET", path)
    return connection, connection.getresponse()


def manifest(node: Mirror, name: str, reference: str) -> tuple[int, str | None, bytes]:
    """GET a manifest as a client that takes every kind: status, digest, body."""
    connection = node.connection(timeout=30)
    try:
        connection.request("GET", f"/v2/{name}/manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS})
        response = connection.getresponse()
        return response.status, response.getheader("Docker-Content-Digest"), response.read()
    finally:
        connection.close()


def blob_fetch_statuses(upstream: UpstreamRegistry, path: str, mark: LogMark) -> list[int]:
    """The statuses of the upstream's answers with content to GETs of ``path``."""
    return sorted(r.status for r in upstream.requests(mark) if r.method == "GET" and r.path == path and r.status < 300)


def wait_for_redis(nodes: list[Mirror], times: int = 1) -> None:
    """Until every node has found Redis answering ``times`` times (once at
    its start, once more after each outage)."""
    for node in nodes:
        wait_until_redis_answered(node, times)


def test_a_node_killed_mid_blob_leaves_its_follower_to_finish_from_upstream(
    cluster: Cluster, publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    blob = publisher.blob(f"org/{unique('orphaned')}", 32 * MiB)
    # 4 MiB/s a connection: the fill takes 8 s, long enough to act within it.
    with SlowLink(upstream.port, bytes_per_second=4 * MiB) as link:
        filler, follower = (cluster.start_node(upstream_url=link.url) for _ in range(2))
        wait_for_redis([filler, follower])
        mark = upstream.mark()
        connection, response = begin_get(filler, blob.path)
        assert response.status == 200
        assert len(response.read(2 * MiB)) == 2 * MiB  # the filler's claim is taken

        joined = Download.start(follower, blob.path)
        joined.wait_for(2 * MiB)
        killed_at = time.monotonic()
        filler.kill()
        connection.close()

        assert joined.result() == Received(200, len(blob.data), blob.digest)
    # The takeover waits for no claim to expire (its ttl is 30 s): the
    # resume's backoff and a refused connection to the dead node.
    pause = joined.longest_pause_after(killed_at)
    assert pause < 10, f"the client waited {pause:.1f}s for the rest"

    # The follower was reading the filler's fill: its own broke when the
    # filler died, and it asked the (dead) claim holder again before upstream.
    assert said(follower, f"peer {filler.url} cannot give {blob.digest}") >= 1
    # The filler's GET, then the follower's for the rest, with a Range (the
    # link stopped, the registry logs the filler's cut answer too).
    deadline = time.monotonic() + 10
    while len(statuses := blob_fetch_statuses(upstream, blob.path, mark)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert statuses == [200, 206]
    # And the follower put it in the bucket for the rest of the cluster.
    cluster.wait_for_blobs([blob.digest])


def test_a_tag_one_node_pulled_is_answered_by_another_without_upstream(
    cluster: Cluster, publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    image = publisher.image(f"org/{unique('shared-tag')}", "v1", {HOST: (1 * MiB,)})
    first, second = cluster.start_node(), cluster.start_node()
    wait_for_redis([first, second])
    status, digest, body = manifest(first, image.name, image.tag)
    assert (status, digest) == (200, image.digest)

    mark = upstream.mark()
    # Within the tag ttl (the harness's 300 s): the record from Redis, the
    # manifest from the bucket.
    assert manifest(second, image.name, image.tag) == (200, image.digest, body)
    assert [f"{r.method} {r.path}" for r in upstream.requests(mark) if r.path != "/v2/"] == []


def test_with_redis_gone_every_node_serves_and_once_it_is_back_claims_work_again(
    cluster: Cluster,
    publisher: Publisher,
    upstream: UpstreamRegistry,
    redis_server: RedisServer,
    unique: Callable[[str], str],
) -> None:
    name = f"org/{unique('redis-gone')}"
    cached, cold, later = (publisher.blob(name, 8 * MiB + i) for i in range(3))
    image = publisher.image(f"org/{unique('redis-gone-tag')}", "v1", {HOST: (1 * MiB,)})
    # 8 MiB/s a connection: a fill takes a second, so clients of two nodes
    # asking at once overlap.
    with SlowLink(upstream.port, bytes_per_second=8 * MiB) as link:
        one, two = (cluster.start_node(upstream_url=link.url) for _ in range(2))
        wait_for_redis([one, two])
        assert fetch(one, cached.path) == Received(200, len(cached.data), cached.digest)
        assert manifest(one, image.name, image.tag)[:2] == (200, image.digest)
        cluster.wait_for_blobs([cached.digest])

        redis_server.kill()
        mark = upstream.mark()
        status, headers, body = one.get(cached.path)
        assert (status, headers["x-cache"], body == cached.data) == (200, "HIT", True)
        assert fetch(two, cached.path) == Received(200, len(cached.data), cached.digest)
        assert upstream.fetches(cached.path, mark) == 0  # the bucket's
        assert fetch(two, cold.path) == Received(200, len(cold.data), cold.digest)
        assert upstream.fetches(cold.path, mark) == 1
        for node in (one, two):
            assert manifest(node, image.name, image.tag)[:2] == (200, image.digest)

        redis_server.restart()
        wait_for_redis([one, two], times=2)
        mark = upstream.mark()
        start = threading.Barrier(4)
        with ThreadPoolExecutor(4) as pool:
            received = list(pool.map(lambda i: fetch((one, two)[i % 2], later.path, start), range(4)))
        assert received == [Received(200, len(later.data), later.digest)] * 4
        assert upstream.fetches(later.path, mark) == 1


def test_a_node_cut_off_from_the_bucket_serves_from_its_disk_and_upstream(
    cluster: Cluster, publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    name = f"org/{unique('no-bucket')}"
    kept, elsewhere, cold = (publisher.blob(name, 3 * MiB + i) for i in range(3))
    image = publisher.image(f"org/{unique('no-bucket-tag')}", "v1", {HOST: (1 * MiB,)})
    fresh = publisher.image(f"org/{unique('no-bucket-new')}", "v1", {HOST: (1 * MiB,)})
    bucket_port = int(cluster.s3.endpoint.rpartition(":")[2])
    # The cut node reaches the bucket through a relay only, which then
    # stops: its connections to the bucket are refused, as with the gateway
    # down, while the other node still reaches it.
    link = SlowLink(bucket_port, bytes_per_second=1024 * MiB)
    try:
        cut = cluster.start_node(s3_endpoint=link.url)
        other = cluster.start_node()
        wait_for_redis([cut, other])
        assert fetch(cut, kept.path) == Received(200, len(kept.data), kept.digest)
        assert manifest(cut, image.name, image.tag)[:2] == (200, image.digest)
        assert fetch(other, elsewhere.path) == Received(200, len(elsewhere.data), elsewhere.digest)
        cluster.wait_for_blobs([kept.digest, elsewhere.digest])
    finally:
        link.stop()

    mark = upstream.mark()
    status, headers, body = cut.get(kept.path)
    assert (status, headers["x-cache"], body == kept.data) == (200, "HIT", True)
    assert manifest(cut, image.name, image.tag)[:2] == (200, image.digest)
    assert [f"{r.method} {r.path}" for r in upstream.requests(mark) if r.path != "/v2/"] == []

    # What the bucket holds (the other node put it there) and what nobody
    # has: both from upstream, exact.
    for blob in (elsewhere, cold):
        assert fetch(cut, blob.path) == Received(200, len(blob.data), blob.digest)
        assert upstream.fetches(blob.path, mark) == 1
    assert manifest(cut, fresh.name, fresh.tag)[:2] == (200, fresh.digest)
    # Nothing the cut node fetched reached the bucket; the other node's
    # answers are the bucket's and right.
    assert not cluster.holds_blob(cold.digest)
    assert fetch(other, cold.path) == Received(200, len(cold.data), cold.digest)


def test_a_node_started_while_the_bucket_is_out_of_reach_serves_degraded(
    cluster: Cluster, publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    blob = publisher.blob(f"org/{unique('bucket-down')}", 2 * MiB + 3)
    nowhere = free_port()  # nothing listens there
    metrics = free_port()

    node = cluster.start_node(
        ["--metrics-listen", f"tcp:{metrics}:interface=127.0.0.1"], s3_endpoint=f"http://127.0.0.1:{nowhere}"
    )

    assert fetch(node, blob.path) == Received(200, len(blob.data), blob.digest)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=10) as answer:
        status, text = answer.status, answer.read().decode()
    assert status == 200
    assert text.startswith("ready\n") and "degraded: bucket writes failing: S3 " in text


def test_dockerd_follows_presigned_redirects_to_the_bucket_for_every_blob(
    cluster: Cluster,
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_dockerd: Callable[..., Dockerd],
    unique: Callable[[str], str],
) -> None:
    image = publisher.image(f"org/{unique('redirected')}", "v1", {HOST: (3 * MiB, 1 * MiB, 2 * MiB)})
    blob_paths = {f"/v2/{image.name}/blobs/{blob.digest}" for blob in image.blobs()}
    # The node reaches the bucket, and signs its URLs for it, through a
    # relay that notes the requests: how dockerd's GETs there are seen.
    with RequestLog(int(cluster.s3.endpoint.rpartition(":")[2])) as bucket:
        node = cluster.start_node(extra='blob-redirect = "presigned"', s3_endpoint=bucket.url)

        first = start_dockerd(mirrors=[node.url])
        first.pull(image.reference)
        assert first.repo_digests(image.reference) == [f"{image.name}@{image.digest}"]
        # A miss is streamed from the node, whatever the setting.
        assert {(a.path, a.status, a.cache) for a in accesses(node) if a.path in blob_paths} == {
            (path, 200, "MISS") for path in blob_paths
        }
        cluster.wait_for_blobs([blob.digest for blob in image.blobs()])

        since, seen = len(accesses(node)), len(bucket.requests)
        second = start_dockerd(mirrors=[node.url])
        second.pull(image.reference)

        assert second.repo_digests(image.reference) == [f"{image.name}@{image.digest}"]
        blob_answers = [a for a in accesses(node, since) if a.path in blob_paths]
        # Each blob a 307 to the bucket, and fetched there, once.
        assert sorted((a.path, a.status, a.cache) for a in blob_answers) == sorted(
            (path, 307, "REDIRECT") for path in blob_paths
        )
        assert all(a.bytes < 4096 for a in blob_answers), blob_answers
        presigned = [r.path for r in bucket.requests[seen:] if r.method == "GET" and "X-Amz-Signature=" in r.target]
        assert sorted(path.rpartition("/")[2] for path in presigned) == sorted(
            blob.digest.removeprefix("sha256:") for blob in image.blobs()
        )
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob


def test_containerd_follows_presigned_redirects_to_the_bucket(
    cluster: Cluster,
    publisher: Publisher,
    upstream: UpstreamRegistry,
    containerd: Containerd,
    tmp_path: Path,
    unique: Callable[[str], str],
) -> None:
    image = publisher.image(f"org/{unique('ctr-redirected')}", "v1", {HOST: (2 * MiB, 1 * MiB)})
    blob_paths = {f"/v2/{image.name}/blobs/{blob.digest}" for blob in image.blobs()}
    reference = f"{upstream.host}/{image.name}:{image.tag}"
    node = cluster.start_node(extra='blob-redirect = "presigned"')
    containerd.pull(reference, containerd.write_hosts(upstream.host, node.url))
    cluster.wait_for_blobs([blob.digest for blob in image.blobs()])

    # A second containerd, its content store empty, through the same node.
    second = Containerd.start(require_tool("containerd", "containerd"), containerd.ctr, tmp_path / "containerd-2")
    try:
        since = len(accesses(node))
        second.pull(reference, second.write_hosts(upstream.host, node.url))

        assert second.image_digest(reference) == image.digest
    finally:
        second.stop()
    # Each blob a 307 to the bucket (ctr's requests carry ?ns=).
    answers = [(a.path.partition("?")[0], a.status, a.cache) for a in accesses(node, since)]
    assert sorted(a for a in answers if a[0] in blob_paths) == sorted((path, 307, "REDIRECT") for path in blob_paths)
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob
