"""A stale tag on a cluster node: revalidated by the node that gets the
tag's lock; the others serve the record meanwhile."""

from __future__ import annotations

from typing import Any

import pytest
from attrs import define, field

from mirrorproxy.cache.cluster.store import TieredStore
from mirrorproxy.cluster.commands import RedisUnavailable
from mirrorproxy.cluster.tags import TagLock
from mirrorproxy.registry.mediatypes import DOCKER_MANIFEST

from ..fakeregistry import sha256
from .cachebuilder import run
from .harness import Harness

REPO = "library/alpine"
TTL = 300.0
BODY = (
    '{"schemaVersion": 2, "mediaType": "%s", "config": {"mediaType": '
    '"application/vnd.docker.container.image.v1+json", "size": 2, "digest": "%s"}, "layers": []}'
    % (DOCKER_MANIFEST, sha256(b"config"))
).encode()


@define
class Gate:
    answers: list[bool]
    asked: list[tuple[str, str, str | None]] = field(factory=list)

    async def __call__(self, registry: str, repository: str, tag: str, variant: str | None) -> bool:
        self.asked.append((repository, tag, variant))
        return self.answers.pop(0)


def stale_tag(harness: Harness, gate: Gate) -> None:
    harness.registry.add_manifest(REPO, "latest", BODY, DOCKER_MANIFEST)
    harness.mirror.manifests.revalidation_gate = gate
    assert harness.get(f"/v2/{REPO}/manifests/latest").status == 200
    harness.clock.advance(TTL + 1)


def test_a_node_that_gets_the_lock_revalidates(harness):
    gate = Gate([True])
    stale_tag(harness, gate)

    response = harness.get(f"/v2/{REPO}/manifests/latest")

    assert (response.status, response.headers["x-cache"]) == (200, "REVALIDATED")
    assert harness.registry.count("HEAD", "/manifests/") == 1
    assert gate.asked == [(REPO, "latest", None)]


def test_a_node_another_revalidates_for_serves_the_record_without_asking_upstream(harness):
    stale_tag(harness, Gate([False]))
    heads = harness.registry.count("HEAD", "/manifests/")

    response = harness.get(f"/v2/{REPO}/manifests/latest")

    assert (response.status, response.body, response.headers["x-cache"]) == (200, BODY, "HIT")
    assert harness.registry.count("HEAD", "/manifests/") == heads == 0


def test_a_fresh_tag_asks_no_gate(harness):
    gate = Gate([])
    harness.registry.add_manifest(REPO, "latest", BODY, DOCKER_MANIFEST)
    harness.mirror.manifests.revalidation_gate = gate
    harness.get(f"/v2/{REPO}/manifests/latest")
    harness.get(f"/v2/{REPO}/manifests/latest")

    assert gate.asked == []


@define
class FakeTags:
    lock: Any

    async def revalidation_lock(self, registry: str, repository: str, tag: str, variant: str | None) -> Any:
        if isinstance(self.lock, Exception):
            raise self.lock
        return self.lock


@pytest.mark.parametrize(
    "tags, first",
    [
        (None, True),
        (FakeTags(TagLock("k", b"t")), True),
        (FakeTags(None), False),
        (FakeTags(RedisUnavailable("refused")), True),
    ],
    ids=["no redis", "lock got", "lock held elsewhere", "redis away"],
)
def test_the_tiered_store_says_who_revalidates(tags, first):
    store = TieredStore(local=None, bucket=None, tags=tags)  # type: ignore[arg-type]

    assert run(store.first_to_revalidate("docker.io", REPO, "latest", None)) is first
