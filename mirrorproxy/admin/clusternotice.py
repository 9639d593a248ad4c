"""Telling a cluster's running nodes what the admin command removed from
their bucket: `cluster.events` on the cluster's Redis channel (a purge per
repository or tag purged, its tag records in Redis removed first; a changed
cache stamp after any removal), when the config file names a Redis.

A hint, as every cluster event is: a node that misses it is no worse off
than before clustering.  Sent with one blocking redis-py call each (the
admin command has no reactor).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import redis
from attrs import frozen

from ..cluster.address import RedisAddress
from ..cluster.events import ClusterEvent, Purge, encode_event
from ..cluster.keys import KeySpace
from ..cluster.redisclient import RedisTimeouts, make_redis
from ..server.clustersettings import ClusterSettings


class NodesNotTold(Exception):
    """Redis did not take the events; why, on one line."""


@frozen
class Told:
    address: str  # the Redis, without credentials
    listeners: int  # nodes subscribed when the events were sent


def redis_for(address: RedisAddress) -> Any:
    """A redis-py client for `address` (replaced in unit tests)."""
    return make_redis(address, RedisTimeouts())


def tell_nodes(cluster: ClusterSettings, events: Sequence[ClusterEvent]) -> Told | None:
    """Publish `events` on the cluster's channel; None without a Redis."""
    if cluster.redis is None or cluster.storage is None or not events:
        return None
    # The key space the nodes use (clusters sharing a Redis are told apart).
    keys = KeySpace(cluster.redis_prefix)
    sender = f"mirrorproxy-admin@{socket.gethostname()}"
    client = redis_for(cluster.redis)
    listeners = 0
    try:
        for event in events:
            if isinstance(event, Purge):
                # The cluster's own tag records go first: a node reads them
                # before its disk, and would serve the purged tag from them.
                for pattern in keys.tag_record_patterns(event.registry, event.repository, event.tag):
                    for key in client.scan_iter(match=pattern, count=1000):
                        client.delete(key)
            listeners = max(listeners, int(client.publish(keys.events_channel(), encode_event(sender, event))))
    except redis.RedisError as e:
        raise NodesNotTold(f"cannot tell the nodes through {cluster.redis.display()}: {e}") from None
    finally:
        client.close()
    return Told(cluster.redis.display(), listeners)
