"""Shared tag records over the fake commands: the stores' JSON under the
tag's key, kept for `keep_for`; the revalidation lock, held by a token of
its own.  (Between two nodes on a real redis-server:
tests/integration/test_cluster_redis.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mirrorproxy.cluster.commands import RedisUnavailable
from mirrorproxy.cluster.keys import KeySpace
from mirrorproxy.cluster.tags import BadTagRecord, SharedTags, TagLock
from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.values import TagRecord

from .test_cluster_fakecommands import FakeCommands

RECORD = TagRecord(Digest("cd" * 32), "application/vnd.oci.image.index.v1+json", 1234, 1.5e9)
KEY = "mp:docker.io:tag:library/alpine:3.20"


def result(coroutine: Any) -> Any:
    d = Deferred.fromCoroutine(coroutine)
    assert d.called, "not finished"
    outcome = d.result
    d.addErrback(lambda _: None)
    return outcome


def test_a_record_is_the_stores_json_under_the_tags_key_kept_for_a_while() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    tags = SharedTags(redis, KeySpace("mp"), keep_for=3600)
    result(tags.put("docker.io", "library/alpine", "3.20", RECORD))
    assert redis.values[KEY] == (RECORD.to_json(), 3600)
    assert result(tags.get("docker.io", "library/alpine", "3.20")) == RECORD
    assert result(tags.get("docker.io", "library/alpine", "3.20", "0123456789abcdef")) is None
    clock.advance(3600)
    assert result(tags.get("docker.io", "library/alpine", "3.20")) is None


def test_records_may_be_kept_for_ever() -> None:
    redis = FakeCommands(Clock())
    tags = SharedTags(redis, KeySpace("mp"), keep_for=None)
    result(tags.put("docker.io", "library/alpine", "3.20", RECORD, variant="v"))
    assert redis.values[KEY + ":v"] == (RECORD.to_json(), None)


def test_a_key_holding_something_else_is_reported_not_served() -> None:
    redis = FakeCommands(Clock())
    redis.values[KEY] = (b'{"digest": "nope"}', None)
    outcome = result(SharedTags(redis, KeySpace("mp")).get("docker.io", "library/alpine", "3.20"))
    assert isinstance(outcome.value, BadTagRecord)
    assert str(outcome.value).startswith("not a tag record: ")


def test_one_revalidation_lock_per_tag_until_released_or_expired() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    tags = SharedTags(redis, KeySpace("mp"), lock_ttl=15)
    lock = result(tags.revalidation_lock("docker.io", "library/alpine", "3.20"))
    assert isinstance(lock, TagLock)
    assert lock.key == "mp:docker.io:revalidating:library/alpine:3.20"
    assert redis.values[lock.key] == (lock.token, 15)
    assert result(tags.revalidation_lock("docker.io", "library/alpine", "3.20")) is None
    assert result(tags.revalidation_lock("docker.io", "library/alpine", "3.21")) is not None
    assert result(tags.release(lock)) is True
    again = result(tags.revalidation_lock("docker.io", "library/alpine", "3.20"))
    assert again is not None and again.token != lock.token
    clock.advance(15)
    late = result(tags.revalidation_lock("docker.io", "library/alpine", "3.20"))
    assert late is not None
    assert result(tags.release(again)) is False  # expired, and taken since
    assert redis.values[late.key][0] == late.token


def test_redis_away_fails_gets_and_locks_and_a_release_leaves_the_lock_to_expire() -> None:
    redis = FakeCommands(Clock())
    tags = SharedTags(redis, KeySpace("mp"))
    lock = result(tags.revalidation_lock("docker.io", "library/alpine", "3.20"))
    redis.away = "Connection refused"
    for call in (
        tags.get("docker.io", "library/alpine", "3.20"),
        tags.put("docker.io", "library/alpine", "3.20", RECORD),
        tags.revalidation_lock("docker.io", "library/alpine", "3.20"),
    ):
        outcome = result(call)
        assert isinstance(outcome.value, RedisUnavailable)
        assert "Connection refused" in str(outcome.value)
    assert result(tags.release(lock)) is False


@pytest.mark.parametrize("variant", [None, "0123456789abcdef"])
def test_get_and_put_meet_at_one_key(variant: str | None) -> None:
    redis = FakeCommands(Clock())
    tags = SharedTags(redis, KeySpace("mp"))
    result(tags.put("docker.io", "library/alpine", "3.20", RECORD, variant))
    result(tags.get("docker.io", "library/alpine", "3.20", variant))
    assert [key for _, key in redis.calls] == [redis.calls[0][1]] * 2
