"""The admin command on a cluster's shared bucket, against a real S3 server
(SeaweedFS): ``mirrorproxy stats|ls|verify|gc|purge --config FILE`` as a
subprocess, the config naming ``storage = "s3://..."`` as a node's does.

The bucket is filled as nodes fill it: manifests and tag records written by
the S3 store, blobs at their keys.  Judged by the command's output and exit
status, and by which objects are left in the bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import botocore.session
import pytest
import redis

from mirrorproxy.admin.display import human_size
from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.s3.bucket import Bucket, open_bucket
from mirrorproxy.storage.s3.location import S3Endpoint, S3Location

from ..unit.fakebucket import BucketBuilder
from .harness.cluster import Cluster
from .harness.mirror import Mirror, MirrorFactory
from .harness.nodelog import said, wait_until_redis_answered
from .harness.oci import HOST, Image
from .harness.processes import child_env
from .harness.publish import Publisher
from .harness.redisserver import RedisServer
from .harness.registry import UpstreamRegistry
from .harness.s3service import S3Service

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT = 120.0
MiB = 1024 * 1024


def admin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirrorproxy.admin.cli", *args],
        capture_output=True,
        text=True,
        env=env or child_env(),
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def real_bucket(s3: S3Service, name: str) -> Bucket:
    session = botocore.session.get_session()
    session.set_credentials(s3.access_key, s3.secret_key)
    return open_bucket(session, S3Endpoint(s3.endpoint, s3.region), S3Location(name, "cache/"))


def write_config(
    path: Path, s3: S3Service, name: str, first_tier: Path, keys: bool = True, extra: str = ""
) -> str:
    lines = [
        f'cache-dir = "{first_tier}"',
        f'storage = "s3://{name}/cache"',
        f's3-endpoint = "{s3.endpoint}"',
        f's3-region = "{s3.region}"',
        extra,
    ]
    if keys:
        lines += ["[s3-credentials]", f'access-key-id = "{s3.access_key}"', f'secret-access-key = "{s3.secret_key}"']
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # it holds credentials
    return str(path)


@pytest.fixture
def bucket_name(seaweedfs: S3Service) -> str:
    return seaweedfs.new_bucket("admin")


@pytest.fixture
def first_tier(tmp_path: Path) -> Path:
    return tmp_path / "node-cache"


@pytest.fixture
def filled(seaweedfs: S3Service, bucket_name: str, first_tier: Path) -> BucketBuilder:
    return BucketBuilder(str(first_tier), bucket=real_bucket(seaweedfs, bucket_name))


@pytest.fixture
def config(tmp_path: Path, seaweedfs: S3Service, bucket_name: str, first_tier: Path) -> str:
    return write_config(tmp_path / "node.toml", seaweedfs, bucket_name, first_tier)


def keys(bucket: Bucket) -> set[str]:
    return {listed.key for listed in bucket.listing(bucket.keys.prefix)}


def uploaded(bucket: Bucket) -> set[str]:
    """The hex digests of the blobs in the bucket, whatever their registry."""
    return {key.rpartition("/")[2] for key in keys(bucket) if "/blobs/sha256/" in key}


def tier_note(first_tier: Path) -> str:
    return f"this node's first tier, {first_tier} (--cache-dir {first_tier} looks at it)"


def test_stats_and_ls_read_the_bucket(filled: BucketBuilder, config: str, first_tier: Path) -> None:
    app = filled.image("org/app", "1", os.urandom(3 * MiB))
    alpine = filled.index("library/alpine", "3", {"linux/amd64": [os.urandom(1000)], "linux/arm64": [b"x"]})
    location = f"s3://{filled.bucket.name}/cache/"

    stats = admin("stats", "--config", config, "--no-metrics")
    listed = admin("ls", "--config", config)

    assert stats.returncode == 0, stats.stderr
    manifests = app.manifests + alpine.manifests
    blobs = app.blobs + alpine.blobs
    assert stats.stdout.splitlines() == [
        f"bucket {location}: {human_size(app.size + alpine.size)} in {len(manifests) + len(blobs)} entries",
        f"  docker.io: 2 repositories, 2 tags, {len(manifests)} manifests "
        f"({human_size(sum(m.size for m in manifests))}), {len(blobs)} blobs "
        f"({human_size(sum(b.size for b in blobs))})",
        f"  not counted: {tier_note(first_tier)}",
    ]
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"bucket {location}; {tier_note(first_tier)}"
    assert lines[2].split() == ["library/alpine", "3", str(alpine.digest), *human_size(alpine.size).split()]
    assert lines[3].split() == ["org/app", "1", str(app.digest), *human_size(app.size).split()]
    assert not first_tier.exists()


def test_verify_rehashes_the_bucket_and_deletes_a_corrupt_object(filled: BucketBuilder, config: str) -> None:
    image = filled.image("org/app", "1", os.urandom(5 * MiB), os.urandom(1000))
    total = len(image.manifests) + len(image.blobs)

    sound = admin("verify", "--config", config)

    assert sound.returncode == 0, sound.stderr
    assert sound.stdout.splitlines()[-1] == f"checked {total} objects ({human_size(image.size)}): all good"

    layer = image.blobs[1]
    key = filled.blob_key(layer)
    damaged = bytearray(layer.data)
    damaged[MiB] ^= 1
    filled.bucket.delete(key)
    filled.bucket.put_small(key, bytes(damaged))

    corrupt = admin("verify", "--config", config)

    assert corrupt.returncode == 1, corrupt.stderr
    (line,) = [line for line in corrupt.stdout.splitlines() if line.startswith("CORRUPT")]
    assert line.startswith(f"CORRUPT blob {layer.digest} (docker.io) {key}: content hashes to sha256:")
    assert line.endswith(f"({5 * MiB} bytes); deleted from the bucket")
    assert filled.bucket.head(key) is None
    assert filled.bucket.get_small(filled.bucket.keys.stamp) is not None
    assert admin("verify", "--config", config).returncode == 0


def test_gc_and_purge_remove_from_the_bucket(filled: BucketBuilder, config: str) -> None:
    kept = filled.image("org/app", "1", os.urandom(1000))
    dropped = filled.image("org/old", "1", os.urandom(2000))
    filled.tag("org/old", "2", dropped.top)

    purged = admin("purge", "--config", config, "org/old:1")

    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines()[-1] == "content is left for gc (or purge with --gc)"
    assert filled.bucket.head(filled.tag_key("org/old", "1")) is None
    stamp = filled.bucket.get_small(filled.bucket.keys.stamp)
    assert stamp is not None

    # org/old:2 still reaches it all.
    nothing = admin("gc", "--config", config, "--grace", "0")
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.splitlines()[-1] == "freed 0 B (0 objects)"

    filled.bucket.delete(filled.tag_key("org/old", "2"))
    before = keys(filled.bucket)
    collected = admin("gc", "--config", config, "--grace", "0")

    assert collected.returncode == 0, collected.stderr
    assert collected.stdout.splitlines()[-1] == f"freed {human_size(dropped.size)} (3 objects)"
    gone = before - keys(filled.bucket)
    assert gone == {filled.manifest_key(dropped.top), *(filled.blob_key(b) for b in dropped.blobs)}
    assert all(filled.bucket.head(filled.blob_key(b)) is not None for b in kept.blobs)
    assert filled.bucket.get_small(filled.bucket.keys.stamp) != stamp


def test_keys_from_the_environment_and_a_wrong_key(
    tmp_path: Path, seaweedfs: S3Service, filled: BucketBuilder, first_tier: Path
) -> None:
    image = filled.image("org/app", "1", os.urandom(100))
    config = write_config(tmp_path / "env.toml", seaweedfs, filled.bucket.name, first_tier, keys=False)

    from_env = admin("ls", "--config", config, env=child_env(**seaweedfs.environment()))
    wrong = admin(
        "ls",
        "--config",
        config,
        env=child_env(AWS_ACCESS_KEY_ID=seaweedfs.access_key, AWS_SECRET_ACCESS_KEY="wrong"),
    )

    assert from_env.returncode == 0, from_env.stderr
    assert str(image.digest) in from_env.stdout
    assert wrong.returncode == 1
    (line,) = wrong.stderr.splitlines()
    assert line.startswith(f"Error: S3 list_objects_v2 s3://{filled.bucket.name}/cache/: 403 ")


def test_a_purge_tells_the_nodes_listening_on_redis(
    tmp_path: Path, seaweedfs: S3Service, filled: BucketBuilder, first_tier: Path, redis_server: RedisServer
) -> None:
    filled.image("org/app", "1", os.urandom(100))
    node = f'redis = "{redis_server.url()}"\nadvertise = "http://127.0.0.1:5000"'
    config = write_config(tmp_path / "redis.toml", seaweedfs, filled.bucket.name, first_tier, extra=node)
    listener = redis.Redis.from_url(redis_server.url()).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(f"mirrorproxy/{filled.bucket.name}/cache/:events")

    purged = admin("purge", "--config", config, "org/app:1")

    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines()[-1] == (
        f"told the cluster through redis://127.0.0.1:{redis_server.port}/0 (1 node listening)"
    )
    received = []
    deadline = time.monotonic() + 10.0
    # get_message answers None for the subscription's own confirmation too.
    while len(received) < 2 and time.monotonic() < deadline:
        message = listener.get_message(timeout=1.0)
        if message is not None:
            received.append(json.loads(message["data"]))
    assert [(m["kind"], m.get("repository"), m.get("tag")) for m in received] == [
        ("purge", "org/app", "1"),
        ("cache-stamp", None, None),
    ]
    listener.close()


@pytest.fixture
def cluster(
    tmp_path: Path,
    seaweedfs: S3Service,
    redis_server: RedisServer,
    start_mirror: MirrorFactory,
    upstream: UpstreamRegistry,
) -> Cluster:
    """A cluster of one running node, whose config file the admin command reads."""
    cluster = Cluster.empty(seaweedfs, redis_server, tmp_path, start_mirror)
    # The operator's config names the upstream, so the admin command knows its registries.
    cluster.start_node(extra=f'upstream = "{upstream.url}"')
    return cluster


def prefetched(publisher: Publisher, node: Mirror, name: str, sizes: tuple[int, ...]) -> Image:
    """A new image, pulled through the node (`mirrorproxy prefetch`)."""
    image = publisher.image(name, "1", {HOST: sizes})
    pulled = admin("prefetch", image.reference, "--mirror", node.url)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    return image


def test_a_bucket_nodes_filled_is_counted_verified_and_kept_whole_by_gc(
    cluster: Cluster, seaweedfs: S3Service, publisher: Publisher, unique: Callable[[str], str]
) -> None:
    [node] = cluster.nodes
    image = prefetched(publisher, node, f"org/{unique('node')}", (1 * MiB, 300_000))
    bucket = real_bucket(seaweedfs, cluster.bucket)
    blobs = image.blobs()
    expected = {Digest.parse(b.digest).hex for b in blobs}
    # Uploaded once each blob's fill committed, behind the pull.
    deadline = time.monotonic() + 30.0
    while not expected <= uploaded(bucket) and time.monotonic() < deadline:
        time.sleep(0.2)
    config = str(cluster.directory / f"node-{node.port}.toml")
    manifest = image.for_platform(HOST).manifest

    stats = admin("stats", "--config", config, "--no-metrics")
    verified = admin("verify", "--config", config)
    before = keys(bucket)
    collected = admin("gc", "--config", config, "--grace", "0")

    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines()[1].endswith(
        f"1 manifest ({human_size(manifest.size)}), {len(blobs)} blobs ({human_size(sum(b.size for b in blobs))})"
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    total = manifest.size + sum(b.size for b in blobs)
    assert verified.stdout.splitlines()[-1] == f"checked {1 + len(blobs)} objects ({human_size(total)}): all good"
    # Whatever the nodes' tags reach, gc leaves: here, all of it.
    assert collected.returncode == 0, collected.stderr
    assert keys(bucket) == before


def test_a_purge_on_the_bucket_makes_a_running_node_ask_upstream_for_the_tag_again(
    cluster: Cluster, publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    [node] = cluster.nodes
    wait_until_redis_answered(node, 1)
    image = prefetched(publisher, node, f"org/{unique('purged')}", (200_000,))
    config = str(cluster.directory / f"node-{node.port}.toml")

    purged = admin("purge", "--config", config, image.reference)
    assert purged.returncode == 0, purged.stdout + purged.stderr
    deadline = time.monotonic() + 10.0
    while not said(node, "acted on") and time.monotonic() < deadline:
        time.sleep(0.1)
    mark = upstream.mark()
    again = admin("prefetch", image.reference, "--mirror", node.url)

    assert again.returncode == 0, again.stdout + again.stderr
    # The tag was asked of upstream again: its record is gone from the
    # node's disk, from the bucket and from Redis.
    asked = [r.path for r in upstream.requests(mark) if r.method in ("GET", "HEAD")]
    assert f"/v2/{image.name}/manifests/1" in asked, asked
