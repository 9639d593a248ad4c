"""The bytes of a relayed blob that the spool file could not take.

When the cache cannot be written (disk full, read-only), a fill relays the
blob to its followers from memory instead: every byte past what reached the
file waits here until the slowest follower has sent it.
"""

from __future__ import annotations

from collections import deque

from attrs import define, field

# At most this much is held for the followers (upstream pauses), until the
# slowest of them is within LOW of the newest byte.
TAIL_HIGH = 8 * 1024 * 1024
TAIL_LOW = 2 * 1024 * 1024


@define(eq=False)
class RelayTail:
    """Bytes from offset `start` on, in the chunks they arrived in."""

    start: int = 0
    _chunks: deque[bytes] = field(factory=deque)
    _size: int = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._size = sum(len(c) for c in self._chunks)

    @property
    def end(self) -> int:
        """The offset after the newest byte."""
        return self.start + self._size

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`, never past a chunk's end; none
        if `offset` is not in the tail."""
        position = self.start
        for chunk in self._chunks:
            end = position + len(chunk)
            if offset < end:
                start = max(offset - position, 0)
                return chunk[start : start + size] if offset >= position else b""
            position = end
        return b""

    def trim(self, floor: int) -> None:
        """Drop the chunks wholly before `floor`: every follower has sent them."""
        while self._chunks and self.start + len(self._chunks[0]) <= floor:
            chunk = self._chunks.popleft()
            self.start += len(chunk)
            self._size -= len(chunk)

    def full(self) -> bool:
        """Upstream must pause: the slowest follower is too far behind."""
        return self._size >= TAIL_HIGH

    def drained(self) -> bool:
        """Upstream may go on, as far as the relayed bytes are concerned."""
        return self._size <= TAIL_LOW

