"""Remembering, for a short while, that upstream has no such name or tag.

A client (or a CI job retrying) that asks for a missing tag again and again
would otherwise cost one upstream request each time, against the pull limit
like any other.  A 404 is remembered per (repository, reference) for the
negative TTL; a 404 that says the whole repository is unknown
(``NAME_UNKNOWN``) answers for every reference in it.  The same error goes
back to the client, with the same code and message.
"""

from __future__ import annotations

from collections import OrderedDict

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

from ..upstream.errors import UpstreamNotFound

DEFAULT_NEGATIVE_TTL = 30.0
# Enough for any site's typos; the oldest are dropped first.
MAX_ENTRIES = 10_000
_WHOLE_REPOSITORY = ""


@define(eq=False)
class NotFoundCache:
    _clock: IReactorTime
    _ttl: float = DEFAULT_NEGATIVE_TTL
    _entries: OrderedDict[tuple[str, str], tuple[float, UpstreamNotFound]] = field(factory=OrderedDict)
    answered: int = 0

    def check(self, repository: str, reference: str) -> None:
        """Raise the remembered 404 for this reference or its repository."""
        for key in ((repository, _WHOLE_REPOSITORY), (repository, reference)):
            entry = self._entries.get(key)
            if entry is None:
                continue
            until, error = entry
            if self._clock.seconds() < until:
                self.answered += 1
                raise UpstreamNotFound(error.code, error.message)
            del self._entries[key]

    def remember(self, repository: str, reference: str, error: UpstreamNotFound) -> None:
        if self._ttl <= 0:
            return
        whole = error.code == "NAME_UNKNOWN"
        key = (repository, _WHOLE_REPOSITORY if whole else reference)
        self._entries[key] = (self._clock.seconds() + self._ttl, error)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def forget(self) -> None:
        self._entries.clear()
