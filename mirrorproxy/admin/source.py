"""Where the admin command's content comes from: a cache directory or a
cluster's bucket, behind one interface (`ContentSource`), so `inventory`,
`contents`, `gc` and `verify` are written once.

A source lists what sits exactly where its store puts it (the storage
layout's `ContentFile` and `TagFile`, whose `path` is a file's path or an
object's key), reads small things back, streams content for hashing, and
removes things, each call blocking (the admin command has no reactor) and
tolerant of things vanishing under it, since mirrors may be running.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from attrs import frozen

from ..storage.layout import ContentFile, TagFile


class NotChecked(Exception):
    """Content could not be read for a reason that says nothing about it
    (a bucket that did not answer): it is neither good nor corrupt."""


@frozen
class Usage:
    """Files and bytes under a directory that holds no cache content (spool, quarantine)."""

    files: int = 0
    bytes: int = 0


class Reading(Protocol):
    """Content open for hashing: which copy it is, and its bytes a chunk at a time."""

    @property
    def identity(self) -> Hashable: ...

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the end; OSError if the content
        cannot be read, NotChecked if the source failed."""
        ...


class ContentSource(Protocol):
    @property
    def kind(self) -> str:
        """"cache" (a directory) or "bucket"."""
        ...

    @property
    def location(self) -> str:
        """Where it is: a path, an s3:// URL."""
        ...

    @property
    def unit(self) -> str:
        """What one stored thing is called in the output: "file" or "object"."""
        ...

    @property
    def keeps_all_tags(self) -> bool:
        """Whether every tag record of the cache is here (a directory's
        are; a bucket's are only those a store put there): if not, content
        of a registry without any tag record here cannot be judged
        unreferenced."""
        ...

    def registries(self) -> list[str]:
        """The upstreams the source holds anything of, by their namespace."""
        ...

    def content(self, registry: str, kind: str) -> Iterator[ContentFile]:
        """Blobs (`BLOB`) or manifests (`MANIFEST`, with any `TYPE` files)."""
        ...

    def tags(self, registry: str) -> Iterator[TagFile]: ...

    def read(self, path: str, limit: int) -> bytes | None:
        """At most `limit` bytes of a small thing; None if it is gone; OSError if unreadable."""
        ...

    def read_manifest(self, found: ContentFile, limit: int) -> tuple[bytes, str | None]:
        """A manifest's bytes (at most `limit`) and media type; OSError if they cannot be read."""
        ...

    def usage(self) -> dict[str, Usage]:
        """Space that holds no content, by name (a directory's spool and quarantine)."""
        ...

    # -- removal ---------------------------------------------------------------

    def last_change(self, found: ContentFile) -> float | None:
        """When it was last written or used, asked again now; None if it is gone."""
        ...

    def remove(self, found: ContentFile, dry_run: bool) -> list[ContentFile]:
        """Remove it and what goes with it (a manifest's type file); what
        went, with the sizes they had, or nothing if it was gone already.
        In a dry run nothing is removed, and what would go is said."""
        ...

    def remove_tag(self, path: str, dry_run: bool) -> int | None:
        """Remove a tag record; its size, or None if it was gone already."""
        ...

    def stamp_changed(self) -> None:
        """Tell running mirrors that things were removed behind their backs."""
        ...

    # -- verify ----------------------------------------------------------------

    def open(self, found: ContentFile) -> AbstractContextManager[Reading | None]:
        """Its bytes for hashing; None if it is gone; OSError if it cannot
        be opened, NotChecked if the source failed."""
        ...

    def identity(self, path: str) -> Hashable | None:
        """Which copy is at `path` now; None if none can be told."""
        ...

    def set_aside(self, found: ContentFile, identity: Hashable | None) -> str | None:
        """Take corrupt content out of the mirrors' sight, if `path` still
        holds the copy judged (any copy when `identity` is None); what was
        done ("moved to ...", "deleted ..."), or None if it was left."""
        ...

    def set_aside_tag(self, registry: str, path: str) -> str | None:
        """The same for an unreadable tag record."""
        ...
