"""Tag lists: passed through from upstream, remembered for the tag TTL."""

from __future__ import annotations

from collections import OrderedDict

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ..common.coalescer import Coalescer
from ..upstream.answers import TagsPage
from ..upstream.client import UpstreamClient
from ..upstream.errors import UpstreamNotFound
from .negative import NotFoundCache

# Enough for every repository a site pulls from; old pages fall off first.
MAX_PAGES = 2048
# A tag list's reference in the negative cache: no tag has a "/".
_LIST = "/tags/list"


@define(eq=False)
class TagListCache:
    _upstream: UpstreamClient
    _clock: IReactorTime
    _ttl: float
    _missing: NotFoundCache
    _pages: OrderedDict[tuple[str, str], tuple[float, TagsPage]] = field(factory=OrderedDict)
    _fetches: Coalescer = field(factory=Coalescer)

    async def get(self, repository: str, query: str) -> TagsPage:
        key = (repository, query)
        now = self._clock.seconds()
        cached = self._pages.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        self._missing.check(repository, _LIST)

        async def fetch() -> TagsPage:
            try:
                return await self._upstream.get_tags(repository, query)
            except UpstreamNotFound as e:
                self._missing.remember(repository, _LIST, e)
                raise

        page: TagsPage = await self._fetches.run(key, lambda: Deferred.fromCoroutine(fetch()))
        self._pages[key] = (self._clock.seconds(), page)
        self._pages.move_to_end(key)
        while len(self._pages) > MAX_PAGES:
            self._pages.popitem(last=False)
        return page
