"""The Commands over a real Redis: redis-py, in a thread pool of its own.

redis-py is blocking, so every command runs in the pool (never on the
reactor thread) and comes back as a Deferred.  Each is bounded twice: by
redis-py's socket timeouts (connect, then each read), and by a timeout on
the Deferred itself, which also covers a call queued behind others stuck in
the pool.  redis-py's own retries are off, so those bounds are the whole
story; trying again is the callers' business (the next renewal, the next
request, the PING that marks Redis reachable again).

Every outcome is reported to `health`; while it says Redis is away, calls
fail at once instead of each waiting for its timeout, and the PING, every
`ping_interval`, is what finds Redis back.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any, Callable, TypeVar

import redis
from attrs import define, field, frozen
from redis.backoff import NoBackoff
from redis.retry import Retry
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .address import RedisAddress
from .commands import RedisUnavailable
from .health import RedisHealth

log = Logger()

T = TypeVar("T")

# Compare-and-extend and compare-and-delete: only the holder of a key's
# value may renew or remove it, in one step, so nobody removes a claim that
# expired and was taken by another node in between.
EXTEND_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
DELETE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@frozen
class RedisTimeouts:
    connect: float = 2.0
    command: float = 2.0
    # How often Redis is asked whether it is there.
    ping_interval: float = 2.0

    @property
    def call_bound(self) -> float:
        """The longest any one call may take, connecting included."""
        return self.connect + self.command


def make_redis(
    address: RedisAddress, timeouts: RedisTimeouts, ca_file: str | None = None, **options: Any
) -> redis.Redis:
    """A redis-py client for `address` that never retries on its own.  Over
    TLS (rediss://) the server's certificate must name its host and chain
    to `ca_file`, or to the system's CAs without one."""
    if address.tls:
        options |= {
            "ssl_ca_certs": ca_file,
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
        }
    return redis.Redis(
        host=address.host,
        port=address.port,
        db=address.db,
        username=address.username,
        password=address.password,
        ssl=address.tls,
        socket_connect_timeout=timeouts.connect,
        socket_timeout=timeouts.command,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        **options,
    )


@define(eq=False)
class RedisClient:
    """Commands for one Redis; `start` before use, `stop` at shutdown."""

    _reactor: Any  # IReactorTime and IReactorThreads
    _redis: redis.Redis
    health: RedisHealth
    _timeouts: RedisTimeouts
    _pool: ThreadPool
    _extend: Any = field(init=False)
    _delete: Any = field(init=False)
    _pinger: LoopingCall | None = field(default=None, init=False)
    _running: bool = field(default=False, init=False)
    _shutdown_trigger: Any = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._extend = self._redis.register_script(EXTEND_IF_OWNED)
        self._delete = self._redis.register_script(DELETE_IF_OWNED)

    @classmethod
    def for_address(
        cls,
        reactor: Any,
        address: RedisAddress,
        timeouts: RedisTimeouts = RedisTimeouts(),
        threads: int = 4,
        ca_file: str | None = None,
    ) -> RedisClient:
        # One connection a thread, so no call waits for a connection.
        client = make_redis(address, timeouts, ca_file, max_connections=threads)
        pool = ThreadPool(minthreads=0, maxthreads=threads, name="mirrorproxy-redis")
        # A call outliving the reactor (stopped without `stop`) must not keep
        # the process alive: nothing in a Redis call needs finishing.
        pool.threadFactory = partial(threading.Thread, daemon=True)  # type: ignore[assignment]
        return cls(reactor, client, RedisHealth(reactor, address.display()), timeouts, pool)

    def start(self) -> None:
        self._running = True
        self._pool.start()
        # As the reactor's own thread pool: its threads must not keep the
        # process alive once the reactor stopped.
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._reactor_stopping
        )
        self._pinger = LoopingCall(self._ping_quietly)
        self._pinger.clock = self._reactor
        self._pinger.start(self._timeouts.ping_interval, now=True)

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        # Waits for calls in progress, each bounded by the socket timeouts.
        self._pool.stop()
        self._redis.close()

    def _reactor_stopping(self) -> None:
        self._shutdown_trigger = None  # being fired: no longer removable
        self.stop()

    def set_if_absent(self, key: str, value: bytes, ttl_ms: int) -> Deferred[bool]:
        return self._call(
            f"SET NX {key}", lambda r: bool(r.set(key, value, nx=True, px=ttl_ms))
        )

    def extend_if_owned(self, key: str, value: bytes, ttl_ms: int) -> Deferred[bool]:
        return self._call(
            f"renew {key}", lambda r: bool(self._extend(keys=[key], args=[value, ttl_ms]))
        )

    def delete_if_owned(self, key: str, value: bytes) -> Deferred[bool]:
        return self._call(f"release {key}", lambda r: bool(self._delete(keys=[key], args=[value])))

    def get(self, key: str) -> Deferred[bytes | None]:
        def get(r: redis.Redis) -> bytes | None:
            value = r.get(key)
            # Without decode_responses, redis-py answers bytes.
            assert value is None or isinstance(value, bytes)
            return value

        return self._call(f"GET {key}", get)

    def put(self, key: str, value: bytes, ttl_ms: int | None) -> Deferred[None]:
        def put(r: redis.Redis) -> None:
            r.set(key, value, px=ttl_ms)

        return self._call(f"SET {key}", put)

    def publish(self, channel: str, message: bytes) -> Deferred[int]:
        return self._call(f"PUBLISH {channel}", lambda r: int(r.publish(channel, message)))

    def ping(self) -> Deferred[None]:
        def ping(r: redis.Redis) -> None:
            r.ping()

        return self._call("PING", ping, even_if_away=True)

    def _ping_quietly(self) -> Deferred[None]:
        # The outcome is in `health`; the loop goes on either way.
        return self.ping().addErrback(lambda _: None)

    def _call(
        self, what: str, command: Callable[[redis.Redis], T], even_if_away: bool = False
    ) -> Deferred[T]:
        state = self.health.state
        if not self._running:
            return fail(RedisUnavailable(f"{what}: the Redis client is stopped"))
        if not even_if_away and not self.health.reachable:
            return fail(RedisUnavailable(f"{what}: redis {state.describe()}"))
        running: Deferred[T] = deferToThreadPool(
            self._reactor, self._pool, command, self._redis
        )
        # No canceller for a call running in a thread: a late answer is
        # dropped (a cancelled Deferred ignores its callback).
        running.addTimeout(self._timeouts.call_bound, self._reactor)
        return running.addCallbacks(self._answered, self._failed, errbackArgs=(what,))

    def _answered(self, result: T) -> T:
        self.health.succeeded()
        return result

    def _failed(self, failure: Failure, what: str) -> Failure:
        if failure.check(TimeoutError, CancelledError):
            reason = f"no answer within {self._timeouts.call_bound:g}s"
        elif failure.check(redis.RedisError):
            reason = failure.getErrorMessage() or repr(failure.value)
        else:
            return failure
        self.health.failed(reason)
        failure.trap(TimeoutError, CancelledError, redis.RedisError)
        raise RedisUnavailable(f"{what}: {reason}")
