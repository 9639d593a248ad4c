"""What every cache store promises (`mirrorproxy.storage.ICacheStore`),
checked against each implementation over real storage, its I/O run inline.

A new store joins `IMPLEMENTATIONS` with the few ways the suite looks behind
it (what it holds, how to break its commits, how to age a blob, what an
admin command does), and must pass every test here unchanged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen
from twisted.internet.defer import maybeDeferred
from zope.interface.verify import verifyObject

from mirrorproxy.registry.names import Digest
from mirrorproxy.storage import ICacheStore, IOpenBlob
from mirrorproxy.storage.filesystem import FilesystemStore
from mirrorproxy.storage.layout import Layout
from mirrorproxy.storage.values import Spool, StoredManifest, TagRecord

from .cachebuilder import digest_of, run

HUB, OTHER = "docker.io", "ghcr.io"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@frozen
class Implementation:
    name: str
    # A store over a fresh place under the test's directory (not prepared).
    make: Callable[[Path], Any]
    # The same place, as a new process would find it after a crash.
    reopen: Callable[[Any], Any]
    # Every file (or object) the store's place holds, by name.
    held: Callable[[Any], set[str]]
    # Make every commit of content of `registry` fail until the returned
    # repair is called.
    break_commits: Callable[[Any, str], Callable[[], None]]
    # Make a blob's last use `seconds` older.
    age: Callable[[Any, str, Digest, float], None]
    # What `mirrorproxy gc`, `purge` and `verify` do after removing files.
    removed_behind_its_back: Callable[[Any], None]


def _files_under(store: FilesystemStore) -> set[str]:
    return {
        os.path.relpath(os.path.join(directory, name), store.root)
        for directory, _, names in os.walk(store.root)
        for name in names
    }


def _block_registry(store: FilesystemStore, registry: str) -> Callable[[], None]:
    # A file where the registry's directory would be: nothing can go under it.
    blocker = Path(store.root, registry)
    blocker.write_bytes(b"in the way")
    return blocker.unlink


def _age(store: FilesystemStore, registry: str, digest: Digest, seconds: float) -> None:
    path = store.blob_path(registry, digest)
    info = os.stat(path)
    os.utime(path, (info.st_atime - seconds, info.st_mtime - seconds))


FILESYSTEM = Implementation(
    "filesystem",
    make=lambda place: FilesystemStore(str(place / "cache"), maybeDeferred),
    reopen=lambda store: FilesystemStore(store.root, maybeDeferred),
    held=_files_under,
    break_commits=_block_registry,
    age=_age,
    removed_behind_its_back=lambda store: Layout(store.root).stamp_changed(),
)

IMPLEMENTATIONS = [FILESYSTEM]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda i: i.name)
def implementation(request: pytest.FixtureRequest) -> Implementation:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store(implementation: Implementation, tmp_path: Path) -> Any:
    made = implementation.make(tmp_path)
    assert made.prepare() == 0
    return made


def spooled(store: Any, *batches: bytes) -> Spool:
    """A spool holding `batches`, written as a fill writes them."""
    spool = run(store.new_spool())
    offset = 0
    for batch in batches:
        offset += run(store.write_spool(spool, offset, [batch], hashlib.sha256()))
    return spool


def commit(store: Any, data: bytes, registry: str = HUB) -> Digest:
    digest = digest_of(data)
    spool = spooled(store, data)
    run(store.commit_blob(spool, registry, digest))
    os.close(spool.fd)
    return digest


def read_all(store: Any, registry: str, digest: Digest) -> bytes:
    opened = run(store.open_blob(registry, digest))
    try:
        return run(opened.read(0, opened.size + 1))  # type: ignore[no-any-return]
    finally:
        opened.close()


def counts(store: Any) -> tuple[int | None, int | None]:
    return store.bytes, store.entries


def record(data: bytes, learnt: float = 1000.0) -> TagRecord:
    return TagRecord(digest_of(data), OCI_MANIFEST, len(data), learnt)


# -- the interface --------------------------------------------------------------


def test_the_store_and_what_it_opens_provide_their_interfaces(store):
    digest = commit(store, b"layer")
    opened = run(store.open_blob(HUB, digest))

    assert verifyObject(ICacheStore, store)
    assert verifyObject(IOpenBlob, opened)
    opened.close()


# -- blobs ------------------------------------------------------------------------


def test_a_committed_blob_opens_with_its_exact_bytes(store):
    first, second = os.urandom(70_000), os.urandom(1000)
    hasher = hashlib.sha256()
    spool = run(store.new_spool())
    assert run(store.write_spool(spool, 0, [first[:5], first[5:]], hasher)) == len(first)
    assert run(store.write_spool(spool, len(first), [second], hasher)) == len(second)
    digest = Digest(hasher.hexdigest())
    assert digest == digest_of(first + second)  # the batches were hashed, in order

    run(store.commit_blob(spool, HUB, digest))
    os.close(spool.fd)

    opened = run(store.open_blob(HUB, digest))
    assert opened.size == len(first) + len(second) == run(store.blob_size(HUB, digest))
    assert run(opened.read(0, opened.size)) == first + second
    assert run(opened.read(69_990, 20)) == (first + second)[69_990:70_010]
    assert run(opened.read(opened.size, 10)) == b""
    opened.close()


def test_a_blob_never_committed_is_not_there(store):
    digest = digest_of(b"nothing")
    commit(store, b"elsewhere", registry=OTHER)

    assert run(store.open_blob(HUB, digest)) is None
    assert run(store.blob_size(HUB, digest)) is None
    assert run(store.remove_blob(HUB, digest)) is None
    # Blobs are kept apart by registry.
    assert run(store.open_blob(HUB, digest_of(b"elsewhere"))) is None


def test_the_spool_stays_open_for_its_readers_after_the_commit(store):
    data = os.urandom(5000)
    spool = spooled(store, data)
    follower = store.share(spool.fd)

    run(store.commit_blob(spool, HUB, digest_of(data)))

    assert os.pread(spool.fd, len(data), 0) == data
    assert os.pread(follower, len(data), 0) == data
    os.close(follower)
    os.close(spool.fd)


def test_a_blob_opened_before_its_removal_reads_to_its_end(store):
    data = os.urandom(20_000)
    digest = commit(store, data)
    opened = run(store.open_blob(HUB, digest))

    assert run(store.remove_blob(HUB, digest)) == len(data)

    assert run(opened.read(0, len(data))) == data
    opened.close()
    assert run(store.open_blob(HUB, digest)) is None


def test_a_discarded_spool_leaves_nothing(implementation, store):
    before = implementation.held(store)
    spool = spooled(store, b"half a layer")

    run(store.discard(spool))

    assert implementation.held(store) == before
    assert run(store.stored_blobs()) == []


def test_a_failed_commit_leaves_no_blob_and_no_spool(implementation, store):
    run(store.measure())
    before = implementation.held(store)
    repair = implementation.break_commits(store, HUB)
    data = b"a layer that cannot be kept"
    spool = spooled(store, data)

    with pytest.raises(OSError):
        run(store.commit_blob(spool, HUB, digest_of(data)))
    os.close(spool.fd)
    repair()

    assert run(store.open_blob(HUB, digest_of(data))) is None
    assert implementation.held(store) == before
    assert counts(store) == (0, 0)
    assert store.writes.failures == 1 and store.writes.last_error
    # The next write that works says the store takes writes again.
    commit(store, data, registry=OTHER)
    assert store.writes.last_error is None


def test_a_start_sweeps_the_spools_a_crash_left(implementation, store):
    before = implementation.held(store)
    spooled(store, b"one")
    spooled(store, b"two")

    again = implementation.reopen(store)

    assert again.prepare() == 2
    assert implementation.held(again) == before


# -- what the store holds ------------------------------------------------------------


def test_the_store_lists_exactly_its_committed_blobs(store):
    a = commit(store, b"a" * 10)
    b = commit(store, b"b" * 20, registry=OTHER)
    run(store.write_manifest(HUB, digest_of(b"{}"), b"{}", OCI_MANIFEST))
    spooled(store, b"in flight")

    listed = run(store.stored_blobs())

    assert sorted((s.registry, s.digest, s.size) for s in listed) == sorted([(HUB, a, 10), (OTHER, b, 20)])


def test_blobs_are_listed_with_their_last_use(implementation, store):
    old, older = commit(store, b"old"), commit(store, b"older")
    implementation.age(store, HUB, old, 2 * 3600)
    implementation.age(store, HUB, older, 3 * 3600)
    by_use = lambda: [s.digest for s in sorted(run(store.stored_blobs()), key=lambda s: s.last_used)]  # noqa: E731
    assert by_use() == [older, old]

    run(store.mark_used(HUB, older))
    run(store.mark_used(HUB, digest_of(b"never stored")))  # ignored

    assert by_use() == [old, older]


def test_counts_follow_commits_and_removals_and_agree_with_a_measure(store):
    commit(store, b"x" * 5)
    assert counts(store) == (None, None)  # nobody counted yet
    run(store.measure())
    assert counts(store) == (5, 1)

    blob = commit(store, b"b" * 10)
    assert counts(store) == (15, 2)
    run(store.write_manifest(HUB, digest_of(b"{ }"), b"{ }", OCI_MANIFEST))
    assert counts(store) == (18, 3)
    run(store.write_tag(HUB, "library/a", "1", record(b"{ }")))
    commit(store, b"b" * 10)  # again: the same blob, not a second one
    run(store.write_manifest(HUB, digest_of(b"{ }"), b"{ }", OCI_MANIFEST))
    assert counts(store) == (18, 3)

    assert run(store.remove_blob(HUB, blob)) == 10
    assert counts(store) == (8, 2)
    assert run(store.remove_blob(HUB, blob)) is None
    assert counts(store) == (8, 2)
    run(store.measure())
    assert counts(store) == (8, 2)


# -- manifests and tag records ---------------------------------------------------


def test_a_manifest_reads_back_with_its_exact_bytes_and_type(store):
    body = b'{"schemaVersion": 2,  "layers": []}'
    digest = digest_of(body)

    run(store.write_manifest(HUB, digest, body, OCI_MANIFEST))

    assert run(store.read_manifest(HUB, digest)) == StoredManifest(body, OCI_MANIFEST)
    assert run(store.read_manifest(OTHER, digest)) is None
    assert run(store.read_manifest(HUB, digest_of(b"other"))) is None


def test_tag_records_and_their_variants_round_trip(store):
    index, image, newer = record(b"index"), record(b"image"), record(b"newer", learnt=2000.0)

    run(store.write_tag(HUB, "library/alpine", "3", index))
    run(store.write_tag(HUB, "library/alpine", "3", image, variant="v2"))

    assert run(store.read_tag(HUB, "library/alpine", "3")) == index
    assert run(store.read_tag(HUB, "library/alpine", "3", "v2")) == image
    assert run(store.read_tag(HUB, "library/alpine", "3", "other")) is None
    assert run(store.read_tag(HUB, "library/alpine", "4")) is None
    assert run(store.read_tag(OTHER, "library/alpine", "3")) is None

    run(store.write_tag(HUB, "library/alpine", "3", newer))
    assert run(store.read_tag(HUB, "library/alpine", "3")) == newer
    assert run(store.read_tag(HUB, "library/alpine", "3", "v2")) == image


# -- health and changes behind its back --------------------------------------------


def test_a_healthy_store_is_writable(store):
    assert run(store.probe_writable()) is None
    assert store.writes.last_error is None


def test_the_cache_stamp_changes_when_files_are_removed_behind_its_back(implementation, store):
    assert run(store.cache_stamp()) is None

    implementation.removed_behind_its_back(store)
    first = run(store.cache_stamp())
    assert first and run(store.cache_stamp()) == first

    commit(store, b"content")  # the service's own writes change nothing
    assert run(store.cache_stamp()) == first
    implementation.removed_behind_its_back(store)
    assert run(store.cache_stamp()) not in (None, first)
