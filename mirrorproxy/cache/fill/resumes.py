"""Asking upstream for the rest of a blob after its connection ended early.

A body that stops (the connection dropped, or silent for too long) is asked
for again from the byte the fill reached, with a Range request, a few times
with pauses in between.  An upstream that ignores Range answers with the
whole body: what the fill already has is skipped.  A connection upstream
closed while the fill held it idle for slow followers is no failure: the
rest is asked for once they need it, without spending a try.
"""

from __future__ import annotations

from attrs import define

# The pauses (seconds) before each try; as many tries as pauses.
RESUME_BACKOFF = (0.5, 2.0, 5.0)


@define(eq=False)
class Resumer:
    tries: int = 0
    skip: int = 0  # leading bytes of upstream's answer the fill already has
    reconnect_when_needed: bool = False

    def next_delay(self, length_known: bool) -> float | None:
        """Seconds to wait before asking for the rest, or None: give up.

        Without a length there is no telling a whole body from part of one,
        so no asking for the rest.
        """
        if not length_known or self.tries >= len(RESUME_BACKOFF):
            return None
        delay = RESUME_BACKOFF[self.tries]
        self.tries += 1
        return delay

    def answered(self, status: int, offset: int) -> None:
        """Upstream answered a request for the rest from `offset`: a 206
        starts there, anything else from the first byte."""
        self.skip = 0 if status == 206 else offset

    def fresh(self, data: bytes) -> bytes:
        """What of `data` the fill does not have yet."""
        skipped = min(self.skip, len(data))
        self.skip -= skipped
        return data[skipped:]

    def held_connection_dropped(self) -> None:
        """Upstream closed the connection the fill held for slow followers."""
        self.reconnect_when_needed = True

    def reconnecting(self) -> None:
        """The followers need the rest now: it is being asked for."""
        self.reconnect_when_needed = False
