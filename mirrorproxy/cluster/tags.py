"""Tag records shared by the cluster, so a tag is revalidated once per TTL
for all the nodes, not once per node.

A record is the same JSON the stores keep (TagRecord), under one key per
(registry, repository, tag, variant).  Whether a record is fresh is the
cache's business (its `learnt` time against the tag TTL); what this module
adds is a short "revalidating" lock per tag: the node that gets it asks
upstream and puts the new record, the others serve what they have (or wait
for the record) instead of asking upstream too.

Redis away: every call fails with RedisUnavailable at once or within its
bound, and the cache falls back to its own records and its own
coalescing.
"""

from __future__ import annotations

import json
import secrets

from attrs import define, frozen

from ..storage.values import TagRecord
from .commands import Commands, RedisUnavailable
from .keys import KeySpace

# Long enough for a HEAD (and a GET) upstream; if the holder dies, the next
# node may revalidate after this long.
DEFAULT_LOCK_TTL = 15.0
# Records are garbage-collected by Redis after this long unused: a tag
# nobody pulled for a month is fetched again if pulled.
DEFAULT_KEEP_FOR = 30 * 24 * 3600.0


class BadTagRecord(ValueError):
    """A tag key holds something other than a tag record."""


@frozen
class TagLock:
    """The right to revalidate one tag, until `release` or its ttl."""

    key: str
    token: bytes


@define(eq=False)
class SharedTags:
    _commands: Commands
    _keys: KeySpace = KeySpace()
    lock_ttl: float = DEFAULT_LOCK_TTL
    keep_for: float | None = DEFAULT_KEEP_FOR

    async def get(
        self, registry: str, repository: str, tag: str, variant: str | None = None
    ) -> TagRecord | None:
        data = await self._commands.get(self._keys.tag_record(registry, repository, tag, variant))
        if data is None:
            return None
        try:
            return TagRecord.from_json(data)
        except (ValueError, TypeError, KeyError) as e:
            raise BadTagRecord(f"not a tag record: {data[:80]!r} ({e})") from None

    async def put(
        self,
        registry: str,
        repository: str,
        tag: str,
        record: TagRecord,
        variant: str | None = None,
    ) -> None:
        ttl = None if self.keep_for is None else _ms(self.keep_for)
        key = self._keys.tag_record(registry, repository, tag, variant)
        await self._commands.put(key, record.to_json(), ttl)

    async def revalidation_lock(
        self, registry: str, repository: str, tag: str, variant: str | None = None
    ) -> TagLock | None:
        """The lock if this node is to revalidate the tag now; None if
        another node is doing it (RedisUnavailable if Redis cannot say)."""
        key = self._keys.tag_revalidation(registry, repository, tag, variant)
        token = json.dumps({"token": secrets.token_hex(16)}).encode("utf-8")
        if await self._commands.set_if_absent(key, token, _ms(self.lock_ttl)):
            return TagLock(key, token)
        return None

    async def release(self, lock: TagLock) -> bool:
        """Give the lock back (once the new record is put); False if it had
        expired, or Redis is away (then it expires by itself)."""
        try:
            return await self._commands.delete_if_owned(lock.key, lock.token)
        except RedisUnavailable:
            return False


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
