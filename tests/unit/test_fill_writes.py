"""The write queue: batches in order, one at a time, and how much a fill
holds in memory, which is what pauses upstream while the disk lags."""

from __future__ import annotations

from mirrorproxy.cache.fill.writes import QUEUE_HIGH, QUEUE_LOW, WriteQueue


def test_everything_waiting_is_the_next_batch_in_order():
    queue = WriteQueue()
    for chunk in (b"a", b"bc", b"def"):
        queue.add(chunk)

    assert queue.take() == [b"a", b"bc", b"def"]
    assert queue.writing and queue.held == 6


def test_one_batch_at_a_time():
    queue = WriteQueue()
    queue.add(b"first")
    queue.take()
    queue.add(b"second")

    assert queue.take() is None  # behind the batch being written
    assert queue.done() == 5
    assert queue.take() == [b"second"]


def test_nothing_to_take_when_nothing_waits():
    queue = WriteQueue()
    assert queue.take() is None and not queue.writing and queue.idle


def test_the_batch_being_written_counts_against_memory():
    queue = WriteQueue()
    queue.add(b"x" * (QUEUE_HIGH - 10))
    queue.take()
    assert not queue.full()

    queue.add(b"y" * 10)

    assert queue.held == QUEUE_HIGH and queue.full()


def test_upstream_may_go_on_only_once_memory_is_down_to_the_low_mark():
    queue = WriteQueue()
    queue.add(b"x" * (QUEUE_LOW + 1))
    assert not queue.drained()
    queue.take()
    assert not queue.drained()
    queue.done()
    queue.add(b"x" * QUEUE_LOW)
    assert queue.drained()


def test_dropping_forgets_what_waits_not_the_write_in_flight():
    queue = WriteQueue()
    queue.add(b"in flight")
    queue.take()
    queue.add(b"waiting")

    queue.drop()

    assert queue.waiting() == [] and queue.writing and queue.held == 9
    assert queue.done() == 9 and queue.idle
