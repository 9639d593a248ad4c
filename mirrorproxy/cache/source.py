"""What a follower reads: a file complete in the cache, or a running fill.

A follower (`follow.FileFollower`) streams one file descriptor to one client
and asks its `Source` how far it may go; it tells the source how far it has
sent, which is how a fill paces upstream and trims what it relays from
memory.
"""

from __future__ import annotations

from typing import Protocol

from attrs import define
from twisted.internet.defer import Deferred, succeed


class Source(Protocol):
    """What a follower needs to know about the file it reads."""

    def readable(self) -> int:
        """How many bytes from the start may be sent now."""

    def finished(self) -> bool:
        """Whether every byte is there and verified: the response may end."""

    def failed(self) -> bool:
        """Whether the content is bad or incomplete for good: abort."""

    def changed(self) -> Deferred[None]:
        """Fires at the next change of `readable`, `finished` or `failed`."""

    def in_file(self) -> int:
        """How many bytes from the start are in the file; the rest of
        `readable` comes from `read_relayed`."""

    def read_relayed(self, offset: int, size: int) -> bytes:
        """Up to `size` readable bytes from `offset`, past `in_file`: bytes
        relayed from memory because the file could not take them."""

    def follower_sent(self, follower: object, offset: int) -> None:
        """A follower has sent everything before `offset`."""

    def follower_left(self, follower: object) -> None:
        """A follower is over, whether it finished or not."""


@define(eq=False)
class CompleteFile:
    """A verified file already in the cache."""

    size: int

    def readable(self) -> int:
        return self.size

    def finished(self) -> bool:
        return True

    def failed(self) -> bool:
        return False

    def changed(self) -> Deferred[None]:
        return succeed(None)

    def in_file(self) -> int:
        return self.size

    def read_relayed(self, offset: int, size: int) -> bytes:
        return b""

    def follower_sent(self, follower: object, offset: int) -> None:
        pass

    def follower_left(self, follower: object) -> None:
        pass
