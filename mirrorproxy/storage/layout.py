"""Where the filesystem store keeps things, and the one walk that finds them.

Layout under the cache directory (``<registry>`` is the upstream's namespace,
e.g. ``docker.io``, so several upstreams can share one cache)::

    spool/                                   files being written; swept at start
    quarantine/<registry>/...                files `verify` found corrupt
    cache-stamp                              rewritten when files are removed
    <registry>/blobs/sha256/<ab>/<hex>       layers and configs, verified
    <registry>/manifests/sha256/<ab>/<hex>   manifests, exact bytes, verified
    <registry>/manifests/sha256/<ab>/<hex>.type   their media type
    <registry>/repositories/<name>/_tags/<tag>    JSON: digest, type, size, time
    <registry>/repositories/<name>/_tags/<tag>@<variant>   a narrower Accept's answer

A file is content only if it sits exactly where `Layout` would put it: a
stray file is never mistaken for a blob, counted, evicted or listed.  The walk
is synchronous (the store runs it in its thread pool; the admin command,
which has no reactor, runs it directly) and tolerates files appearing and
disappearing under it, since the service may be running.  Repository names
and tags are checked by `names` before they get here; their grammar cannot
climb out of the cache.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

from attrs import frozen

from ..registry.names import Digest, NameInvalid, TagInvalid, parse_name, parse_tag

SPOOL, QUARANTINE = "spool", "quarantine"
# Rewritten (a new random token) by whatever removes tag records or content
# behind a running mirror's back (`mirrorproxy purge`, `gc`, `verify`).  A
# mirror holds tag records and manifests in memory and reads this at most
# once a second: a change makes it forget them and count the cache again.
CACHE_STAMP = "cache-stamp"
TYPE_SUFFIX = ".type"
# What a content file is: a blob, a manifest, or a manifest's media type.
BLOB, MANIFEST, TYPE = "blob", "manifest", "type"
_KIND_DIRECTORIES = {BLOB: "blobs", MANIFEST: "manifests"}
_ALGORITHM = "sha256"
_REPOSITORIES, _TAGS = "repositories", "_tags"
# Joins a tag and the variant of its answer; ``@`` is in no tag, so no
# variant's record can collide with a tag's own.
_VARIANT = "@"


def type_path(manifest_path: str) -> str:
    """Where the media type of the manifest at `manifest_path` is kept: beside
    it, under the same name (in the cache, or in the quarantine)."""
    return manifest_path + TYPE_SUFFIX


@frozen
class ContentFile:
    """A blob, manifest or manifest's type file where the layout puts it."""

    registry: str
    kind: str
    digest: Digest
    path: str
    size: int
    # mtime: when it was written or, for blobs, last served (the store
    # touches them), so an old one is one nobody has needed lately.
    changed: float


@frozen
class TagFile:
    """A tag record's file; `variant` is set for a narrower Accept's answer."""

    repository: str
    tag: str
    variant: str | None
    path: str


@frozen
class Layout:
    root: str

    @property
    def spool_dir(self) -> str:
        return os.path.join(self.root, SPOOL)

    @property
    def quarantine_dir(self) -> str:
        return os.path.join(self.root, QUARANTINE)

    @property
    def stamp_path(self) -> str:
        return os.path.join(self.root, CACHE_STAMP)

    def content_dir(self, registry: str, kind: str) -> str:
        """Where blobs or manifests of `registry` live (above the shards)."""
        return os.path.join(self.root, registry, _KIND_DIRECTORIES[kind], _ALGORITHM)

    def content_path(self, registry: str, kind: str, digest: Digest) -> str:
        return os.path.join(self.content_dir(registry, kind), digest.hex[:2], digest.hex)

    def blob_path(self, registry: str, digest: Digest) -> str:
        return self.content_path(registry, BLOB, digest)

    def manifest_path(self, registry: str, digest: Digest) -> str:
        return self.content_path(registry, MANIFEST, digest)

    def repositories_dir(self, registry: str) -> str:
        return os.path.join(self.root, registry, _REPOSITORIES)

    def tag_path(self, registry: str, repository: str, tag: str, variant: str | None = None) -> str:
        """A tag's record; `variant` names the answer to a narrower Accept,
        kept beside it."""
        name = tag if variant is None else f"{tag}{_VARIANT}{variant}"
        return os.path.join(self.repositories_dir(registry), repository, _TAGS, name)

    def quarantine_path(self, registry: str, path: str) -> str:
        """Where a file of `registry` at `path` goes when it is found corrupt:
        the same path under ``quarantine/<registry>/``."""
        relative = os.path.relpath(path, os.path.join(self.root, registry))
        return os.path.join(self.quarantine_dir, registry, relative)

    def stamp_changed(self) -> None:
        """Tell running mirrors on this cache that files were removed."""
        os.makedirs(self.spool_dir, exist_ok=True)
        spool = os.path.join(self.spool_dir, f"stamp-{uuid.uuid4().hex}")
        with open(spool, "wb") as f:
            f.write(uuid.uuid4().hex.encode())
        os.replace(spool, self.stamp_path)

    # -- the walk ---------------------------------------------------------------

    def registries(self) -> list[str]:
        """The upstreams the cache holds content of, by their directory name."""
        names = []
        for entry in _scandir(self.root):
            if entry.name in (SPOOL, QUARANTINE) or not entry.is_dir(follow_symlinks=False):
                continue
            # A registry's directory is the one holding what the store lays out.
            if any(os.path.isdir(d) for d in self._registry_dirs(entry.name)):
                names.append(entry.name)
        return sorted(names)

    def _registry_dirs(self, registry: str) -> tuple[str, str, str]:
        return (
            self.content_dir(registry, BLOB),
            self.content_dir(registry, MANIFEST),
            self.repositories_dir(registry),
        )

    def content(self, registry: str, kind: str) -> Iterator[ContentFile]:
        """The blobs (`BLOB`) or the manifests and their types (`MANIFEST`)
        of `registry`, in the order of their paths."""
        with_types = kind == MANIFEST
        for shard in _scandir(self.content_dir(registry, kind)):
            for entry in _scandir(shard.path):
                name = entry.name
                is_type = with_types and name.endswith(TYPE_SUFFIX)
                digest = _digest_named(name[: -len(TYPE_SUFFIX)] if is_type else name)
                if digest is None:
                    continue
                path = self.content_path(registry, kind, digest)
                # Only what sits exactly where the store puts it is content.
                if (type_path(path) if is_type else path) != entry.path:
                    continue
                found = _stat_file(entry)
                if found is not None:
                    size, changed = found
                    yield ContentFile(registry, TYPE if is_type else kind, digest, entry.path, size, changed)

    def tags(self, registry: str) -> Iterator[TagFile]:
        """The tag records of `registry`, a repository's in the order of their names."""
        top = self.repositories_dir(registry)
        for directory, subdirectories, files in os.walk(top):
            if os.path.basename(directory) != _TAGS:
                continue
            subdirectories.clear()
            repository = os.path.relpath(os.path.dirname(directory), top).replace(os.sep, "/")
            for name in sorted(files):
                path = os.path.join(directory, name)
                found = tag_named(repository, name)
                if found is not None and self.tag_path(registry, repository, *found) == path:
                    yield TagFile(repository, *found, path)

    def measure(self) -> tuple[int, int]:
        """Bytes and count of the blobs and manifests of every registry."""
        total = entries = 0
        for registry in self.registries():
            for kind in (BLOB, MANIFEST):
                for found in self.content(registry, kind):
                    if found.kind != TYPE:
                        total += found.size
                        entries += 1
        return total, entries


def usage(directory: str) -> tuple[int, int]:
    """Files and bytes under `directory`, whatever they are."""
    files = total = 0
    for parent, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except FileNotFoundError:
                continue
            files += 1
    return files, total


def tag_named(repository: str, name: str) -> tuple[str, str | None] | None:
    """The tag and variant a tag record named `name` of `repository` is
    for; None if the names are not a repository's and a tag's (wherever
    records are kept: a directory, a bucket)."""
    tag, _, variant = name.partition(_VARIANT)
    try:
        parse_name(repository)
        parse_tag(tag)
    except (NameInvalid, TagInvalid):
        return None
    return tag, variant or None


def _digest_named(name: str) -> Digest | None:
    if len(name) != 64 or not all(c in "0123456789abcdef" for c in name):
        return None
    return Digest(name)


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
