"""What a cache holds, read from its source: a snapshot for the admin command.

It owns the reachability question: which manifests and blobs a set of tags
keeps alive, following indexes to their child manifests and manifests to
their config and layers.  Where things are, and which are content at all,
is the source's (`source`: a cache directory through `storage.layout`, or a
cluster's bucket): its walk yields only what sits exactly where the store
puts it, so a stray file is never mistaken for cache content.  The walk is
synchronous (the admin command has no reactor) and tolerates things
appearing and disappearing under it, since mirrors may be running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from typing import TypeVar

from attrs import define, field, frozen

from ..registry.descriptors import (
    MAX_MANIFEST_SIZE,
    ManifestUnreadable,
    References,
    references,
)
from ..registry.names import Digest, docker_hub_name
from ..storage.layout import BLOB, MANIFEST, TYPE, ContentFile
from ..storage.values import TagRecord
from ..upstream.settings import DOCKER_HUB_NAMESPACE
from .directorysource import DirectorySource
from .source import ContentSource, Usage

TAG = "tag"
T = TypeVar("T")


@frozen
class TagEntry:
    """A tag record file; `record` is None when it cannot be read.

    `variant` is set for the record of a narrower client's answer (one that
    takes no index, say), kept beside the tag's own: it keeps its manifest
    alive and goes with the tag, but is not listed as a tag of its own."""

    registry: str
    repository: str
    tag: str
    path: str
    record: TagRecord | None
    problem: str | None = None
    variant: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


@frozen
class Closure:
    """What some roots keep alive: cached manifests, referenced blobs, and
    manifests that could not be followed (with why)."""

    manifests: frozenset[Digest]
    blobs: frozenset[Digest]
    unreadable: tuple[tuple[Digest, str], ...] = ()


@define(eq=False)
class RegistryContent:
    """One upstream's part of the cache: ``<cache>/<registry>/``."""

    name: str
    _source: ContentSource
    blobs: dict[Digest, ContentFile]
    manifests: dict[Digest, ContentFile]
    # Type files whose manifest is absent: a crash between the two writes.
    orphan_types: list[ContentFile]
    tags: list[TagEntry]
    _references: dict[Digest, References | ManifestUnreadable] = field(factory=dict, init=False)

    def references(self, digest: Digest) -> References | ManifestUnreadable | None:
        """A cached manifest's references (read once); None if not cached."""
        found = self.manifests.get(digest)
        if found is None:
            return None
        if digest not in self._references:
            self._references[digest] = _read_references(self._source, found)
        return self._references[digest]

    def closure(self, roots: Iterable[Digest]) -> Closure:
        manifests: set[Digest] = set()
        blobs: set[Digest] = set()
        unreadable: dict[Digest, str] = {}
        pending = list(roots)
        while pending:
            digest = pending.pop()
            if digest in manifests or digest in unreadable:
                continue
            found = self.references(digest)
            if found is None:
                continue
            if isinstance(found, ManifestUnreadable):
                unreadable[digest] = str(found)
                continue
            manifests.add(digest)
            pending.extend(d.digest for d in found.manifests)
            blobs.update(d.digest for d in found.blobs)
        return Closure(frozenset(manifests), frozenset(blobs), tuple(sorted(unreadable.items(), key=str)))

    @property
    def is_docker_hub(self) -> bool:
        return self.name == DOCKER_HUB_NAMESPACE

    def canonical(self, repository: str) -> str:
        """A repository name as this registry's records hold it: Docker Hub's
        official images under ``library/``, so ``alpine`` finds them."""
        return docker_hub_name(repository) if self.is_docker_hub else repository

    def dangling(self, tags: Iterable[TagEntry]) -> list[tuple[TagEntry, TagRecord]]:
        """Those of `tags` whose record names a manifest this registry does not hold."""
        return [
            (t, t.record) for t in tags if t.record is not None and t.record.digest not in self.manifests
        ]

    def tag_roots(self, tags: Iterable[TagEntry]) -> list[Digest]:
        return [t.record.digest for t in tags if t.record is not None]

    def size_of(self, closure: Closure) -> int:
        """Bytes of the cached files in `closure`; each file counted once."""
        total = sum(self.manifests[d].size for d in closure.manifests)
        return total + sum(self.blobs[d].size for d in closure.blobs if d in self.blobs)

    def content(self) -> Iterator[ContentFile]:
        yield from self.manifests.values()
        yield from self.blobs.values()


@define(eq=False)
class Inventory:
    source: ContentSource
    registries: list[RegistryContent]
    # Space holding no content, by name (a directory's spool and quarantine).
    usage: dict[str, Usage]

    def full_name_hint(self, repository: str) -> str:
        """For a one-word name that found nothing: the registries other than
        Docker Hub holding ``library/NAME``, which the operator may have meant."""
        if "/" in repository:
            return ""
        full = f"library/{repository}"
        holders = [
            r.name
            for r in self.registries
            if not r.is_docker_hub and any(t.repository == full for t in r.tags)
        ]
        if not holders:
            return ""
        has = "has" if len(holders) == 1 else "have"
        return (
            f" ({', '.join(holders)} {has} {full}: only Docker Hub's one-word names mean library/, "
            "so give the full name)"
        )


class UnknownRegistry(LookupError):
    """``--registry`` names no registry in this cache."""


def scan(
    root: str | ContentSource,
    only_registry: str | None = None,
    configured: Sequence[str] | None = None,
    on_found: Callable[[int], None] = lambda n: None,
) -> Inventory:
    """Read the cache at `root` (a directory, which must exist, or a source):
    every registry it holds, or `only_registry` (which must be there), or
    those of `configured` (the namespaces of a service's registries) it
    holds.  `on_found` hears of each thing listed (a progress count)."""
    source = DirectorySource(root) if isinstance(root, str) else root
    names = source.registries()
    if only_registry is not None:
        if only_registry not in names:
            known = ", ".join(names) or "none"
            raise UnknownRegistry(
                f"no registry {only_registry!r} in {source.location} (it has: {known})"
            )
        names = [only_registry]
    elif configured is not None:
        names = [name for name in names if name in configured]
    return Inventory(
        source,
        [scan_registry(source, name, on_found) for name in names],
        source.usage(),
    )


def scan_registry(
    source: ContentSource, registry: str, on_found: Callable[[int], None] = lambda n: None
) -> RegistryContent:
    blobs = {f.digest: f for f in _counted(source.content(registry, BLOB), on_found)}
    manifests: dict[Digest, ContentFile] = {}
    types: dict[Digest, ContentFile] = {}
    for found in _counted(source.content(registry, MANIFEST), on_found):
        (types if found.kind == TYPE else manifests)[found.digest] = found
    orphan_types = [t for d, t in sorted(types.items(), key=lambda i: i[0].hex) if d not in manifests]
    tags = list(_counted(_tags(source, registry), on_found))
    return RegistryContent(registry, source, blobs, manifests, orphan_types, tags)


def _counted(found: Iterable[T], on_found: Callable[[int], None]) -> Iterator[T]:
    for item in found:
        on_found(1)
        yield item


def _tags(source: ContentSource, registry: str) -> Iterator[TagEntry]:
    for found in source.tags(registry):
        entry = read_tag_entry(source, registry, found.repository, found.tag, found.path, found.variant)
        if entry is not None:
            yield entry


def read_tag_entry(
    source: ContentSource,
    registry: str,
    repository: str,
    tag: str,
    path: str,
    variant: str | None = None,
) -> TagEntry | None:
    """A tag record read; None if it vanished meanwhile."""
    try:
        data = source.read(path, MAX_MANIFEST_SIZE)
    except OSError as e:
        return TagEntry(registry, repository, tag, path, None, f"unreadable: {e.strerror or e}", variant)
    if data is None:
        return None
    try:
        return TagEntry(registry, repository, tag, path, TagRecord.from_json(data), variant=variant)
    except (ValueError, KeyError, TypeError) as e:
        return TagEntry(registry, repository, tag, path, None, f"not a tag record: {e}", variant)


def _read_references(source: ContentSource, found: ContentFile) -> References | ManifestUnreadable:
    try:
        body, media_type = source.read_manifest(found, MAX_MANIFEST_SIZE + 1)
    except OSError as e:
        return ManifestUnreadable(f"cannot read: {e.strerror or e}")
    try:
        return references(body, media_type)
    except ManifestUnreadable as e:
        return e
