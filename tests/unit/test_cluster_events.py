"""Cluster events: their messages on the wire, delivery to the handlers
with the sender's own flagged, and what a lost or renewed subscription
does to the node's view of Redis.  (Delivery between two nodes through a
real redis-server: tests/integration/test_cluster_redis.py.)"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mirrorproxy.cluster.events import (
    BadEvent,
    CacheStampChanged,
    ClusterEvent,
    ClusterEvents,
    Evict,
    Purge,
    Received,
    decode_event,
    encode_event,
)
from mirrorproxy.cluster.keys import KeySpace, Node
from mirrorproxy.registry.names import Digest

from .test_cluster_fakecommands import FakeCommands

DIGEST = Digest("ab" * 32)


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (
            Purge("docker.io", "library/alpine", "3.20"),
            b'{"node":"n1","kind":"purge","registry":"docker.io","repository":"library/alpine","tag":"3.20"}',
        ),
        (
            Purge("docker.io", "library/alpine"),
            b'{"node":"n1","kind":"purge","registry":"docker.io","repository":"library/alpine"}',
        ),
        (
            Evict("ghcr.io", DIGEST),
            b'{"node":"n1","kind":"evict","registry":"ghcr.io","digest":"sha256:' + b"ab" * 32 + b'"}',
        ),
        (CacheStampChanged(), b'{"node":"n1","kind":"cache-stamp"}'),
    ],
)
def test_each_event_on_the_wire_and_back(event: ClusterEvent, wire: bytes) -> None:
    assert encode_event("n1", event) == wire
    assert decode_event(wire) == ("n1", event)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"purge",
        b"[]",
        b'{"kind":"cache-stamp"}',
        b'{"node":"n","kind":"reboot"}',
        b'{"node":"n","kind":"purge","registry":"r"}',
        b'{"node":"n","kind":"purge","registry":"r","repository":"x","tag":3}',
        b'{"node":"n","kind":"evict","registry":"r","digest":"md5:abc"}',
        b'{"node":7,"kind":"cache-stamp"}',
    ],
)
def test_a_message_that_is_no_event_is_refused(wire: bytes) -> None:
    with pytest.raises(BadEvent, match="not a cluster event"):
        decode_event(wire)


def events_of(redis: FakeCommands, name: str = "n1") -> ClusterEvents:
    return ClusterEvents(redis, Node(name, f"http://{name}:5000"), KeySpace("mp"))


def test_handlers_get_every_event_with_the_sender_and_whether_it_is_ours() -> None:
    events = events_of(FakeCommands(Clock()))
    first: list[Received] = []
    second: list[Received] = []
    events.listen(first.append)
    events.listen(second.append)
    events.message(encode_event("n2", Evict("docker.io", DIGEST)))
    events.message(encode_event("n1", CacheStampChanged()))
    expected = [
        Received("n2", Evict("docker.io", DIGEST), own=False),
        Received("n1", CacheStampChanged(), own=True),
    ]
    assert first == second == expected


def test_a_bad_message_or_a_failing_handler_stops_nothing() -> None:
    events = events_of(FakeCommands(Clock()))
    heard: list[Received] = []

    def broken(_: Received) -> None:
        raise RuntimeError("handler bug")

    events.listen(broken)
    events.listen(heard.append)
    events.message(b"not json")
    events.message(encode_event("n2", CacheStampChanged()))
    assert heard == [Received("n2", CacheStampChanged(), own=False)]


def test_publish_sends_this_nodes_event_on_the_channel() -> None:
    redis = FakeCommands(Clock())
    events = events_of(redis)
    assert events.channel == "mp:events"
    d = Deferred.fromCoroutine(events.publish(Purge("docker.io", "library/alpine")))
    assert d.result == 0
    assert redis.calls == [("publish", "mp:events")]


def test_subscription_changes_are_counted_awaited_and_reach_health() -> None:
    redis = FakeCommands(Clock())
    events = events_of(redis)
    waiter = events.when_subscribed()
    assert not waiter.called and events.subscriptions == 0
    events.became_subscribed()
    assert waiter.called and events.subscribed and events.subscriptions == 1
    assert events.when_subscribed().called

    events.lost("Connection reset by peer")
    assert not events.subscribed
    assert redis.health.state.describe() == "unreachable: pub/sub: Connection reset by peer"
    again = events.when_subscribed()
    assert not again.called
    events.became_subscribed()
    assert again.called and events.subscriptions == 2
    assert redis.health.reachable
