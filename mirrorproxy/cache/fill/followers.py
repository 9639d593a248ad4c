"""How far each follower of a fill has sent, and what that asks of upstream.

The fastest follower paces upstream: a fill runs at most LEAD_HIGH bytes
ahead of it, so upstream bandwidth (often one shared, slow link) goes to the
clients that can take it, not to racing ahead for one that reads slowly.  A
fill with no follower left runs at full speed.  The slowest follower is how
far a relayed blob's tail may be trimmed.
"""

from __future__ import annotations

from attrs import define, field

# Wait once this far ahead of the fastest follower, until it is within LOW.
LEAD_HIGH = 16 * 1024 * 1024
LEAD_LOW = 8 * 1024 * 1024


@define(eq=False)
class Followers:
    """Each follower's offset: everything before it has been sent."""

    _offsets: dict[int, int] = field(factory=dict)

    def at(self, follower: object, offset: int) -> None:
        self._offsets[id(follower)] = offset

    def left(self, follower: object) -> None:
        self._offsets.pop(id(follower), None)

    def __len__(self) -> int:
        return len(self._offsets)

    def offsets(self) -> list[int]:
        return list(self._offsets.values())

    def slowest(self, default: int) -> int:
        """The slowest follower's offset; `default` if there is none."""
        return min(self._offsets.values(), default=default)

    def too_far_behind(self, received: int) -> bool:
        """Whether every follower is LEAD_HIGH or more behind the `received`
        bytes: upstream must wait for them."""
        return bool(self._offsets) and received - max(self._offsets.values()) >= LEAD_HIGH

    def close_behind(self, received: int) -> bool:
        """Whether the fastest follower is within LEAD_LOW of the `received`
        bytes (or there is none): upstream may go on."""
        return not self._offsets or received - max(self._offsets.values()) < LEAD_LOW
