"""A cache directory as the admin command's `ContentSource`, through the
filesystem store's layout (`storage.layout`).

Removal is ``unlink``: a client already reading a file keeps reading it.
Corrupt files go to ``<cache>/quarantine/<registry>/<the same relative
path>``: out of the service's sight, yet kept for a person to look at.  The
move is one rename inside the cache directory, so it is atomic, and is made
only if the path still holds the very file that was judged (its device and
inode): the service may have put a fresh copy there meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

import attrs
from attrs import frozen

from ..storage.layout import MANIFEST, TYPE, ContentFile, Layout, TagFile, type_path, usage
from .source import Reading, Usage


@frozen
class _FileReading:
    _file: object
    identity: Hashable

    def read(self, size: int) -> bytes:
        data: bytes = self._file.read(size)  # type: ignore[attr-defined]
        return data


@frozen
class DirectorySource:
    root: str
    kind = "cache"
    unit = "file"
    keeps_all_tags = True

    @property
    def location(self) -> str:
        return self.root

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def registries(self) -> list[str]:
        return self.layout.registries()

    def content(self, registry: str, kind: str) -> Iterator[ContentFile]:
        return self.layout.content(registry, kind)

    def tags(self, registry: str) -> Iterator[TagFile]:
        return self.layout.tags(registry)

    def read(self, path: str, limit: int) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read(limit)
        except FileNotFoundError:
            return None

    def read_manifest(self, found: ContentFile, limit: int) -> tuple[bytes, str | None]:
        with open(found.path, "rb") as f:
            body = f.read(limit)
        return body, _media_type(type_path(found.path))

    def usage(self) -> dict[str, Usage]:
        layout = self.layout
        return {"spool": Usage(*usage(layout.spool_dir)), "quarantine": Usage(*usage(layout.quarantine_dir))}

    # -- removal ---------------------------------------------------------------

    def last_change(self, found: ContentFile) -> float | None:
        try:
            return os.lstat(found.path).st_mtime
        except FileNotFoundError:
            return None

    def remove(self, found: ContentFile, dry_run: bool) -> list[ContentFile]:
        size = _remove(found.path, dry_run)
        if size is None:
            return []
        removed = [attrs.evolve(found, size=size)]
        if found.kind == MANIFEST:
            media_type = type_path(found.path)
            type_size = _remove(media_type, dry_run)
            if type_size is not None:
                removed.append(attrs.evolve(found, kind=TYPE, path=media_type, size=type_size))
        return removed

    def remove_tag(self, path: str, dry_run: bool) -> int | None:
        return _remove(path, dry_run)

    def stamp_changed(self) -> None:
        self.layout.stamp_changed()

    # -- verify ----------------------------------------------------------------

    @contextmanager
    def open(self, found: ContentFile) -> Iterator[Reading | None]:
        try:
            f = open(found.path, "rb", buffering=0)
        except FileNotFoundError:
            yield None
            return
        with f:
            info = os.fstat(f.fileno())
            yield _FileReading(f, (info.st_dev, info.st_ino))

    def identity(self, path: str) -> Hashable | None:
        try:
            info = os.lstat(path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def set_aside(self, found: ContentFile, identity: Hashable | None) -> str | None:
        target = self.layout.quarantine_path(found.registry, found.path)
        moved = self._move_if_same(found.path, target, identity)
        if moved is None:
            return None
        if found.kind == MANIFEST:
            # The type follows its manifest; alone it would be harmless, but a
            # person looking at the quarantine wants both.
            self._move_if_same(type_path(found.path), type_path(moved), None)
        return f"moved to {moved}"

    def set_aside_tag(self, registry: str, path: str) -> str | None:
        target = self.layout.quarantine_path(registry, path)
        moved = self._move_if_same(path, target, self.identity(path))
        return None if moved is None else f"moved to {moved}"

    def _move_if_same(self, path: str, target: str, identity: Hashable | None) -> str | None:
        """Rename `path` into the quarantine if it still is the file judged.

        No fsync: a rename lost in a crash leaves the corrupt file where it
        was, and the next verify finds it again.
        """
        if identity is not None and self.identity(path) != identity:
            return None
        os.makedirs(os.path.dirname(target), exist_ok=True)
        target = _unused(target)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        return target


def _remove(path: str, dry_run: bool) -> int | None:
    """Unlink `path`; its size, or None if it was already gone."""
    try:
        size = os.lstat(path).st_size
        if not dry_run:
            os.unlink(path)
    except FileNotFoundError:
        return None
    return size


def _unused(path: str) -> str:
    """`path`, or `path.N` if an earlier verify already quarantined that name."""
    candidate, number = path, 0
    while os.path.lexists(candidate) or os.path.lexists(type_path(candidate)):
        number += 1
        candidate = f"{path}.{number}"
    return candidate


def _media_type(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(1024).decode("utf-8", "replace").strip()
    except OSError:
        return None
