"""Listening on one Redis pub/sub channel, on a thread of its own.

redis-py reads blocking, so the subscription lives on a dedicated thread
and hands what it hears to the reactor with callFromThread.  The thread
owns the whole connection's life: it subscribes, and whenever the
connection fails (refused, reset, or silent: no answer to a PING within the
command timeout, as when Redis hangs) it says so, waits a growing delay and
subscribes again on a new connection, until stopped.  Messages published
while it was away are lost: pub/sub keeps nothing, and the events it
carries say "forget this", so a node that missed some forgets by itself
(its tag records expire with the tag TTL anyway).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import redis
from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

# How long one wait for a message lasts; also how quickly `stop` is seen.
POLL_SECONDS = 0.2
FIRST_RETRY_DELAY = 0.1
LAST_RETRY_DELAY = 2.0


class Silent(redis.ConnectionError):
    """The pub/sub connection did not answer a PING in time."""


@define(eq=False)
class PubSubListener:
    _reactor: Any  # IReactorFromThreads
    _make_redis: Callable[[], redis.Redis]
    _channel: str
    _on_message: Callable[[bytes], None]
    _on_subscribed: Callable[[], None]
    _on_lost: Callable[[str], None]
    # After this long without a word from Redis, PING it; no answer within
    # `_answer_within`, and the connection is given up.
    _quiet_after: float
    _answer_within: float
    # Time, and waiting before a reconnection (True: stop was asked),
    # replaceable so the loop can be driven step by step in a test.
    _now: Callable[[], float] = time.monotonic
    _pause: Callable[[float], bool] | None = None
    _stopping: threading.Event = field(factory=threading.Event, init=False)
    _stopped: Deferred[None] = field(factory=Deferred, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _looping: bool = field(default=False, init=False)
    _delay: float = field(default=FIRST_RETRY_DELAY, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.run, name="mirrorproxy-redis-pubsub", daemon=True
        )
        self._thread.start()

    def stop(self) -> Deferred[None]:
        """Fires once the thread has closed its connection and ended."""
        self._stopping.set()
        if self._thread is None and not self._looping and not self._stopped.called:
            self._stopped.callback(None)
        return self._stopped

    def run(self) -> None:
        """The listening loop, until `stop`: what the thread runs."""
        self._looping = True
        pause = self._pause or self._stopping.wait
        try:
            while not self._stopping.is_set():
                try:
                    self._listen()
                except Exception as e:
                    if not isinstance(e, (redis.RedisError, OSError)):
                        self._reactor.callFromThread(
                            log.failure, "pub/sub listener", Failure(e)
                        )
                    reason = str(e) or type(e).__name__
                    self._reactor.callFromThread(self._on_lost, reason)
                    if pause(self._delay):
                        break
                    self._delay = min(self._delay * 2, LAST_RETRY_DELAY)
        finally:
            self._reactor.callFromThread(self._stopped.callback, None)

    def _listen(self) -> None:
        client = self._make_redis()
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self._channel)
            heard = self._now()
            pinged: float | None = None
            while not self._stopping.is_set():
                message = pubsub.get_message(timeout=POLL_SECONDS)
                now = self._now()
                if message is not None:
                    heard, pinged = now, None
                    self._heard(message)
                elif pinged is not None and now - pinged > self._answer_within:
                    raise Silent(f"no answer to PING within {self._answer_within:g}s")
                elif pinged is None and now - heard > self._quiet_after:
                    pubsub.ping()
                    pinged = now
        finally:
            pubsub.close()
            client.close()

    def _heard(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self._delay = FIRST_RETRY_DELAY
            self._reactor.callFromThread(self._on_subscribed)
        elif kind == "message":
            self._reactor.callFromThread(self._on_message, message["data"])
