"""What a node does with the cluster's events (Redis pub/sub): a purge or an
admin command's removals anywhere are acted on everywhere.

- `Purge`: the repository's (or tag's) records go from this node's local
  tier, and every cache forgets what it holds in memory, so the next pull
  asks upstream;
- `Evict`: a blob removed from the bucket goes from the local tier too;
- `CacheStampChanged`: forget what is held in memory, as after a local
  admin command.

Messages sent while a node was cut off from Redis are lost (pub/sub keeps
nothing): such a node notices the bucket's cache stamp instead.
"""

from __future__ import annotations

import os
import shutil
from typing import Iterable

from attrs import define
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ...cluster.events import Evict, Purge, Received
from ...common.runner import Runner
from ..registrycache import RegistryCache
from .store import TieredStore

log = Logger()


@define(eq=False)
class EventHandler:
    caches: list[RegistryCache]
    store: TieredStore
    _run: Runner

    def __call__(self, received: Received) -> None:
        Deferred.fromCoroutine(self._act(received)).addErrback(
            lambda f: log.failure("cluster event {event} not acted on", f, event=received.event)
        )

    async def _act(self, received: Received) -> None:
        event = received.event
        if isinstance(event, Purge):
            layout = self.store.local.layout
            if event.tag is None:
                paths = [os.path.join(layout.repositories_dir(event.registry), event.repository)]
            else:
                tags = os.path.dirname(layout.tag_path(event.registry, event.repository, event.tag))
                paths = [os.path.join(tags, event.tag)]
            await self._run(_remove_tag_records, paths, event.tag)
        elif isinstance(event, Evict):
            await self.store.local.remove_blob(event.registry, event.digest)
        for cache in self.caches:
            cache.manifests.forget()
        log.info("cluster event from {sender}: {event} acted on", sender=received.sender, event=event)


def _remove_tag_records(paths: Iterable[str], tag: str | None) -> None:
    """A repository's records (a directory), or a tag's and its variants'."""
    for path in paths:
        if tag is None:
            shutil.rmtree(path, ignore_errors=True)
            continue
        directory, name = os.path.split(path)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for found in names:
            if found == name or found.startswith(name + "@"):
                try:
                    os.unlink(os.path.join(directory, found))
                except FileNotFoundError:
                    pass
