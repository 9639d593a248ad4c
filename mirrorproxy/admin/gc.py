"""Removing what no tag needs: garbage collection, and purging tags.

The roots are the tag records.  A manifest or blob is live if a tag reaches
it: tag -> manifest or index -> child manifests -> config and layers.  `collect`
removes every cached manifest and blob that is not live; `purge` removes tag
records and, when asked, the content only those tags reached.

Both work on a cache directory or a cluster's bucket (`source`), and are
safe while mirrors run:
- Only content older than a grace period is removed (when it was written
  or, for blobs, last served: a file's mtime, a bucket blob's newest
  last-use marker).  A client pulling right now writes its
  manifests and blobs before, or without, a tag record (a pull by digest);
  the grace period keeps them.  Age is checked again just before each
  removal, since the service may have rewritten a file since the scan.
- ``spool/`` is never touched: fills in flight write there.
- A later request for what was removed is a miss that fetches it again.
  The worst a race can do is cost one upstream fetch, never serve a wrong
  byte.
- Directories are left in place: the service's commit creates a directory
  and then renames into it, and removing one in between would fail its write.
- After a removal the source's cache stamp is rewritten, so running mirrors
  forget the tag records and manifests they hold in memory.

A tag whose target cannot be known keeps every unreferenced file it might
need: one whose record names a manifest the cache does not hold (a HEAD
taught the mirror the tag, or the manifest went since), one whose record
cannot be read, one whose manifest cannot be followed.  Nothing tells which
blobs such a tag needs, so gc removes none that no tag reaches (and, unless
the tag names an image manifest, no such manifest either) and names the tag;
pulling or purging it lets the next gc judge them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from attrs import frozen

from ..registry.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_MANIFEST,
)
from ..storage.layout import BLOB, MANIFEST, TYPE, ContentFile
from .inventory import (
    TAG,
    Closure,
    Inventory,
    RegistryContent,
    TagEntry,
)
from .source import ContentSource

DEFAULT_GRACE = 3600.0
# What an image manifest can refer to: blobs, never other manifests.
_IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})


@frozen
class Removal:
    """One file removed (or, in a dry run, that would be)."""

    registry: str
    kind: str
    name: str
    path: str
    size: int


@frozen
class GcReport:
    removed: tuple[Removal, ...]
    # Unreferenced, but written or used within the grace period.
    kept_young: int
    # Tags whose target cannot be known, and what that keeps.
    warnings: tuple[str, ...]
    # Unreferenced, but kept for those tags.
    kept_unsure: int = 0

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removed)


@frozen
class PurgeReport:
    tags: tuple[Removal, ...]
    gc: GcReport | None

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.tags) + (self.gc.freed if self.gc else 0)


class NothingToPurge(LookupError):
    """The repository or tag is not in the cache."""


def collect(
    inventory: Inventory,
    grace: float,
    now: float,
    dry_run: bool = False,
    on_removed: Callable[[int], None] = lambda n: None,
) -> GcReport:
    """Remove every manifest and blob no tag reaches, if older than `grace`;
    `on_removed` hears of each removal (a progress count)."""
    removed: list[Removal] = []
    kept_young = kept_unsure = 0
    warnings: list[str] = []
    source = inventory.source
    for registry in inventory.registries:
        live = registry.closure(registry.tag_roots(registry.tags))
        unsure = _unsure(source, registry, live, registry.tags)
        warnings += unsure.warnings
        dead = [f for f in registry.content() if not _holds(live, f)]
        kept_unsure += sum(1 for f in dead if f.kind in unsure.kinds)
        sure = [f for f in dead if f.kind not in unsure.kinds]
        gone, young = _sweep(source, sure, grace, now, dry_run, on_removed)
        removed += gone
        kept_young += young
        gone, young = _sweep_types(source, registry.orphan_types, grace, now, dry_run)
        removed += gone
        kept_young += young
    if removed and not dry_run:
        source.stamp_changed()
    return GcReport(tuple(removed), kept_young, tuple(warnings), kept_unsure)


def purge(
    inventory: Inventory,
    repository: str,
    tag: str | None,
    grace: float,
    now: float,
    with_content: bool,
    dry_run: bool = False,
) -> PurgeReport:
    """Remove the tag records of `repository` (all, or `tag`); with
    `with_content`, also the content no other tag reaches, if older than
    `grace`."""
    removed_tags: list[Removal] = []
    removed: list[Removal] = []
    kept_young = kept_unsure = 0
    warnings: list[str] = []
    for registry in inventory.registries:
        purged = _select(registry, repository, tag)
        if not purged:
            continue
        removed_tags += _remove_tags(inventory.source, purged, dry_run)
        if not with_content:
            continue
        remaining = [t for t in registry.tags if t not in purged]
        reached = registry.closure(registry.tag_roots(purged))
        kept = registry.closure(registry.tag_roots(remaining))
        unsure = _unsure(inventory.source, registry, kept, remaining)
        warnings += unsure.warnings
        only_purged = [
            f for f in registry.content() if _holds(reached, f) and not _holds(kept, f)
        ]
        kept_unsure += sum(1 for f in only_purged if f.kind in unsure.kinds)
        only_purged = [f for f in only_purged if f.kind not in unsure.kinds]
        gone, young = _sweep(inventory.source, only_purged, grace, now, dry_run)
        removed += gone
        kept_young += young
    if removed_tags and not dry_run:
        # After every removal: a mirror that notices sooner could read back
        # what is about to go.
        inventory.source.stamp_changed()
    if not removed_tags:
        what = f"{repository}:{tag}" if tag else f"repository {repository}"
        raise NothingToPurge(f"no {what} in the cache{inventory.full_name_hint(repository)}")
    if not with_content:
        return PurgeReport(tuple(removed_tags), None)
    collected = GcReport(tuple(removed), kept_young, tuple(warnings), kept_unsure)
    return PurgeReport(tuple(removed_tags), collected)


# -- selection --------------------------------------------------------------


def _select(registry: RegistryContent, repository: str, tag: str | None) -> list[TagEntry]:
    repository = registry.canonical(repository)
    return [
        t
        for t in registry.tags
        if t.repository == repository and (tag is None or t.tag == tag)
    ]


def _holds(closure: Closure, found: ContentFile) -> bool:
    if found.kind == MANIFEST:
        return found.digest in closure.manifests
    return found.digest in closure.blobs


@frozen
class _Unsure:
    """What tags whose target cannot be known keep: content of `kinds`, and why."""

    kinds: frozenset[str]
    warnings: tuple[str, ...]


def _unsure(
    source: ContentSource, registry: RegistryContent, live: Closure, tags: Iterable[TagEntry]
) -> _Unsure:
    kinds: set[str] = set()
    warnings: list[str] = []
    everything = "unreferenced manifests and blobs are kept"
    if not source.keeps_all_tags and not registry.tags and (registry.manifests or registry.blobs):
        # Nothing here says what is referenced: the tags are elsewhere.
        kinds |= {MANIFEST, BLOB}
        warnings.append(
            f"{registry.name}: the {source.kind} holds no tag records of it (cluster nodes keep theirs "
            f"in their cache directories and Redis); {everything}"
        )
    for digest, why in live.unreadable:
        kinds |= {MANIFEST, BLOB}
        warnings.append(
            f"{registry.name}: manifest {digest} cannot be followed ({why}); {everything}, "
            "as they may be what it references (mirrorproxy verify checks it)"
        )
    for entry in tags:
        if entry.problem is not None:
            kinds |= {MANIFEST, BLOB}
            warnings.append(
                f"{registry.name}: tag record {entry.reference} is unreadable ({entry.problem}); "
                f"{everything}, as they may be what it names (mirrorproxy verify moves it to quarantine)"
            )
    for entry, record in registry.dangling(tags):
        image = record.media_type in _IMAGE_MANIFESTS
        kinds |= {BLOB} if image else {MANIFEST, BLOB}
        what = "unreferenced blobs are kept" if image else everything
        warnings.append(
            f"{registry.name}: tag {entry.reference} names manifest {record.digest}, which is not "
            f"in the cache; {what}, as they may be its (pull or purge the tag, then gc again)"
        )
    return _Unsure(frozenset(kinds), tuple(warnings))


# -- removal ------------------------------------------------------------------


def _remove_tags(source: ContentSource, entries: list[TagEntry], dry_run: bool) -> list[Removal]:
    removed = []
    for entry in entries:
        size = source.remove_tag(entry.path, dry_run)
        if size is not None:
            name = entry.reference + (" (a narrower Accept's answer)" if entry.variant else "")
            removed.append(Removal(entry.registry, TAG, name, entry.path, size))
    return removed


def _sweep(
    source: ContentSource,
    files: list[ContentFile],
    grace: float,
    now: float,
    dry_run: bool,
    on_removed: Callable[[int], None] = lambda n: None,
) -> tuple[list[Removal], int]:
    """Remove `files` older than `grace`; manifests take their type along."""
    removed: list[Removal] = []
    young = 0
    # Any order is safe (see the module docstring); this one reads well.
    for found in sorted(files, key=lambda f: (f.kind != MANIFEST, f.path)):
        if _is_young(source, found, grace, now):
            young += 1
            continue
        for gone in source.remove(found, dry_run):
            removed.append(Removal(gone.registry, gone.kind, str(gone.digest), gone.path, gone.size))
            on_removed(1)
    return removed, young


def _sweep_types(
    source: ContentSource, types: list[ContentFile], grace: float, now: float, dry_run: bool
) -> tuple[list[Removal], int]:
    removed: list[Removal] = []
    young = 0
    for found in types:
        # The service writes a manifest's type first: a young orphan type is
        # most likely a manifest being written right now.
        if _is_young(source, found, grace, now):
            young += 1
            continue
        for gone in source.remove(found, dry_run):
            removed.append(Removal(gone.registry, TYPE, str(gone.digest), gone.path, gone.size))
    return removed, young


def _is_young(source: ContentSource, found: ContentFile, grace: float, now: float) -> bool:
    changed = source.last_change(found)
    # None: gone already; removing it says so.
    return changed is not None and now - changed < grace
