"""RedisClient's own promises, with redis-py's calls answered by the test:
each outcome reaches health, no call outlives its bound, calls fail at
once while Redis is known to be away (but the PING still goes, every
interval), and a stopped client refuses at once.  What redis-py does on a
real socket is in tests/integration/test_cluster_redis.py."""

from __future__ import annotations

from typing import Any, Callable

import redis
from attrs import define, field
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mirrorproxy.cluster.commands import RedisUnavailable
from mirrorproxy.cluster.health import RedisHealth
from mirrorproxy.cluster.address import parse_redis_url
from mirrorproxy.cluster.redisclient import RedisClient, RedisTimeouts, make_redis

TIMEOUTS = RedisTimeouts(connect=1.0, command=3.0, ping_interval=2.0)


class ThreadlessReactor(Clock):
    """A Clock that also takes what a thread pool hands back."""

    def __init__(self) -> None:
        super().__init__()
        self.triggers: list[tuple[str, str, Callable[[], None]] | None] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], None]) -> int:
        self.triggers.append((phase, event, f))
        return len(self.triggers)

    def removeSystemEventTrigger(self, trigger: int) -> None:
        # A trigger that fired is gone: removing it fails, as in Twisted.
        if self.triggers[trigger - 1] is None:
            raise ValueError("list.remove(x): x not in list")
        self.triggers[trigger - 1] = None

    def shut_down(self) -> None:
        for i, trigger in enumerate(list(self.triggers)):
            if trigger is not None and trigger[:2] == ("during", "shutdown"):
                self.triggers[i] = None
                trigger[2]()


@define(eq=False)
class HeldPool:
    """A thread pool whose work waits for the test to run it."""

    waiting: list[tuple[Callable[[bool, Any], None], Callable[..., Any], tuple[Any, ...]]] = field(
        factory=list
    )
    started: bool = False
    stopped: bool = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *args: Any
    ) -> None:
        self.waiting.append((on_result, f, args))

    def run_next(self) -> None:
        on_result, f, args = self.waiting.pop(0)
        try:
            on_result(True, f(*args))
        except BaseException as e:  # as Twisted's pool does
            on_result(False, Failure(e))


class ScriptedRedis:
    """Stands in for redis.Redis: each command answers what `answer` says."""

    def __init__(self) -> None:
        self.answer: Callable[[str], Any] = lambda name: True
        self.commands: list[str] = []
        self.closed = False

    def register_script(self, script: str) -> Callable[..., Any]:
        return lambda keys, args: self._run("EVALSHA")

    def _run(self, name: str) -> Any:
        self.commands.append(name)
        return self.answer(name)

    def set(self, key: str, value: bytes, **options: Any) -> Any:
        return self._run("SET")

    def get(self, key: str) -> Any:
        return self._run("GET")

    def ping(self) -> Any:
        return self._run("PING")

    def publish(self, channel: str, message: bytes) -> Any:
        return self._run("PUBLISH")

    def close(self) -> None:
        self.closed = True


def client() -> tuple[RedisClient, ThreadlessReactor, HeldPool, ScriptedRedis]:
    reactor, pool, fake = ThreadlessReactor(), HeldPool(), ScriptedRedis()
    health = RedisHealth(reactor, "redis://r:6379/0")
    made = RedisClient(reactor, fake, health, TIMEOUTS, pool)  # type: ignore[arg-type]
    made.start()
    pool.run_next()  # the first PING, at start
    return made, reactor, pool, fake


def failure_of(d: Any) -> BaseException:
    assert d.called
    failure = d.result
    d.addErrback(lambda _: None)
    return failure.value  # type: ignore[no-any-return]


def test_the_first_ping_makes_redis_reachable_and_answers_come_back() -> None:
    made, reactor, pool, fake = client()
    assert pool.started and made.health.reachable
    fake.answer = lambda name: b"value" if name == "GET" else True
    got = made.get("k")
    pool.run_next()
    assert got.result == b"value"
    claimed = made.set_if_absent("k", b"v", 1000)
    pool.run_next()
    assert claimed.result is True
    assert fake.commands == ["PING", "GET", "SET"]


def test_a_refused_call_fails_with_its_reason_and_redis_counts_as_away() -> None:
    made, reactor, pool, fake = client()

    def refused(name: str) -> Any:
        raise redis.ConnectionError("Error 111 connecting to r:6379. Connection refused.")

    fake.answer = refused
    d = made.extend_if_owned("k", b"v", 1000)
    pool.run_next()
    error = failure_of(d)
    assert isinstance(error, RedisUnavailable)
    assert str(error) == "renew k: Error 111 connecting to r:6379. Connection refused."
    assert made.health.state.describe() == (
        "unreachable: Error 111 connecting to r:6379. Connection refused."
    )


def test_no_call_outlives_its_bound_and_a_late_answer_is_dropped() -> None:
    made, reactor, pool, fake = client()
    d = made.get("k")
    reactor.advance(TIMEOUTS.call_bound - 0.01)
    assert not d.called
    reactor.advance(0.01)
    error = failure_of(d)
    assert str(error) == "GET k: no answer within 4s"
    assert made.health.state.describe() == "unreachable: no answer within 4s"
    pool.run_next()  # the thread comes back at last: it counts for nothing
    assert not made.health.reachable


def test_while_redis_is_away_calls_fail_at_once_and_the_ping_finds_it_back() -> None:
    made, reactor, pool, fake = client()
    made.health.failed("Connection refused")
    d = made.publish("ch", b"m")
    assert str(failure_of(d)) == "PUBLISH ch: redis unreachable: Connection refused"
    assert pool.waiting == []  # nothing reached redis-py
    reactor.advance(TIMEOUTS.ping_interval)
    pool.run_next()
    assert fake.commands == ["PING", "PING"]
    assert made.health.reachable


def test_a_bug_is_not_mistaken_for_redis_being_away() -> None:
    made, reactor, pool, fake = client()

    def bug(name: str) -> Any:
        raise KeyError("oops")

    fake.answer = bug
    d = made.get("k")
    pool.run_next()
    assert isinstance(failure_of(d), KeyError)
    assert made.health.reachable


def test_a_stopped_client_refuses_at_once_and_stops_once() -> None:
    made, reactor, pool, fake = client()
    made.stop()
    made.stop()
    assert pool.stopped and fake.closed
    assert str(failure_of(made.get("k"))) == "GET k: the Redis client is stopped"
    reactor.advance(TIMEOUTS.ping_interval * 3)
    assert pool.waiting == []  # no more PINGs


def test_the_reactor_shutting_down_stops_the_client() -> None:
    made, reactor, pool, fake = client()
    reactor.shut_down()
    assert pool.stopped and fake.closed
    made.stop()  # and stopping again later does nothing
    assert str(failure_of(made.ping())) == "PING: the Redis client is stopped"


def test_a_client_stopped_first_leaves_no_shutdown_trigger() -> None:
    made, reactor, pool, fake = client()
    made.stop()
    assert reactor.triggers == [None]


def test_redis_py_is_set_up_bounded_without_retries_and_verifying_tls() -> None:
    timeouts = RedisTimeouts(connect=1.5, command=2.5)
    plain = make_redis(parse_redis_url("redis://u:p@h:1/2"), timeouts, max_connections=4)
    assert plain.connection_pool.connection_class is redis.Connection
    options = plain.connection_pool.connection_kwargs
    assert (options["host"], options["port"], options["db"]) == ("h", 1, 2)
    assert (options["username"], options["password"]) == ("u", "p")
    assert (options["socket_connect_timeout"], options["socket_timeout"]) == (1.5, 2.5)
    assert options["retry"].get_retries() == 0
    assert plain.connection_pool.max_connections == 4

    tls = make_redis(parse_redis_url("rediss://h:1/0"), timeouts, "/etc/ca.pem")
    assert tls.connection_pool.connection_class is redis.SSLConnection
    options = tls.connection_pool.connection_kwargs
    assert options["ssl_ca_certs"] == "/etc/ca.pem"
    assert (options["ssl_cert_reqs"], options["ssl_check_hostname"]) == ("required", True)
