"""One node's coordination through one Redis, built from its URL: the
commands and their health, fill claims, shared tags and cluster events,
started and stopped together."""

from __future__ import annotations

from typing import Any

from attrs import define
from twisted.internet.defer import Deferred

from .address import RedisAddress
from .claims import DEFAULT_TTL, FillClaims
from .events import ClusterEvents
from .health import RedisHealth
from .keys import KeySpace, Node
from .redisclient import RedisClient, RedisTimeouts, make_redis
from .subscriber import PubSubListener
from .tags import SharedTags


@define(eq=False)
class Coordination:
    client: RedisClient
    claims: FillClaims
    tags: SharedTags
    events: ClusterEvents
    _listener: PubSubListener

    @property
    def health(self) -> RedisHealth:
        return self.client.health

    @classmethod
    def build(
        cls,
        reactor: Any,
        address: RedisAddress,
        node: Node,
        keys: KeySpace = KeySpace(),
        timeouts: RedisTimeouts = RedisTimeouts(),
        claim_ttl: float = DEFAULT_TTL,
        ca_file: str | None = None,
    ) -> Coordination:
        """`ca_file`: the CAs a rediss:// server's certificate must chain to
        (the system's without it)."""
        client = RedisClient.for_address(reactor, address, timeouts, ca_file=ca_file)
        events = ClusterEvents(client, node, keys)
        listener = PubSubListener(
            reactor,
            lambda: make_redis(address, timeouts, ca_file),
            events.channel,
            events.message,
            events.became_subscribed,
            events.lost,
            timeouts.ping_interval,
            timeouts.command,
        )
        claims = FillClaims(client, reactor, node, keys, ttl=claim_ttl)
        return cls(client, claims, SharedTags(client, keys), events, listener)

    def start(self) -> None:
        self.client.start()
        self.events.start(self._listener)

    def stop(self) -> Deferred[None]:
        """Fires once the pub/sub thread has ended; the command threads
        are stopped before it returns."""
        stopped = self.events.stop()
        self.client.stop()
        return stopped
