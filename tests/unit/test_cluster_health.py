"""What a node believes about Redis: unreachable until it answered once,
why and since when it is away, and who is told of each change."""

from __future__ import annotations

from twisted.internet.task import Clock

from mirrorproxy.cluster.health import Reachable, RedisHealth, Unreachable


def test_redis_counts_as_away_until_it_first_answers() -> None:
    clock = Clock()
    clock.advance(100)
    health = RedisHealth(clock, "redis://r:6379/0")
    assert health.state == Unreachable("not yet connected", 100)
    assert not health.reachable
    clock.advance(1.5)
    health.succeeded()
    assert health.state == Reachable(101.5)
    assert health.state.describe() == "ok"


def test_an_outage_keeps_its_start_and_its_latest_reason() -> None:
    clock = Clock()
    health = RedisHealth(clock)
    health.succeeded()
    clock.advance(10)
    health.failed("Connection refused")
    clock.advance(5)
    health.failed("no answer within 4s")
    assert health.state == Unreachable("no answer within 4s", 10)
    assert health.state.describe() == "unreachable: no answer within 4s"
    assert health.failures == 2
    clock.advance(5)
    health.succeeded()
    health.succeeded()
    assert health.state == Reachable(20)


def test_watchers_hear_each_change_once() -> None:
    clock = Clock()
    health = RedisHealth(clock)
    heard: list[object] = []
    health.watch(heard.append)
    health.failed("still not connected")  # no change: it was away already
    health.succeeded()
    health.succeeded()
    health.failed("Connection reset by peer")
    health.failed("Connection refused")
    health.succeeded()
    assert heard == [Reachable(0), Unreachable("Connection reset by peer", 0), Reachable(0)]
