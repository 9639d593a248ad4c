"""A fill's spool file: written batch by batch in order, one pool job each;
relayed from memory once it cannot be written (still hashed); a descriptor
for each follower, whose failure is that follower's alone; removed only once
no write is in flight; committed, and still readable until released."""

from __future__ import annotations

import errno
import os

from attrs import define, field
from twisted.internet.defer import Deferred

from mirrorproxy.cache.fill.spool import SpoolWriter
from mirrorproxy.cache.fill.state import FailureKind
from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.filesystem import FilesystemStore

from ..fakeregistry import sha256
from .harness import ManualRunner, cache_turned_read_only, disk_fills_after

BLOB = bytes(range(256)) * 64
DIGEST = Digest.parse(sha256(BLOB))


@define(eq=False)
class Writing:
    """A writer over a real store, and what it told the fill; like a fill,
    it writes the next batch as soon as one is done."""

    store: FilesystemStore
    runner: ManualRunner | None
    writer: SpoolWriter = field(init=False)
    batches: int = 0
    errors: list[str] = field(factory=list)

    def batch_done(self) -> None:
        self.batches += 1
        self.writer.write_next()

    def settle(self) -> None:
        while self.runner is not None and self.runner.run_all():
            pass


def writing(tmp_path, run=None) -> Writing:
    """A writer whose spool file is created; its pool runs only when the
    test says, unless `run` is given."""
    runner = ManualRunner() if run is None else None
    store = FilesystemStore(str(tmp_path / "cache"), run or runner)
    store.prepare()
    w = Writing(store, runner)
    w.writer = SpoolWriter(store, run or runner, DIGEST, w.batch_done, w.errors.append)
    Deferred.fromCoroutine(w.writer.create())
    w.settle()
    return w


def spool_files(w: Writing) -> list[str]:
    return os.listdir(os.path.join(w.store.root, "spool"))


def test_a_batch_is_everything_that_waited_for_the_one_before(tmp_path):
    w = writing(tmp_path)
    w.writer.add(BLOB[:1000])
    assert w.writer.write_next()
    for start in range(1000, len(BLOB), 1000):
        w.writer.add(BLOB[start : start + 1000])
        assert not w.writer.write_next()  # one batch at a time

    assert len(w.runner.jobs) == 1
    w.runner.run_one("_hash_and_write")
    assert (w.batches, w.writer.written) == (1, 1000)
    assert len(w.runner.jobs) == 1  # all the rest, as one job
    w.settle()

    assert (w.batches, w.writer.written, w.writer.hashed) == (2, len(BLOB), len(BLOB))
    assert w.writer.idle and w.writer.mismatch(len(BLOB)) is None
    (name,) = spool_files(w)
    with open(os.path.join(w.store.root, "spool", name), "rb") as f:
        assert f.read() == BLOB


def test_what_the_disk_refuses_is_relayed_from_memory_and_still_hashed(tmp_path):
    w = writing(tmp_path, run=disk_fills_after(1))
    w.writer.add(BLOB[:4096])
    w.writer.write_next()
    assert w.writer.tail is None

    w.writer.add(BLOB[4096:8192])
    w.writer.write_next()

    tail = w.writer.tail
    assert tail is not None and (tail.start, tail.end) == (4096, 8192)
    assert tail.read(4096, 100_000) == BLOB[4096:8192]
    w.writer.add(BLOB[8192:])
    w.writer.write_next()
    assert (w.writer.written, w.writer.hashed, tail.end) == (4096, len(BLOB), len(BLOB))
    assert w.writer.mismatch(len(BLOB)) is None and w.errors == []


def test_without_a_spool_file_everything_is_relayed(tmp_path):
    w = writing(tmp_path, run=cache_turned_read_only())

    assert not w.writer.has_file
    assert w.writer.tail is not None and w.writer.tail.start == 0
    w.writer.add(BLOB)
    w.writer.write_next()
    assert w.writer.tail.read(0, 10) == BLOB[:10] and w.writer.hashed == len(BLOB)

    fd = w.writer.descriptor().result
    assert os.read(fd, 10) == b""  # a follower reads nothing from it, never wrong bytes
    os.close(fd)


def test_what_upstream_sent_is_checked_against_length_and_digest(tmp_path):
    short = writing(tmp_path / "short")
    short.writer.add(BLOB[:-1])
    short.writer.write_next()
    short.settle()
    wrong = writing(tmp_path / "wrong")
    wrong.writer.add(b"x" * len(BLOB))
    wrong.writer.write_next()
    wrong.settle()

    assert short.writer.mismatch(len(BLOB)) == (FailureKind.LENGTH, f"upstream sent {len(BLOB) - 1} of {len(BLOB)} bytes")
    kind, reason = wrong.writer.mismatch(len(BLOB))
    assert kind is FailureKind.DIGEST and reason == "content hashes to " + sha256(b"x" * len(BLOB))
    assert wrong.writer.mismatch(None)[0] is FailureKind.DIGEST


def test_each_follower_gets_its_own_descriptor_or_its_own_failure(tmp_path, monkeypatch):
    w = writing(tmp_path)
    w.writer.add(BLOB)
    w.writer.write_next()
    w.settle()
    first = w.writer.descriptor().result

    def no_descriptors(self, fd: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(FilesystemStore, "share", no_descriptors)
    refused = w.writer.descriptor()
    monkeypatch.undo()
    second = w.writer.descriptor().result

    assert refused.result.value.errno == errno.EMFILE
    refused.addErrback(lambda _: None)
    assert os.pread(first, 4, 0) == os.pread(second, 4, 0) == BLOB[:4]
    assert first != second
    os.close(first)
    os.close(second)


def test_an_abandoned_spool_file_goes_only_once_its_write_is_over(tmp_path):
    w = writing(tmp_path)
    w.writer.add(BLOB)
    w.writer.write_next()
    w.writer.add(b"never written")

    gone = w.writer.abandon()

    assert spool_files(w) and not gone.called  # the write in flight has the descriptor
    w.settle()
    assert spool_files(w) == [] and gone.called
    assert w.batches == 0  # the fill hears of no more batches


def test_a_committed_file_is_readable_until_released(tmp_path):
    w = writing(tmp_path)
    w.writer.add(BLOB)
    w.writer.write_next()
    w.settle()
    follower = w.writer.descriptor().result

    Deferred.fromCoroutine(w.writer.commit("registry"))
    w.settle()
    late = w.writer.descriptor().result  # a late joiner, after the rename
    w.writer.release()

    assert not w.writer.has_file and spool_files(w) == []
    with open(w.store.blob_path("registry", DIGEST), "rb") as f:
        assert f.read() == BLOB
    for fd in (follower, late):
        assert os.pread(fd, len(BLOB), 0) == BLOB
        os.close(fd)


def test_a_batch_that_cannot_be_hashed_fails_the_fill(tmp_path):
    w = writing(tmp_path)
    w.writer.add(BLOB)
    w.writer.write_next()

    _, _, job = w.runner.jobs.pop(0)
    job.errback(MemoryError("no room to hash"))

    assert w.errors == ["cannot hash the blob: no room to hash"]
    assert w.batches == 0 and w.writer.tail is None
