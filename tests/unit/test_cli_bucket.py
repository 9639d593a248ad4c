"""``mirrorproxy stats|ls|verify|gc|purge --config FILE`` when the file
names a shared bucket (``storage = "s3://..."``): the commands work on the
bucket, say so, and leave the node's cache directory (its first tier) be.

The bucket is `fakebucket`'s, in memory, behind the real `Bucket`, handed
to the command where it would open the one the config names.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import pytest
import redis
from attrs import define, field

from mirrorproxy.admin import clusternotice, options
from mirrorproxy.admin.display import human_size
from mirrorproxy.registry.names import Digest
from mirrorproxy.server.clustersettings import ClusterSettings
from mirrorproxy.storage.s3.location import S3Location

from .cachebuilder import CacheBuilder
from .clirunner import invoke, invoke_json
from .fakebucket import BucketBuilder

HOUR = 3600.0
BUCKET = "s3://mirror/cache/"


@pytest.fixture
def first_tier(tmp_path: Path) -> str:
    return str(tmp_path / "node-cache")


@pytest.fixture
def bucket(tmp_path: Path, first_tier: str, monkeypatch: pytest.MonkeyPatch) -> BucketBuilder:
    builder = BucketBuilder(first_tier)

    def bucket_for(cluster: ClusterSettings) -> object:
        assert cluster.storage == S3Location.parse(BUCKET)
        return builder.bucket

    monkeypatch.setattr(options, "bucket_for", bucket_for)
    return builder


@pytest.fixture
def config(tmp_path: Path, first_tier: str) -> str:
    path = tmp_path / "mirrorproxy.toml"
    path.write_text(
        f'cache-dir = "{first_tier}"\nstorage = "{BUCKET}"\ns3-endpoint = "http://127.0.0.1:1"\n'
    )
    return str(path)


def tier_note(first_tier: str) -> str:
    return f"this node's first tier, {first_tier} (--cache-dir {first_tier} looks at it)"


def markers(bucket: BucketBuilder, digest: Digest) -> list[str]:
    above = bucket.bucket.keys.markers(bucket.registry, digest)
    return [k for k in bucket.keys() if k.startswith(above)]


# -- stats and ls ----------------------------------------------------------------


def test_stats_counts_the_bucket_and_names_it(bucket: BucketBuilder, config: str, first_tier: str) -> None:
    one = bucket.image("library/alpine", "1", os.urandom(1000))
    two = bucket.index("org/app", "2", {"linux/amd64": [os.urandom(2000)], "linux/arm64": [os.urandom(10)]})
    bucket.used(one.blobs[1], 10)  # markers are no content

    result = invoke("stats", "--config", config, "--no-metrics")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"bucket {BUCKET}: {human_size(one.size + two.size)} in 10 entries",
        f"  docker.io: 2 repositories, 2 tags, 4 manifests "
        f"({human_size(sum(m.size for m in one.manifests + two.manifests))}), "
        f"6 blobs ({human_size(sum(b.size for b in one.blobs + two.blobs))})",
        f"  not counted: {tier_note(first_tier)}",
    ]
    document = invoke_json("stats", "--config", config, "--no-metrics")
    assert document["bucket"] == BUCKET and document["firstTier"] == first_tier
    assert document["bytes"] == one.size + two.size
    assert "spool" not in document and "cacheDir" not in document


def test_ls_lists_the_buckets_tags(bucket: BucketBuilder, config: str, first_tier: str) -> None:
    image = bucket.image("org/app", "1", os.urandom(1000))

    result = invoke("ls", "--config", config)

    assert result.exit_code == 0, result.output
    size = human_size(image.size)
    assert result.stdout.splitlines() == [
        f"bucket {BUCKET}; {tier_note(first_tier)}",
        f"REPOSITORY  TAG  {'DIGEST':<71}  {'SIZE':>{len(size)}}",
        f"org/app     1    {image.digest}  {size}",
        f"total: {human_size(image.size)} in 1 tag (content shared between tags counted once)",
    ]
    listing = invoke_json("ls", "--config", config)
    assert listing["repositories"][0]["tags"][0]["digest"] == str(image.digest)


def test_cache_dir_with_the_config_looks_at_the_first_tier(
    bucket: BucketBuilder, config: str, first_tier: str
) -> None:
    bucket.image("org/app", "1", os.urandom(100))
    local = CacheBuilder(first_tier)
    local.image("org/local", "1", os.urandom(100))
    bucket.client.calls.clear()

    result = invoke("ls", "--config", config, "--cache-dir", first_tier)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith("org/local")
    assert "bucket" not in result.stdout
    assert bucket.client.calls == []


def test_a_bucket_that_fails_is_one_line_and_status_1(bucket: BucketBuilder, config: str) -> None:
    bucket.client.bucket = "another"

    result = invoke("stats", "--config", config, "--no-metrics")

    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: S3 list_objects_v2 {BUCKET}: 404 NoSuchBucket: NoSuchBucket\n"
    )


# -- verify ----------------------------------------------------------------------


def test_a_sound_bucket_passes(bucket: BucketBuilder, config: str) -> None:
    image = bucket.index("org/app", "1", {"linux/amd64": [os.urandom(3000)], "linux/arm64": [os.urandom(10)]})

    result = invoke("verify", "--config", config)

    assert result.exit_code == 0, result.output
    files = len(image.manifests) + len(image.blobs)
    assert result.stdout.splitlines()[-1] == f"checked {files} objects ({human_size(image.size)}): all good"
    assert bucket.client.deleted == [] and bucket.stamp() is None


def test_a_corrupt_blob_is_deleted_with_its_markers_and_mirrors_told(
    bucket: BucketBuilder, config: str
) -> None:
    image = bucket.image("org/app", "1", os.urandom(5000))
    layer = image.blobs[1]
    key = bucket.blob_key(layer)
    bucket.used(layer, 10)
    bucket.client.corrupt(key, 4321)

    result = invoke("verify", "--config", config)

    assert result.exit_code == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("CORRUPT")]
    assert line.startswith(f"CORRUPT blob {layer.digest} (docker.io) {key}: content hashes to sha256:")
    assert line.endswith("(5000 bytes); deleted from the bucket")
    assert key not in bucket.keys() and markers(bucket, layer.digest) == []
    assert bucket.stamp() is not None
    assert not os.path.exists(bucket.root)  # nothing quarantined locally
    assert invoke("verify", "--config", config).exit_code == 0


def test_a_corrupt_manifest_and_an_unreadable_tag_record_are_deleted(
    bucket: BucketBuilder, config: str
) -> None:
    image = bucket.image("org/app", "1", os.urandom(10))
    bucket.image("org/other", "1", os.urandom(10))
    bucket.client.corrupt(bucket.manifest_key(image.top))
    bucket.bucket.put_small(bucket.tag_key("org/other", "1"), b"{")

    result = invoke("verify", "--config", config)

    assert result.exit_code == 1
    corrupt = sorted(line for line in result.stdout.splitlines() if line.startswith("CORRUPT"))
    assert len(corrupt) == 2
    assert corrupt[0].startswith(f"CORRUPT manifest {image.digest}")
    assert corrupt[1].startswith(f"CORRUPT tag org/other:1 (docker.io) {bucket.tag_key('org/other', '1')}: ")
    assert all(line.endswith("; deleted from the bucket") for line in corrupt)
    assert bucket.manifest_key(image.top) not in bucket.keys()
    assert bucket.tag_key("org/other", "1") not in bucket.keys()


def test_a_bucket_that_breaks_off_a_read_judges_nothing(bucket: BucketBuilder, config: str) -> None:
    image = bucket.image("org/app", "1", os.urandom(5000))
    key = bucket.blob_key(image.blobs[1])
    bucket.client.broken[key] = 1000

    result = invoke("verify", "--config", config)

    assert result.exit_code == 1
    assert f"warning: docker.io: blob {image.blobs[1].digest} not checked: " in result.stderr
    assert result.stdout.splitlines()[-1].startswith("checked 2 objects (")
    assert result.stdout.splitlines()[-1].endswith("none corrupt, 1 not checked, 1 warning")
    assert key in bucket.keys() and bucket.client.deleted == []


# -- gc and purge ----------------------------------------------------------------


def test_gc_removes_what_no_tag_in_the_bucket_reaches(bucket: BucketBuilder, config: str) -> None:
    kept = bucket.image("org/app", "1", os.urandom(100))
    dropped = bucket.image("org/old", "1", os.urandom(4000))
    bucket.used(dropped.blobs[1], 2 * HOUR)
    bucket.client.objects.pop(bucket.tag_key("org/old", "1"))
    for built in dropped.blobs:
        bucket.client.age(bucket.blob_key(built), 2 * HOUR)
    bucket.client.age(bucket.manifest_key(dropped.top), 2 * HOUR)
    before = bucket.keys()

    result = invoke("gc", "--config", config)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"bucket {BUCKET}; ")
    assert lines[-1] == f"freed {human_size(dropped.size)} (3 objects)"
    assert f"removed manifest {dropped.digest} (docker.io, {human_size(dropped.top.size)})" in lines
    gone = before - bucket.keys()
    assert gone == {
        bucket.manifest_key(dropped.top),
        *(bucket.blob_key(b) for b in dropped.blobs),
        *markers_of(before, bucket, dropped.blobs[1].digest),
    }
    assert all(bucket.blob_key(b) in bucket.keys() for b in kept.blobs)
    assert bucket.stamp() is not None


def markers_of(keys: set[str], bucket: BucketBuilder, digest: Digest) -> set[str]:
    above = bucket.bucket.keys.markers(bucket.registry, digest)
    return {k for k in keys if k.startswith(above)}


def test_gc_keeps_a_blob_used_within_the_grace_period(bucket: BucketBuilder, config: str) -> None:
    # Uploaded long ago, but a node served it lately: its marker says so.
    bucket.image("org/app", "1", os.urandom(100))
    image = bucket.image("org/old", "1", os.urandom(100))
    bucket.client.objects.pop(bucket.tag_key("org/old", "1"))
    for built in image.blobs:
        bucket.client.age(bucket.blob_key(built), 5 * HOUR)
    bucket.client.age(bucket.manifest_key(image.top), 5 * HOUR)
    bucket.used(image.blobs[1], 10)

    result = invoke("gc", "--config", config)

    assert result.exit_code == 0, result.output
    assert bucket.blob_key(image.blobs[1]) in bucket.keys()
    assert bucket.blob_key(image.blobs[0]) not in bucket.keys()
    assert "kept 1 unreferenced object used within the grace period (1h; --grace 0 removes them)" in (
        result.stdout.splitlines()
    )


def test_a_dry_run_removes_nothing_from_the_bucket(bucket: BucketBuilder, config: str) -> None:
    bucket.image("org/app", "1", os.urandom(100))
    image = bucket.image("org/old", "1", os.urandom(100))
    bucket.client.objects.pop(bucket.tag_key("org/old", "1"))
    before = bucket.keys()

    result = invoke("gc", "--config", config, "--grace", "0", "--dry-run")

    assert result.exit_code == 0, result.output
    assert f"would remove blob {image.blobs[1].digest} (docker.io, 100 B)" in result.stdout
    assert bucket.keys() == before and bucket.stamp() is None


def test_gc_keeps_everything_of_a_registry_whose_tags_the_bucket_lacks(
    bucket: BucketBuilder, config: str
) -> None:
    # Cluster nodes keep tag records in their directories and Redis: a
    # bucket without any cannot tell what is referenced.
    image = bucket.image("org/app", "1", os.urandom(100))
    bucket.client.objects.pop(bucket.tag_key("org/app", "1"))
    before = bucket.keys()

    result = invoke("gc", "--config", config, "--grace", "0")

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: docker.io: the bucket holds no tag records of it (cluster nodes keep theirs in their "
        "cache directories and Redis); unreferenced manifests and blobs are kept"
    ]
    assert result.stdout.splitlines()[1:] == [
        "freed 0 B (0 objects)",
        f"kept {len(image.manifests) + len(image.blobs)} unreferenced objects that the tags warned about may need",
    ]
    assert bucket.keys() == before


def test_purge_removes_the_buckets_tag_records_and_tells_mirrors(bucket: BucketBuilder, config: str) -> None:
    image = bucket.image("org/app", "1", os.urandom(100))
    bucket.tag("org/app", "2", image.top)
    record = bucket.client.objects[bucket.tag_key("org/app", "1")].data

    result = invoke("purge", "--config", config, "org/app:1")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        f"removed tag org/app:1 (docker.io, {human_size(len(record))})",
        "content is left for gc (or purge with --gc)",
    ]
    assert bucket.tag_key("org/app", "1") not in bucket.keys()
    assert bucket.tag_key("org/app", "2") in bucket.keys()
    assert bucket.stamp() is not None


def test_purge_with_gc_removes_what_only_those_tags_reached(bucket: BucketBuilder, config: str) -> None:
    image = bucket.image("org/app", "1", os.urandom(100))

    result = invoke("purge", "--config", config, "org/app", "--gc", "--grace", "0")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"freed {human_size(image.size)} (3 objects)"
    assert not any(k.startswith(bucket.bucket.keys.registry("docker.io")) for k in bucket.keys())


# -- telling the nodes through Redis ------------------------------------------------


@define
class FakeRedis:
    """redis-py's publish, as Redis answers it (how many subscribers got
    it), and the keys a purge scans and deletes."""

    listeners: int = 2
    down: bool = False
    published: list[tuple[str, dict[str, object]]] = field(factory=list)
    closed: bool = False
    keys: set[str] = field(factory=set)

    def scan_iter(self, match: str, count: int) -> list[str]:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
        return sorted(k for k in self.keys if fnmatch.fnmatchcase(k, match))

    def delete(self, key: str) -> None:
        self.keys.discard(key)

    def publish(self, channel: str, message: bytes) -> int:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
        self.published.append((channel, json.loads(message)))
        return self.listeners

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> FakeRedis:
    fake = FakeRedis()
    monkeypatch.setattr(clusternotice, "redis_for", lambda address: fake)
    return fake


@pytest.fixture
def redis_config(config: str) -> str:
    with open(config, "a") as f:
        f.write('redis = "redis://127.0.0.1:6399/0"\nadvertise = "http://10.0.0.5:5000"\n')
    return config


CHANNEL = "mirrorproxy/mirror/cache/:events"


def test_a_purge_tells_the_nodes_through_redis(bucket: BucketBuilder, redis_config: str, fake_redis: FakeRedis) -> None:
    bucket.image("library/alpine", "3", os.urandom(10))
    records = CHANNEL.removesuffix(":events") + ":docker.io:tag:library/alpine:"
    fake_redis.keys = {records + "3", records + "3:application%2Fjson", records + "30", records + "4"}

    result = invoke("purge", "--config", redis_config, "alpine:3")

    assert result.exit_code == 0, result.output
    # The tag's records in Redis went (its variants too), no other's.
    assert fake_redis.keys == {records + "30", records + "4"}
    assert result.stdout.splitlines()[-1] == "told the cluster through redis://127.0.0.1:6399/0 (2 nodes listening)"
    sender = fake_redis.published[0][1]["node"]
    assert fake_redis.published == [
        (CHANNEL, {"node": sender, "kind": "purge", "registry": "docker.io", "repository": "library/alpine", "tag": "3"}),
        (CHANNEL, {"node": sender, "kind": "cache-stamp"}),
    ]
    assert fake_redis.closed


def test_gc_and_verify_tell_the_nodes_only_when_they_removed_something(
    bucket: BucketBuilder, redis_config: str, fake_redis: FakeRedis
) -> None:
    bucket.image("org/app", "1", os.urandom(10))
    old = bucket.image("org/old", "1", os.urandom(10))
    bucket.client.objects.pop(bucket.tag_key("org/old", "1"))

    assert invoke("verify", "--config", redis_config).exit_code == 0
    assert invoke("gc", "--config", redis_config, "--grace", "0", "--dry-run").exit_code == 0
    assert fake_redis.published == []

    bucket.client.corrupt(bucket.blob_key(old.blobs[1]))
    assert invoke("verify", "--config", redis_config).exit_code == 1
    result = invoke("gc", "--config", redis_config, "--grace", "0")

    assert result.exit_code == 0, result.output
    assert [event["kind"] for _, event in fake_redis.published] == ["cache-stamp", "cache-stamp"]


def test_a_redis_that_is_down_is_a_warning_after_the_work(
    bucket: BucketBuilder, redis_config: str, fake_redis: FakeRedis
) -> None:
    bucket.image("org/app", "1", os.urandom(10))
    fake_redis.down = True

    result = invoke("purge", "--config", redis_config, "org/app")

    assert result.exit_code == 0, result.output
    assert bucket.tag_key("org/app", "1") not in bucket.keys()
    assert result.stderr.splitlines() == [
        "warning: cannot tell the nodes through redis://127.0.0.1:6399/0: Error 111 connecting to "
        "127.0.0.1:6399. Connection refused.; running nodes keep what they hold in memory until they "
        "next revalidate"
    ]
