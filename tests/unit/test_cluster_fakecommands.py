"""A fake of mirrorproxy.cluster.commands.Commands for the unit tests of
what schedules calls on top of it (claims, tags), on a task.Clock.

Keys live in a dict and expire on the clock; every call is recorded; a
test can make Redis "away" (calls fail with RedisUnavailable at once) or
"hung" (calls never answer until the test answers them).  Redis's own
semantics are tested against a real server (tests/integration/
test_cluster_redis.py); the tests here only pin that the fake keeps the
few promises the unit tests rely on.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from mirrorproxy.cluster.commands import RedisUnavailable
from mirrorproxy.cluster.health import RedisHealth


# Not slotted: a test may replace a method to stage a race.
@define(eq=False, slots=False)
class FakeCommands:
    clock: Clock
    health: RedisHealth = field(init=False)
    values: dict[str, tuple[bytes, float | None]] = field(factory=dict)
    calls: list[tuple[str, str]] = field(factory=list)
    away: str | None = None  # fail every call with this reason
    hung: list[Deferred[object]] = field(factory=list)
    hang: bool = False  # calls wait in `hung` for the test to answer

    def __attrs_post_init__(self) -> None:
        self.health = RedisHealth(self.clock, "fake")
        self.health.succeeded()

    def value(self, key: str) -> bytes | None:
        held = self.values.get(key)
        if held is None:
            return None
        data, expires = held
        if expires is not None and self.clock.seconds() >= expires:
            del self.values[key]
            return None
        return data

    def _expiry(self, ttl_ms: int | None) -> float | None:
        return None if ttl_ms is None else self.clock.seconds() + ttl_ms / 1000

    def _answer(self, name: str, key: str, work):  # type: ignore[no-untyped-def]
        self.calls.append((name, key))
        if self.away is not None:
            self.health.failed(self.away)
            return fail(RedisUnavailable(f"{name} {key}: {self.away}"))
        if self.hang:
            pending: Deferred[object] = Deferred()
            self.hung.append(pending)
            return pending
        self.health.succeeded()
        return succeed(work())

    def set_if_absent(self, key: str, value: bytes, ttl_ms: int) -> Deferred[bool]:
        def work() -> bool:
            if self.value(key) is not None:
                return False
            self.values[key] = (value, self._expiry(ttl_ms))
            return True

        return self._answer("set_if_absent", key, work)

    def extend_if_owned(self, key: str, value: bytes, ttl_ms: int) -> Deferred[bool]:
        def work() -> bool:
            if self.value(key) != value:
                return False
            self.values[key] = (value, self._expiry(ttl_ms))
            return True

        return self._answer("extend_if_owned", key, work)

    def delete_if_owned(self, key: str, value: bytes) -> Deferred[bool]:
        def work() -> bool:
            if self.value(key) != value:
                return False
            del self.values[key]
            return True

        return self._answer("delete_if_owned", key, work)

    def get(self, key: str) -> Deferred[bytes | None]:
        return self._answer("get", key, lambda: self.value(key))

    def put(self, key: str, value: bytes, ttl_ms: int | None) -> Deferred[None]:
        def work() -> None:
            self.values[key] = (value, self._expiry(ttl_ms))

        return self._answer("put", key, work)

    def publish(self, channel: str, message: bytes) -> Deferred[int]:
        return self._answer("publish", channel, lambda: 0)

    def ping(self) -> Deferred[None]:
        return self._answer("ping", "", lambda: None)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def test_keys_expire_on_the_clock() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    assert redis.set_if_absent("k", b"v", 1000).result is True
    assert redis.set_if_absent("k", b"w", 1000).result is False
    clock.advance(0.999)
    assert redis.value("k") == b"v"
    clock.advance(0.001)
    assert redis.value("k") is None
    assert redis.set_if_absent("k", b"w", 1000).result is True


def test_away_fails_at_once_and_marks_health() -> None:
    redis = FakeCommands(Clock(), away="Connection refused")
    failure = redis.get("k")
    assert isinstance(failure.result.value, RedisUnavailable)
    failure.addErrback(lambda _: None)
    assert not redis.health.reachable
