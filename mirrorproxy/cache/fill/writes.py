"""The bytes a fill holds in memory on their way to the spool file.

Chunks from upstream wait here until the batch before them is written; then
they all go to the thread pool as the next batch, one batch at a time, in
order.  What waits plus what is being written is what the fill holds, and
what decides when upstream must pause.
"""

from __future__ import annotations

from attrs import define, field

# Pause upstream when this much is waiting to be written or being written;
# resume at LOW or below.  With one socket read (body.UPSTREAM_READ) on top,
# that is the most a fill holds in memory.
QUEUE_HIGH = 2 * 1024 * 1024
QUEUE_LOW = 512 * 1024


@define(eq=False)
class WriteQueue:
    """Chunks waiting to be written, and the size of the batch being written."""

    _waiting: list[bytes] = field(factory=list)
    _queued: int = 0  # bytes in `_waiting`
    _being_written: int = 0  # bytes of the batch being written
    writing: bool = False

    def add(self, data: bytes) -> None:
        self._waiting.append(data)
        self._queued += len(data)

    def take(self) -> list[bytes] | None:
        """Everything waiting, as the next batch to write; None while a
        batch is being written or nothing waits."""
        if self.writing or not self._waiting:
            return None
        batch, self._waiting = self._waiting, []
        self._being_written, self._queued = self._queued, 0
        self.writing = True
        return batch

    def done(self) -> int:
        """The batch being written is over (written or not); its size."""
        size, self._being_written = self._being_written, 0
        self.writing = False
        return size

    def waiting(self) -> list[bytes]:
        """The chunks behind the batch being written."""
        return self._waiting

    def drop(self) -> None:
        """Forget what waits: it will never be written."""
        self._waiting = []
        self._queued = 0

    @property
    def held(self) -> int:
        """Bytes waiting or being written."""
        return self._queued + self._being_written

    @property
    def idle(self) -> bool:
        """Nothing being written, nothing waiting."""
        return not self.writing and not self._waiting

    def full(self) -> bool:
        """Upstream must pause: the disk is not keeping up."""
        return self._queued + self._being_written >= QUEUE_HIGH

    def drained(self) -> bool:
        """Upstream may go on, as far as the disk is concerned."""
        return self._queued + self._being_written <= QUEUE_LOW
