"""The few Redis operations coordination needs, as the claims, tags and
events see them: each returns a Deferred and fails with RedisUnavailable,
within a bound, when Redis does not answer.

`RedisClient` (redisclient.py) implements them over a real server; unit
tests drive the scheduling above them with a fake of their own.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from .health import RedisHealth


class RedisUnavailable(Exception):
    """Redis did not answer (refused, timed out, known to be away) or
    answered with an error; the caller falls back to local coordination."""


class Commands(Protocol):
    health: RedisHealth

    def set_if_absent(self, key: str, value: bytes, ttl_ms: int) -> Deferred[bool]:
        """SET key value NX PX ttl_ms: True if it was set."""

    def extend_if_owned(self, key: str, value: bytes, ttl_ms: int) -> Deferred[bool]:
        """Give `key` ttl_ms more to live if it still holds `value`."""

    def delete_if_owned(self, key: str, value: bytes) -> Deferred[bool]:
        """Delete `key` if it still holds `value`: True if it did."""

    def get(self, key: str) -> Deferred[bytes | None]: ...

    def put(self, key: str, value: bytes, ttl_ms: int | None) -> Deferred[None]:
        """SET key value (PX ttl_ms when given)."""

    def publish(self, channel: str, message: bytes) -> Deferred[int]:
        """How many subscribers got `message`."""

    def ping(self) -> Deferred[None]:
        """Asked even while Redis is known to be away: it is how a node
        learns that Redis is back."""
