"""What one node tells the others: purges, evictions, a changed cache stamp.

One pub/sub channel for the cluster; every message names the node that
sent it, so a node knows its own when they come back.  Each is a hint to
forget something (a tag, a blob), never a fact to act on blindly: a node
that missed one (Redis away) is no worse than before clustering.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..registry.names import Digest
from .commands import Commands
from .keys import KeySpace, Node
from .subscriber import PubSubListener

log = Logger()


class BadEvent(ValueError):
    """A message on the channel that is not one of our events."""


@frozen
class Purge:
    """Forget a repository's tags (or one tag's records)."""

    registry: str
    repository: str
    tag: str | None = None


@frozen
class Evict:
    """A blob left the shared store: drop it from the local tier."""

    registry: str
    digest: Digest


@frozen
class CacheStampChanged:
    """An admin command removed things: forget what is held in memory."""


ClusterEvent = Purge | Evict | CacheStampChanged


@frozen
class Received:
    sender: str  # the node id
    event: ClusterEvent
    own: bool  # sent by this node


def encode_event(sender: str, event: ClusterEvent) -> bytes:
    fields: dict[str, Any] = {"node": sender}
    if isinstance(event, Purge):
        fields |= {"kind": "purge", "registry": event.registry, "repository": event.repository}
        if event.tag is not None:
            fields["tag"] = event.tag
    elif isinstance(event, Evict):
        fields |= {"kind": "evict", "registry": event.registry, "digest": str(event.digest)}
    else:
        fields["kind"] = "cache-stamp"
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


def decode_event(data: bytes) -> tuple[str, ClusterEvent]:
    """(sender, event), or BadEvent."""
    try:
        fields = json.loads(data)
        sender, kind = _text(fields, "node"), _text(fields, "kind")
        event: ClusterEvent
        if kind == "purge":
            tag = fields.get("tag")
            if tag is not None and not isinstance(tag, str):
                raise BadEvent("tag is not text")
            event = Purge(_text(fields, "registry"), _text(fields, "repository"), tag)
        elif kind == "evict":
            event = Evict(_text(fields, "registry"), Digest.parse(_text(fields, "digest")))
        elif kind == "cache-stamp":
            event = CacheStampChanged()
        else:
            raise BadEvent(f"unknown kind {kind!r}")
    except (ValueError, TypeError, AttributeError) as e:
        raise BadEvent(f"not a cluster event: {data[:120]!r} ({e})") from None
    return sender, event


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields[name] if name in fields else None
    if not isinstance(value, str):
        raise BadEvent(f"{name} missing or not text")
    return value


@define(eq=False)
class ClusterEvents:
    """Publishes this node's events; hands everyone's (its own flagged
    `own`) to the handlers given to `listen`."""

    _commands: Commands
    _node: Node
    _keys: KeySpace = KeySpace()
    _listener: PubSubListener | None = field(default=None, init=False)
    # Times the channel was (re)subscribed; 0 until the first.
    subscriptions: int = field(default=0, init=False)
    subscribed: bool = field(default=False, init=False)
    _handlers: list[Callable[[Received], None]] = field(factory=list, init=False)
    _subscribed_waiters: list[Deferred[None]] = field(factory=list, init=False)

    @property
    def channel(self) -> str:
        return self._keys.events_channel()

    def listen(self, handler: Callable[[Received], None]) -> None:
        self._handlers.append(handler)

    async def publish(self, event: ClusterEvent) -> int:
        """How many nodes (this one included, if subscribed) got it;
        RedisUnavailable if Redis cannot take it."""
        return await self._commands.publish(self.channel, encode_event(self._node.id, event))

    def when_subscribed(self) -> Deferred[None]:
        """Fires when the channel is subscribed (now, if it is)."""
        waiter: Deferred[None] = Deferred(lambda d: self._subscribed_waiters.remove(d))
        if self.subscribed:
            waiter.callback(None)
        else:
            self._subscribed_waiters.append(waiter)
        return waiter

    # What the listener calls, on the reactor thread.

    def message(self, data: bytes) -> None:
        try:
            sender, event = decode_event(data)
        except BadEvent as e:
            log.warn("ignored on {channel}: {error}", channel=self.channel, error=str(e))
            return
        received = Received(sender, event, own=sender == self._node.id)
        for handler in list(self._handlers):
            try:
                handler(received)
            except Exception:
                log.failure("cluster event handler failed on {event}", event=received)

    def became_subscribed(self) -> None:
        self.subscriptions += 1
        self.subscribed = True
        self._commands.health.succeeded()
        waiters, self._subscribed_waiters = self._subscribed_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def lost(self, reason: str) -> None:
        if self.subscribed:
            log.warn("cluster events: subscription lost: {reason}", reason=reason)
        self.subscribed = False
        self._commands.health.failed(f"pub/sub: {reason}")

    def start(self, listener: PubSubListener) -> None:
        """Listen through `listener`, built to call `message`,
        `became_subscribed` and `lost`."""
        self._listener = listener
        listener.start()

    def stop(self) -> Deferred[None]:
        if self._listener is None:
            return succeed(None)
        return self._listener.stop()
