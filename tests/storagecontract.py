"""What every cache store promises (`mirrorproxy.storage.ICacheStore`): the
tests each implementation passes, over real storage.

A test module runs them by importing them (``from ..storagecontract import
*``) and providing an ``implementation`` fixture: the few ways the suite
looks behind a store (what it holds, how to break its commits, how to age a
blob, what an admin command does) and how it waits for the store.  The
filesystem store runs them as unit tests (tests/unit/test_storage_contract.py,
its I/O inline); stores over a server run them as integration tests
(tests/integration/test_s3_store.py, on the real reactor).  Every store
passes every test here unchanged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen
from zope.interface.verify import verifyObject

from mirrorproxy.registry.names import Digest
from mirrorproxy.storage import ICacheStore, IOpenBlob
from mirrorproxy.storage.values import Spool, StoredManifest, TagRecord

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
    # The result of a store's coroutine, waited for as this store needs.
    run: Callable[[Coroutine[Any, Any, Any]], Any]
    # Whether a blob opened before its removal reads to its end.  A store
    # whose blobs are local files can keep that promise (an unlinked file
    # stays readable through its descriptor); an object store cannot (S3
    # keeps no removed-but-open objects): its read fails with an OSError
    # instead, and never returns other bytes.
    reads_outlive_removal: bool = True


@pytest.fixture
def store(implementation: Implementation, tmp_path: Path) -> Any:
    made = implementation.make(tmp_path)
    assert made.prepare() == 0
    return made


@pytest.fixture
def run(implementation: Implementation) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    return implementation.run


def digest_of(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def spooled(run: Any, store: Any, *batches: bytes) -> Spool:
    """A spool holding `batches`, written as a fill writes them."""
    spool = run(store.new_spool())
    offset = 0
    for batch in batches:
        offset += run(store.write_spool(spool, offset, [batch], hashlib.sha256()))
    return spool


def commit(run: Any, store: Any, data: bytes, registry: str = HUB) -> Digest:
    digest = digest_of(data)
    spool = spooled(run, store, data)
    run(store.commit_blob(spool, registry, digest))
    os.close(spool.fd)
    return digest


def read_all(run: Any, store: Any, registry: str, digest: Digest) -> bytes:
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


def test_the_store_and_what_it_opens_provide_their_interfaces(store, run):
    digest = commit(run, store, b"layer")
    opened = run(store.open_blob(HUB, digest))

    assert verifyObject(ICacheStore, store)
    assert verifyObject(IOpenBlob, opened)
    opened.close()


# -- blobs ------------------------------------------------------------------------


def test_a_committed_blob_opens_with_its_exact_bytes(store, run):
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


def test_a_blob_never_committed_is_not_there(store, run):
    digest = digest_of(b"nothing")
    commit(run, store, b"elsewhere", registry=OTHER)

    assert run(store.open_blob(HUB, digest)) is None
    assert run(store.blob_size(HUB, digest)) is None
    assert run(store.remove_blob(HUB, digest)) is None
    # Blobs are kept apart by registry.
    assert run(store.open_blob(HUB, digest_of(b"elsewhere"))) is None


def test_the_spool_stays_open_for_its_readers_after_the_commit(store, run):
    data = os.urandom(5000)
    spool = spooled(run, store, data)
    follower = store.share(spool.fd)

    run(store.commit_blob(spool, HUB, digest_of(data)))

    assert os.pread(spool.fd, len(data), 0) == data
    assert os.pread(follower, len(data), 0) == data
    os.close(follower)
    os.close(spool.fd)


def test_a_blob_opened_before_its_removal_reads_to_its_end(implementation, store, run):
    data = os.urandom(20_000)
    digest = commit(run, store, data)
    opened = run(store.open_blob(HUB, digest))

    assert run(store.remove_blob(HUB, digest)) == len(data)

    if implementation.reads_outlive_removal:
        assert run(opened.read(0, len(data))) == data
    else:
        with pytest.raises(OSError):
            run(opened.read(0, len(data)))
    opened.close()
    assert run(store.open_blob(HUB, digest)) is None


def test_a_discarded_spool_leaves_nothing(implementation, store, run):
    before = implementation.held(store)
    spool = spooled(run, store, b"half a layer")

    run(store.discard(spool))

    assert implementation.held(store) == before
    assert run(store.stored_blobs()) == []


def test_a_failed_commit_leaves_no_blob_and_no_spool(implementation, store, run):
    run(store.measure())
    before = implementation.held(store)
    repair = implementation.break_commits(store, HUB)
    data = b"a layer that cannot be kept"
    spool = spooled(run, store, data)

    with pytest.raises(OSError):
        run(store.commit_blob(spool, HUB, digest_of(data)))
    os.close(spool.fd)
    repair()

    assert run(store.open_blob(HUB, digest_of(data))) is None
    assert implementation.held(store) == before
    assert counts(store) == (0, 0)
    assert store.writes.failures == 1 and store.writes.last_error
    # The next write that works says the store takes writes again.
    commit(run, store, data, registry=OTHER)
    assert store.writes.last_error is None


def test_a_start_sweeps_the_spools_a_crash_left(implementation, store, run):
    before = implementation.held(store)
    spooled(run, store, b"one")
    spooled(run, store, b"two")

    again = implementation.reopen(store)

    assert again.prepare() == 2
    assert implementation.held(again) == before


# -- what the store holds ------------------------------------------------------------


def test_the_store_lists_exactly_its_committed_blobs(store, run):
    a = commit(run, store, b"a" * 10)
    b = commit(run, store, b"b" * 20, registry=OTHER)
    run(store.write_manifest(HUB, digest_of(b"{}"), b"{}", OCI_MANIFEST))
    spooled(run, store, b"in flight")

    listed = run(store.stored_blobs())

    assert sorted((s.registry, s.digest, s.size) for s in listed) == sorted([(HUB, a, 10), (OTHER, b, 20)])


def test_blobs_are_listed_with_their_last_use(implementation, store, run):
    old, older = commit(run, store, b"old"), commit(run, store, b"older")
    implementation.age(store, HUB, old, 2 * 3600)
    implementation.age(store, HUB, older, 3 * 3600)
    by_use = lambda: [s.digest for s in sorted(run(store.stored_blobs()), key=lambda s: s.last_used)]  # noqa: E731
    assert by_use() == [older, old]

    run(store.mark_used(HUB, older))
    run(store.mark_used(HUB, digest_of(b"never stored")))  # ignored

    assert by_use() == [old, older]


def test_counts_follow_commits_and_removals_and_agree_with_a_measure(store, run):
    commit(run, store, b"x" * 5)
    assert counts(store) == (None, None)  # nobody counted yet
    run(store.measure())
    assert counts(store) == (5, 1)

    blob = commit(run, store, b"b" * 10)
    assert counts(store) == (15, 2)
    run(store.write_manifest(HUB, digest_of(b"{ }"), b"{ }", OCI_MANIFEST))
    assert counts(store) == (18, 3)
    run(store.write_tag(HUB, "library/a", "1", record(b"{ }")))
    commit(run, store, b"b" * 10)  # again: the same blob, not a second one
    run(store.write_manifest(HUB, digest_of(b"{ }"), b"{ }", OCI_MANIFEST))
    assert counts(store) == (18, 3)

    assert run(store.remove_blob(HUB, blob)) == 10
    assert counts(store) == (8, 2)
    assert run(store.remove_blob(HUB, blob)) is None
    assert counts(store) == (8, 2)
    run(store.measure())
    assert counts(store) == (8, 2)


# -- manifests and tag records ---------------------------------------------------


def test_a_manifest_reads_back_with_its_exact_bytes_and_type(store, run):
    body = b'{"schemaVersion": 2,  "layers": []}'
    digest = digest_of(body)

    run(store.write_manifest(HUB, digest, body, OCI_MANIFEST))

    assert run(store.read_manifest(HUB, digest)) == StoredManifest(body, OCI_MANIFEST)
    assert run(store.read_manifest(OTHER, digest)) is None
    assert run(store.read_manifest(HUB, digest_of(b"other"))) is None


def test_tag_records_and_their_variants_round_trip(store, run):
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


def test_a_healthy_store_is_writable(store, run):
    assert run(store.probe_writable()) is None
    assert store.writes.last_error is None


def test_the_cache_stamp_changes_when_files_are_removed_behind_its_back(implementation, store, run):
    assert run(store.cache_stamp()) is None

    implementation.removed_behind_its_back(store)
    first = run(store.cache_stamp())
    assert first and run(store.cache_stamp()) == first

    commit(run, store, b"content")  # the service's own writes change nothing
    assert run(store.cache_stamp()) == first
    implementation.removed_behind_its_back(store)
    assert run(store.cache_stamp()) not in (None, first)
