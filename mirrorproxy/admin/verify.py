"""Checking the cache: every blob and manifest re-hashed against its digest.

Corrupt content (wrong sha256, unreadable) and unreadable tag records are
taken out of the mirrors' sight by the source (`source`): a cache
directory moves them to its quarantine (kept for a person to look at), a
bucket deletes them; either way the next request for one is a miss that
fetches a good copy.  Only the very copy that was judged goes: a mirror may
have put a fresh one in its place meanwhile.

A tag record naming a manifest the cache does not hold is not corrupt (a
HEAD teaches the mirror a tag without its manifest, and a quarantine leaves
the tag behind), but it is worth a warning: until the tag is pulled again, gc
cannot tell what it needs and keeps whatever no tag reaches.

Content is hashed in a thread pool, a chunk at a time as it is read (a file,
or a bucket object's streamed GET), never whole in memory (hashlib releases
the GIL on large updates, so the threads overlap).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

from attrs import frozen

from ..storage.layout import MANIFEST, ContentFile
from .inventory import (
    TAG,
    Inventory,
    TagEntry,
    read_tag_entry,
)
from .source import ContentSource, NotChecked, Reading

CHUNK = 1024 * 1024
DEFAULT_JOBS = 4


@frozen
class Finding:
    """One corrupt file or object: what it is, where it was, why, and what was done."""

    registry: str
    kind: str
    name: str
    path: str
    reason: str
    # "moved to ...", "deleted ..."; None when the path held another copy
    # by the time it was to be set aside.
    outcome: str | None


@frozen
class VerifyReport:
    checked: int
    bytes: int
    findings: tuple[Finding, ...]
    # Files gone between the listing and their check (the service evicted
    # or replaced them); not a fault.
    vanished: int
    # Tags naming a manifest the cache does not hold; content that could
    # not be checked (a bucket that failed to answer).
    warnings: tuple[str, ...] = ()
    unchecked: int = 0


@frozen
class _Checked:
    # Why it is corrupt; or, with `unchecked`, why it could not be checked.
    reason: str | None
    # Which copy was judged (None: it vanished).
    identity: Hashable | None
    size: int
    unchecked: bool = False


def content_bytes(inventory: Inventory) -> int:
    """How many bytes `verify` will read: the progress bar's total."""
    return sum(f.size for r in inventory.registries for f in r.content())


def verify(
    inventory: Inventory,
    jobs: int = DEFAULT_JOBS,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> VerifyReport:
    source = inventory.source
    files = [f for r in inventory.registries for f in r.content()]
    findings: list[Finding] = []
    unchecked: list[str] = []
    checked = hashed = vanished = 0
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify") as pool:
        results = pool.map(lambda f: _check(source, f, on_bytes), files)
        for found, result in zip(files, results):
            if result.unchecked:
                unchecked.append(f"{found.registry}: {found.kind} {found.digest} not checked: {result.reason}")
                continue
            if result.identity is None and result.reason is None:
                vanished += 1
                continue
            checked += 1
            hashed += result.size
            if result.reason is not None:
                outcome = source.set_aside(found, result.identity)
                findings.append(
                    Finding(found.registry, found.kind, str(found.digest), found.path, result.reason, outcome)
                )
    for registry in inventory.registries:
        for entry in registry.tags:
            if entry.problem is not None:
                checked += 1
                findings.append(_set_aside_tag(source, entry))
    if any(f.outcome for f in findings):
        source.stamp_changed()
    warnings = unchecked + _tags_without_manifest(inventory, findings)
    return VerifyReport(checked, hashed, tuple(findings), vanished, tuple(warnings), len(unchecked))


def _tags_without_manifest(inventory: Inventory, findings: list[Finding]) -> list[str]:
    moved = {(f.registry, f.name) for f in findings if f.kind == MANIFEST and f.outcome}
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


def _check(source: ContentSource, found: ContentFile, on_bytes: Callable[[int], None]) -> _Checked:
    try:
        with source.open(found) as reading:
            if reading is None:
                return _Checked(None, None, 0)
            return _hash(reading, found, on_bytes)
    except NotChecked as e:
        return _Checked(str(e), None, 0, unchecked=True)
    except OSError as e:
        return _Checked(f"cannot open: {e.strerror or e}", source.identity(found.path), 0)


def _hash(reading: Reading, found: ContentFile, on_bytes: Callable[[int], None]) -> _Checked:
    hasher, size = hashlib.sha256(), 0
    try:
        while chunk := reading.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            on_bytes(len(chunk))
    except OSError as e:
        return _Checked(f"read error after {size} bytes: {e.strerror or e}", reading.identity, size)
    actual = hasher.hexdigest()
    if actual != found.digest.hex:
        return _Checked(f"content hashes to sha256:{actual} ({size} bytes)", reading.identity, size)
    return _Checked(None, reading.identity, size)


def _set_aside_tag(source: ContentSource, entry: TagEntry) -> Finding:
    # Read it again: the service may have rewritten it since the scan.
    again = read_tag_entry(source, entry.registry, entry.repository, entry.tag, entry.path)
    outcome = None
    if again is not None and again.problem is not None:
        outcome = source.set_aside_tag(entry.registry, entry.path)
    return Finding(entry.registry, TAG, entry.reference, entry.path, entry.problem or "", outcome)
