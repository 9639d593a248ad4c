"""What a cache directory holds, read from its files: a snapshot for the admin command.

It owns the reachability question: which manifests and blobs a set of tags
keeps alive, following indexes to their child manifests and manifests to
their config and layers.  Where things are, and which files are content at
all, is the storage layout's (`storage.layout`): its walk yields only files
that sit exactly where the store puts them, so a stray file is never
mistaken for cache content.  The walk is synchronous (the admin command has
no reactor) and tolerates files appearing and disappearing under it, since
the service may be running.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from attrs import define, field, frozen

from ..registry.descriptors import (
    MAX_MANIFEST_SIZE,
    ManifestUnreadable,
    References,
    references,
)
from ..registry.names import Digest, docker_hub_name
from ..storage.layout import BLOB, MANIFEST, TYPE, ContentFile, Layout, type_path, usage
from ..storage.values import TagRecord
from ..upstream.settings import DOCKER_HUB_NAMESPACE

TAG = "tag"


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
class Usage:
    """Files and bytes under a directory that holds no cache content (spool, quarantine)."""

    files: int = 0
    bytes: int = 0


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
            self._references[digest] = _read_references(found.path, type_path(found.path))
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
    root: str
    registries: list[RegistryContent]
    spool: Usage
    quarantine: Usage

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

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
    root: str, only_registry: str | None = None, configured: Sequence[str] | None = None
) -> Inventory:
    """Read the cache at `root` (which must exist): every registry it holds,
    or `only_registry` (which must be there), or those of `configured` (the
    directory names of a service's registries) it holds."""
    layout = Layout(root)
    names = layout.registries()
    if only_registry is not None:
        if only_registry not in names:
            known = ", ".join(names) or "none"
            raise UnknownRegistry(f"no registry {only_registry!r} in {root} (it has: {known})")
        names = [only_registry]
    elif configured is not None:
        names = [name for name in names if name in configured]
    return Inventory(
        root,
        [scan_registry(layout, name) for name in names],
        Usage(*usage(layout.spool_dir)),
        Usage(*usage(layout.quarantine_dir)),
    )


def scan_registry(layout: Layout, registry: str) -> RegistryContent:
    blobs = {f.digest: f for f in layout.content(registry, BLOB)}
    manifests: dict[Digest, ContentFile] = {}
    types: dict[Digest, ContentFile] = {}
    for found in layout.content(registry, MANIFEST):
        (types if found.kind == TYPE else manifests)[found.digest] = found
    orphan_types = [t for d, t in sorted(types.items(), key=lambda i: i[0].hex) if d not in manifests]
    return RegistryContent(registry, blobs, manifests, orphan_types, list(_tags(layout, registry)))


def _tags(layout: Layout, registry: str) -> Iterator[TagEntry]:
    for found in layout.tags(registry):
        entry = read_tag_entry(registry, found.repository, found.tag, found.path, found.variant)
        if entry is not None:
            yield entry


def read_tag_entry(
    registry: str, repository: str, tag: str, path: str, variant: str | None = None
) -> TagEntry | None:
    """A tag record file read; None if it vanished meanwhile."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_SIZE)
    except FileNotFoundError:
        return None
    except OSError as e:
        return TagEntry(registry, repository, tag, path, None, f"unreadable: {e.strerror or e}", variant)
    try:
        return TagEntry(registry, repository, tag, path, TagRecord.from_json(data), variant=variant)
    except (ValueError, KeyError, TypeError) as e:
        return TagEntry(registry, repository, tag, path, None, f"not a tag record: {e}", variant)


def _read_references(path: str, media_type_path: str) -> References | ManifestUnreadable:
    try:
        with open(path, "rb") as f:
            body = f.read(MAX_MANIFEST_SIZE + 1)
    except OSError as e:
        return ManifestUnreadable(f"cannot read: {e.strerror or e}")
    try:
        return references(body, _media_type(media_type_path))
    except ManifestUnreadable as e:
        return e


def _media_type(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(1024).decode("utf-8", "replace").strip()
    except OSError:
        return None
