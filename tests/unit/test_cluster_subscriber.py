"""The pub/sub listening loop, driven step by step in the test's thread:
each connection follows a script of what Redis says (a message, silence,
an error), time is the test's, and the waits between reconnections are
recorded instead of slept.  The loop on a real thread against a real
redis-server (killed, hung, restarted) is in
tests/integration/test_cluster_redis.py."""

from __future__ import annotations

from typing import Any, Callable

import redis

from mirrorproxy.cluster.subscriber import POLL_SECONDS, PubSubListener

Step = dict[str, Any] | Exception | None  # a message, an error, or silence


class Inline:
    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)


class ScriptedPubSub:
    def __init__(self, world: World, steps: list[Step]) -> None:
        self.world, self.steps = world, steps

    def subscribe(self, channel: str) -> None:
        self.world.said.append(f"SUBSCRIBE {channel}")

    def ping(self) -> None:
        self.world.said.append("PING")

    def get_message(self, timeout: float) -> dict[str, Any] | None:
        if not self.steps:
            self.world.listener.stop()
            return None
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if step is None:
            self.world.now += timeout
        return step

    def close(self) -> None:
        self.world.said.append("close")


class World:
    """Redis as the loop sees it: one script per connection, in order."""

    def __init__(self, *connections: list[Step], quiet_after: float = 1.0) -> None:
        self.connections = list(connections)
        self.now = 0.0
        self.said: list[str] = []
        self.events: list[tuple[str, Any]] = []
        self.pauses: list[float] = []
        self.listener = PubSubListener(
            Inline(),
            self.connect,
            "mp:events",
            lambda data: self.events.append(("message", data)),
            lambda: self.events.append(("subscribed", None)),
            lambda reason: self.events.append(("lost", reason)),
            quiet_after,
            0.5,
            now=lambda: self.now,
            pause=self.pause,
        )

    def connect(self) -> Any:
        if not self.connections:
            raise AssertionError("connected more often than scripted")
        world, steps = self, self.connections.pop(0)

        class Client:
            def pubsub(self) -> ScriptedPubSub:
                return ScriptedPubSub(world, steps)

            def close(self) -> None:
                pass

        return Client()

    def pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return not self.connections  # the script is played: stop

    def run(self) -> None:
        self.listener.run()
        assert self.listener.stop().called


def subscribed() -> dict[str, Any]:
    return {"type": "subscribe", "channel": b"mp:events", "data": 1}


def message(data: bytes) -> dict[str, Any]:
    return {"type": "message", "channel": b"mp:events", "data": data}


def test_messages_are_handed_over_and_nothing_else() -> None:
    world = World(
        [subscribed(), message(b"one"), {"type": "pong", "data": b""}, message(b"two")]
    )
    world.run()
    assert world.events == [("subscribed", None), ("message", b"one"), ("message", b"two")]
    assert world.said == ["SUBSCRIBE mp:events", "close"]


def test_a_lost_connection_is_reported_and_subscribed_again_after_growing_waits() -> None:
    refused = redis.ConnectionError("Error 111 connecting to r:6379. Connection refused.")
    world = World(
        [subscribed(), redis.ConnectionError("Connection closed by server.")],
        [refused],
        [refused],
        [subscribed(), message(b"after"), OSError("reset")],
        [subscribed()],
    )
    world.run()
    assert world.events == [
        ("subscribed", None),
        ("lost", "Connection closed by server."),
        ("lost", "Error 111 connecting to r:6379. Connection refused."),
        ("lost", "Error 111 connecting to r:6379. Connection refused."),
        ("subscribed", None),
        ("message", b"after"),
        ("lost", "reset"),
        ("subscribed", None),
    ]
    # Doubling while nothing works; back to the first after a subscription.
    assert world.pauses == [0.1, 0.2, 0.4, 0.1]


def test_waits_between_attempts_stop_growing_at_two_seconds() -> None:
    world = World(*[[redis.ConnectionError("refused")] for _ in range(8)])
    world.run()
    assert world.pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]


def test_a_silent_connection_is_pinged_then_given_up() -> None:
    polls_to_quiet = round(1.0 / POLL_SECONDS) + 1
    world = World(
        [subscribed()] + [None] * (polls_to_quiet + 4),
        [subscribed()],
    )
    world.run()
    assert world.said.count("PING") == 1
    assert world.events == [
        ("subscribed", None),
        ("lost", "no answer to PING within 0.5s"),
        ("subscribed", None),
    ]


def test_a_quiet_connection_that_answers_its_ping_is_kept() -> None:
    polls_to_quiet = round(1.0 / POLL_SECONDS) + 1
    pong = {"type": "pong", "data": b""}
    world = World([subscribed()] + ([None] * polls_to_quiet + [pong]) * 3)
    world.run()
    assert world.said.count("PING") == 3
    assert [kind for kind, _ in world.events] == ["subscribed"]


def test_stop_before_the_loop_ran_fires_at_once() -> None:
    world = World()
    assert world.listener.stop().called
