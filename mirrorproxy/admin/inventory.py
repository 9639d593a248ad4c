"""What a cache directory holds, read from its files: a snapshot for the admin command.

It owns the walk of the layout `store` lays down (registries, blobs,
manifests and their ``.type`` files, tag records) and the reachability
question: which manifests and blobs a set of tags keeps alive, following
indexes to their child manifests and manifests to their config and layers.

Paths come from `FilesystemStore`'s own path functions; every file found is
checked to sit exactly where the store would put it, so a stray file is never
mistaken for cache content.  The walk is synchronous (the admin command has no
reactor) and tolerates files appearing and disappearing under it, since the
service may be running.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from attrs import define, field, frozen
from twisted.internet.defer import maybeDeferred

from ..registry.descriptors import (
    MAX_MANIFEST_SIZE,
    ManifestUnreadable,
    References,
    references,
)
from ..registry.names import (
    Digest,
    NameInvalid,
    TagInvalid,
    docker_hub_name,
    parse_name,
    parse_tag,
)
from ..storage.filesystem import FilesystemStore, TagRecord
from ..upstream.settings import DOCKER_HUB_NAMESPACE

BLOB, MANIFEST, TAG = "blob", "manifest", "tag"
SPOOL, QUARANTINE = "spool", "quarantine"
TYPE_SUFFIX = ".type"
# Any digest will do to ask the store where content of its kind lives.
_PROBE = Digest("0" * 64)
_PROBE_REPOSITORY, _PROBE_TAG = "probe", "probe"


def open_store(root: str) -> FilesystemStore:
    """The store, for its layout: the admin command does its own (blocking) I/O."""
    return FilesystemStore(root, maybeDeferred)


@frozen
class ContentFile:
    """A blob or manifest in the cache, as found on disk."""

    registry: str
    kind: str
    digest: Digest
    path: str
    size: int
    # mtime: when it was written or, for blobs, last served (eviction
    # touches them), so an old one is one nobody has needed lately.
    changed: float


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
    # .type files whose manifest is absent: a crash between the two writes.
    orphan_types: list[ContentFile]
    tags: list[TagEntry]
    _references: dict[Digest, References | ManifestUnreadable] = field(factory=dict, init=False)

    def references(self, digest: Digest) -> References | ManifestUnreadable | None:
        """A cached manifest's references (read once); None if not cached."""
        found = self.manifests.get(digest)
        if found is None:
            return None
        if digest not in self._references:
            self._references[digest] = _read_references(found.path)
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
    store = open_store(root)
    names = registry_names(root)
    if only_registry is not None:
        if only_registry not in names:
            known = ", ".join(names) or "none"
            raise UnknownRegistry(f"no registry {only_registry!r} in {root} (it has: {known})")
        names = [only_registry]
    elif configured is not None:
        names = [name for name in names if name in configured]
    return Inventory(
        root,
        [scan_registry(store, name) for name in names],
        _usage(os.path.join(root, SPOOL)),
        _usage(os.path.join(root, QUARANTINE)),
    )


def registry_names(root: str) -> list[str]:
    """The upstreams the cache holds content of, by their directory name."""
    store = open_store(root)
    names = []
    for entry in _scandir(root):
        if entry.name in (SPOOL, QUARANTINE) or not entry.is_dir(follow_symlinks=False):
            continue
        # A registry's directory is the one holding what the store lays out.
        if any(os.path.isdir(d) for d in _layout_dirs(store, entry.name)):
            names.append(entry.name)
    return sorted(names)


def scan_registry(store: FilesystemStore, registry: str) -> RegistryContent:
    blobs = dict(_content(store, registry, BLOB))
    manifests: dict[Digest, ContentFile] = {}
    types: dict[Digest, ContentFile] = {}
    for digest, found in _content(store, registry, MANIFEST, with_types=True):
        if found.path.endswith(TYPE_SUFFIX):
            types[digest] = found
        else:
            manifests[digest] = found
    orphan_types = [t for d, t in sorted(types.items(), key=lambda i: i[0].hex) if d not in manifests]
    return RegistryContent(registry, blobs, manifests, orphan_types, list(_tags(store, registry)))


# -- the walk ---------------------------------------------------------------


def _layout_dirs(store: FilesystemStore, registry: str) -> tuple[str, str, str]:
    """Where blobs, manifests and repositories of `registry` live, as the store says."""
    return (
        _shard_parent(store.blob_path(registry, _PROBE)),
        _shard_parent(store.manifest_path(registry, _PROBE)),
        _repositories_dir(store, registry),
    )


def _shard_parent(path: str) -> str:
    # <kind>/sha256/<ab>/<hex> -> <kind>/sha256
    return os.path.dirname(os.path.dirname(path))


def _repositories_dir(store: FilesystemStore, registry: str) -> str:
    probe = store.tag_path(registry, _PROBE_REPOSITORY, _PROBE_TAG)
    # <repositories>/<name>/<tags dir>/<tag>, for a one-component name.
    return os.path.dirname(os.path.dirname(os.path.dirname(probe)))


def _tags_dirname(store: FilesystemStore, registry: str) -> str:
    return os.path.basename(os.path.dirname(store.tag_path(registry, _PROBE_REPOSITORY, _PROBE_TAG)))


def _content(
    store: FilesystemStore, registry: str, kind: str, with_types: bool = False
) -> Iterator[tuple[Digest, ContentFile]]:
    path_of = store.blob_path if kind == BLOB else store.manifest_path
    top = _shard_parent(path_of(registry, _PROBE))
    for shard in _scandir(top):
        for entry in _scandir(shard.path):
            name = entry.name
            is_type = with_types and name.endswith(TYPE_SUFFIX)
            digest = _digest_named(name[: -len(TYPE_SUFFIX)] if is_type else name)
            # Only what sits exactly where the store puts it is content.
            if digest is None or path_of(registry, digest) + (TYPE_SUFFIX if is_type else "") != entry.path:
                continue
            found = _stat_file(entry)
            if found is not None:
                size, changed = found
                yield digest, ContentFile(registry, kind, digest, entry.path, size, changed)


def _digest_named(name: str) -> Digest | None:
    if len(name) != 64 or not all(c in "0123456789abcdef" for c in name):
        return None
    return Digest(name)


def _tags(store: FilesystemStore, registry: str) -> Iterator[TagEntry]:
    top = _repositories_dir(store, registry)
    tags_dirname = _tags_dirname(store, registry)
    for directory, subdirectories, files in os.walk(top):
        if os.path.basename(directory) != tags_dirname:
            continue
        subdirectories.clear()
        repository = os.path.relpath(os.path.dirname(directory), top).replace(os.sep, "/")
        for name in sorted(files):
            path = os.path.join(directory, name)
            tag, _, variant = name.partition("@")
            try:
                parse_name(repository)
                parse_tag(tag)
            except (NameInvalid, TagInvalid):
                continue
            if store.tag_path(registry, repository, tag, variant or None) != path:
                continue
            entry = read_tag_entry(registry, repository, tag, path, variant or None)
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


def _read_references(path: str) -> References | ManifestUnreadable:
    try:
        with open(path, "rb") as f:
            body = f.read(MAX_MANIFEST_SIZE + 1)
    except OSError as e:
        return ManifestUnreadable(f"cannot read: {e.strerror or e}")
    try:
        return references(body, _media_type(path))
    except ManifestUnreadable as e:
        return e


def _media_type(path: str) -> str | None:
    try:
        with open(path + TYPE_SUFFIX, "rb") as f:
            return f.read(1024).decode("utf-8", "replace").strip()
    except OSError:
        return None


def _stat_file(entry: os.DirEntry[str]) -> tuple[int, float] | None:
    try:
        if not entry.is_file(follow_symlinks=False):
            return None
        info = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    return info.st_size, info.st_mtime


def _scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _usage(path: str) -> Usage:
    files = total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:
                continue
            files += 1
    return Usage(files, total)
