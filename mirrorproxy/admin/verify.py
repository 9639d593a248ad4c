"""Checking the cache: every blob and manifest re-hashed against its digest.

A corrupt file (wrong sha256, unreadable) and an unreadable tag record are
moved to ``<cache>/quarantine/<registry>/<the same relative path>``: out of the
service's sight, so the next request for it is a miss that fetches a good
copy, yet kept for a person to look at.  The move is one rename inside the
cache directory, so it is atomic, and is made only if the path still holds
the very file that was judged: the service may have put a fresh copy there
meanwhile.

A tag record naming a manifest the cache does not hold is not corrupt (a
HEAD teaches the mirror a tag without its manifest, and a quarantine leaves
the tag behind), but it is worth a warning: until the tag is pulled again, gc
cannot tell what it needs and keeps whatever no tag reaches.

Files are hashed in a thread pool, a chunk at a time (hashlib releases the
GIL on large updates, so the threads overlap), never a whole file in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from attrs import frozen

from ..storage.layout import MANIFEST, ContentFile, Layout, type_path
from .inventory import (
    TAG,
    Inventory,
    TagEntry,
    read_tag_entry,
)

CHUNK = 1024 * 1024
DEFAULT_JOBS = 4

# (st_dev, st_ino): which file a path held when it was judged.
Identity = tuple[int, int]


@frozen
class Finding:
    """One corrupt file: what it is, where it was, why, and where it went."""

    registry: str
    kind: str
    name: str
    path: str
    reason: str
    # None when the path held another file by the time it was to be moved.
    quarantined: str | None


@frozen
class VerifyReport:
    checked: int
    bytes: int
    findings: tuple[Finding, ...]
    # Files gone between the listing and their check (the service evicted
    # or replaced them); not a fault.
    vanished: int
    # Tags naming a manifest the cache does not hold.
    warnings: tuple[str, ...] = ()


@frozen
class _Checked:
    reason: str | None
    identity: Identity | None
    size: int


def content_bytes(inventory: Inventory) -> int:
    """How many bytes `verify` will read: the progress bar's total."""
    return sum(f.size for r in inventory.registries for f in r.content())


def verify(
    inventory: Inventory,
    jobs: int = DEFAULT_JOBS,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> VerifyReport:
    files = [f for r in inventory.registries for f in r.content()]
    findings: list[Finding] = []
    checked = hashed = vanished = 0
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify") as pool:
        results = pool.map(lambda f: _check(f, on_bytes), files)
        for found, result in zip(files, results):
            if result.identity is None and result.reason is None:
                vanished += 1
                continue
            checked += 1
            hashed += result.size
            if result.reason is not None:
                findings.append(_quarantine_content(inventory.layout, found, result))
    for registry in inventory.registries:
        for entry in registry.tags:
            if entry.problem is not None:
                checked += 1
                findings.append(_quarantine_tag(inventory.layout, entry))
    if any(f.quarantined for f in findings):
        inventory.layout.stamp_changed()
    warnings = _tags_without_manifest(inventory, findings)
    return VerifyReport(checked, hashed, tuple(findings), vanished, tuple(warnings))


def _tags_without_manifest(inventory: Inventory, findings: list[Finding]) -> list[str]:
    moved = {(f.registry, f.name) for f in findings if f.kind == MANIFEST and f.quarantined}
    warnings = []
    for registry in inventory.registries:
        for entry in registry.tags:
            record = entry.record
            if record is None:
                continue
            if record.digest in registry.manifests and (registry.name, str(record.digest)) not in moved:
                continue
            warnings.append(
                f"{registry.name}: tag {entry.reference} names manifest {record.digest}, which is not in "
                "the cache; the next pull of the tag fetches it, and until then gc keeps unreferenced content"
            )
    return warnings


# -- checking -------------------------------------------------------------------


def _check(found: ContentFile, on_bytes: Callable[[int], None]) -> _Checked:
    try:
        with open(found.path, "rb", buffering=0) as f:
            return _hash(f, found, on_bytes)
    except FileNotFoundError:
        return _Checked(None, None, 0)
    except OSError as e:
        return _Checked(f"cannot open: {e.strerror or e}", _identity_of(found.path), 0)


def _hash(f: BinaryIO, found: ContentFile, on_bytes: Callable[[int], None]) -> _Checked:
    info = os.fstat(f.fileno())
    identity = (info.st_dev, info.st_ino)
    hasher, size = hashlib.sha256(), 0
    try:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            on_bytes(len(chunk))
    except OSError as e:
        return _Checked(f"read error after {size} bytes: {e.strerror or e}", identity, size)
    actual = hasher.hexdigest()
    if actual != found.digest.hex:
        return _Checked(f"content hashes to sha256:{actual} ({size} bytes)", identity, size)
    return _Checked(None, identity, size)


def _identity_of(path: str) -> Identity | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


# -- quarantine -----------------------------------------------------------------


def _quarantine_content(layout: Layout, found: ContentFile, result: _Checked) -> Finding:
    target = layout.quarantine_path(found.registry, found.path)
    moved = _move_if_same(found.path, target, result.identity)
    if moved is not None and found.kind == MANIFEST:
        # The type follows its manifest; alone it would be harmless, but a
        # person looking at the quarantine wants both.
        _move_if_same(type_path(found.path), type_path(moved), None)
    return Finding(found.registry, found.kind, str(found.digest), found.path, result.reason or "", moved)


def _quarantine_tag(layout: Layout, entry: TagEntry) -> Finding:
    # Read it again: the service may have rewritten it since the scan.
    again = read_tag_entry(entry.registry, entry.repository, entry.tag, entry.path)
    moved = None
    if again is not None and again.problem is not None:
        target = layout.quarantine_path(entry.registry, entry.path)
        moved = _move_if_same(entry.path, target, _identity_of(entry.path))
    return Finding(entry.registry, TAG, entry.reference, entry.path, entry.problem or "", moved)


def _move_if_same(path: str, target: str, identity: Identity | None) -> str | None:
    """Rename `path` into the quarantine if it still is the file judged.

    No fsync: a rename lost in a crash leaves the corrupt file where it was,
    and the next verify finds it again.
    """
    if identity is not None and _identity_of(path) != identity:
        return None
    os.makedirs(os.path.dirname(target), exist_ok=True)
    target = _unused(target)
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return target


def _unused(path: str) -> str:
    """`path`, or `path.N` if an earlier verify already quarantined that name."""
    candidate, number = path, 0
    while os.path.lexists(candidate) or os.path.lexists(type_path(candidate)):
        number += 1
        candidate = f"{path}.{number}"
    return candidate
