"""What the manifest cache holds in memory: bodies by digest, tag records.

A manifest by digest never changes, so hot ones are answered from memory
within a byte budget; tag records are kept too, so a tag hit within its TTL
touches no disk.  Both are forgotten at once when an admin command removes
files behind the mirror's back (`forget`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

from attrs import define, field

from ..registry.names import Digest
from ..storage.values import StoredManifest, TagRecord

# Manifest bodies kept in memory.
MEMORY_BUDGET = 32 * 1024 * 1024
# Tag records kept in memory.
RECORDS_KEPT = 100_000


@define(eq=False)
class HeldManifests:
    _bodies: OrderedDict[Digest, StoredManifest] = field(factory=OrderedDict)
    _bodies_size: int = 0
    _records: OrderedDict[Hashable, TagRecord] = field(factory=OrderedDict)

    def body(self, digest: Digest) -> StoredManifest | None:
        stored = self._bodies.get(digest)
        if stored is not None:
            self._bodies.move_to_end(digest)
        return stored

    def keep_body(self, digest: Digest, stored: StoredManifest) -> None:
        if digest in self._bodies:
            return
        self._bodies[digest] = stored
        self._bodies_size += len(stored.body)
        while self._bodies_size > MEMORY_BUDGET:
            _, old = self._bodies.popitem(last=False)
            self._bodies_size -= len(old.body)

    def record(self, key: Hashable) -> TagRecord | None:
        record = self._records.get(key)
        if record is not None:
            self._records.move_to_end(key)
        return record

    def keep_record(self, key: Hashable, record: TagRecord) -> None:
        self._records[key] = record
        self._records.move_to_end(key)
        if len(self._records) > RECORDS_KEPT:
            self._records.popitem(last=False)

    def holds_record(self, key: Hashable) -> bool:
        return key in self._records

    def forget(self) -> None:
        self._bodies.clear()
        self._bodies_size = 0
        self._records.clear()
