"""A node acting on the cluster's events: another node's purge removes this
node's tag records and what it holds in memory."""

from __future__ import annotations

import hashlib
import os

from attrs import define, field
from twisted.internet.defer import maybeDeferred

from mirrorproxy.cache.cluster.events import EventHandler
from mirrorproxy.cache.cluster.store import TieredStore
from mirrorproxy.cluster.events import Evict, Purge, Received
from mirrorproxy.storage.filesystem import FilesystemStore
from mirrorproxy.storage.values import TagRecord

from .cachebuilder import digest_of, run


@define
class FakeManifests:
    forgotten: int = 0

    def forget(self) -> None:
        self.forgotten += 1


@define
class FakeCache:
    manifests: FakeManifests = field(factory=FakeManifests)


def node(tmp_path):
    local = FilesystemStore(str(tmp_path / "cache"), maybeDeferred)
    local.prepare()
    store = TieredStore(local, bucket=None)  # type: ignore[arg-type]
    caches = [FakeCache(), FakeCache()]
    return local, caches, EventHandler(caches, store, maybeDeferred)  # type: ignore[arg-type]


def record(text: bytes) -> TagRecord:
    return TagRecord(digest_of(text), "application/vnd.oci.image.index.v1+json", len(text), 1000.0)


def test_a_purge_of_a_tag_removes_its_records_and_its_variants_only(tmp_path):
    local, caches, handle = node(tmp_path)
    for tag, variant in [("1", None), ("1", "k1"), ("2", None)]:
        run(local.write_tag("docker.io", "library/alpine", tag, record(b"x"), variant))

    handle(Received("node-b", Purge("docker.io", "library/alpine", "1"), own=False))

    assert run(local.read_tag("docker.io", "library/alpine", "1")) is None
    assert run(local.read_tag("docker.io", "library/alpine", "1", "k1")) is None
    assert run(local.read_tag("docker.io", "library/alpine", "2")) == record(b"x")
    assert [c.manifests.forgotten for c in caches] == [1, 1]


def test_a_purge_of_a_repository_removes_every_tag_of_it_and_no_other(tmp_path):
    local, caches, handle = node(tmp_path)
    run(local.write_tag("docker.io", "library/alpine", "1", record(b"x")))
    run(local.write_tag("docker.io", "library/busybox", "1", record(b"y")))

    handle(Received("node-b", Purge("docker.io", "library/alpine"), own=False))

    assert run(local.read_tag("docker.io", "library/alpine", "1")) is None
    assert run(local.read_tag("docker.io", "library/busybox", "1")) == record(b"y")


def test_an_evicted_blob_leaves_the_local_tier(tmp_path):
    local, _, handle = node(tmp_path)
    spool = run(local.new_spool())
    run(local.write_spool(spool, 0, [b"layer"], hashlib.sha256()))
    run(local.commit_blob(spool, "docker.io", digest_of(b"layer")))
    os.close(spool.fd)

    handle(Received("node-b", Evict("docker.io", digest_of(b"layer")), own=False))

    assert run(local.blob_size("docker.io", digest_of(b"layer"))) is None
