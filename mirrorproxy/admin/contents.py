"""What `ls` shows: each tag's digest and size, each repository's total.

A tag's size is what the cache holds for it: its manifest (or index), the
child manifests it has cached, and their configs and layers.  Totals count
every file once, however many tags or repositories share it.
"""

from __future__ import annotations

from attrs import frozen

from ..registry.names import Digest
from .inventory import Inventory, RegistryContent, TagEntry


@frozen
class TagListing:
    tag: str
    digest: Digest | None
    media_type: str | None
    # None: the record names a manifest the cache does not hold (a HEAD
    # taught the mirror the tag, and nobody has pulled it since).
    size: int | None
    learnt: float | None
    problem: str | None = None


@frozen
class RepositoryListing:
    registry: str
    repository: str
    tags: tuple[TagListing, ...]
    size: int


@frozen
class Listing:
    repositories: tuple[RepositoryListing, ...]
    # All listed content, each file counted once per registry.
    size: int

    @property
    def tag_count(self) -> int:
        return sum(len(r.tags) for r in self.repositories)


class UnknownRepository(LookupError):
    """`ls REPOSITORY` names a repository the cache has no tags of."""


def list_cache(inventory: Inventory, repository: str | None = None) -> Listing:
    repositories: list[RepositoryListing] = []
    total = 0
    for registry in inventory.registries:
        wanted = registry.canonical(repository) if repository is not None else None
        by_repository: dict[str, list[TagEntry]] = {}
        for entry in registry.tags:
            if entry.variant is not None:
                continue  # a narrower client's answer, not a tag of its own
            if wanted is None or entry.repository == wanted:
                by_repository.setdefault(entry.repository, []).append(entry)
        for name, entries in sorted(by_repository.items()):
            repositories.append(_repository(registry, name, entries))
        listed = [t for entries in by_repository.values() for t in entries]
        total += registry.size_of(registry.closure(registry.tag_roots(listed)))
    if repository is not None and not repositories:
        hint = inventory.full_name_hint(repository)
        raise UnknownRepository(f"no tags of {repository!r} in the cache{hint}")
    return Listing(tuple(repositories), total)


def _repository(registry: RegistryContent, name: str, entries: list[TagEntry]) -> RepositoryListing:
    tags = tuple(_tag(registry, e) for e in sorted(entries, key=lambda e: e.tag))
    size = registry.size_of(registry.closure(registry.tag_roots(entries)))
    return RepositoryListing(registry.name, name, tags, size)


def _tag(registry: RegistryContent, entry: TagEntry) -> TagListing:
    record = entry.record
    if record is None:
        return TagListing(entry.tag, None, None, None, None, entry.problem)
    size = None
    if record.digest in registry.manifests:
        size = registry.size_of(registry.closure([record.digest]))
    return TagListing(entry.tag, record.digest, record.media_type, size, record.learnt)
