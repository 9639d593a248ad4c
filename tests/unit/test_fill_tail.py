"""The relay tail: the bytes a cache that cannot be written still relays to
clients, kept until the slowest has sent them, and no more than that."""

from __future__ import annotations

from collections import deque

from mirrorproxy.cache.fill.tail import TAIL_HIGH, TAIL_LOW, RelayTail


def tail_of(start: int, *chunks: bytes) -> RelayTail:
    return RelayTail(start, deque(chunks))


def test_a_tail_covers_its_chunks_from_its_start():
    tail = tail_of(100, b"abc", b"defg")

    assert (tail.start, tail.end) == (100, 107)
    tail.add(b"h")
    assert tail.end == 108


def test_reads_stop_at_a_chunks_end():
    tail = tail_of(100, b"abc", b"defg")

    assert tail.read(100, 10) == b"abc"
    assert tail.read(101, 1) == b"b"
    assert tail.read(103, 10) == b"defg"
    assert tail.read(105, 10) == b"fg"


def test_nothing_is_read_outside_the_tail():
    tail = tail_of(100, b"abc")

    assert tail.read(99, 10) == b""
    assert tail.read(103, 10) == b""


def test_only_chunks_every_follower_has_sent_are_dropped():
    tail = tail_of(0, b"abc", b"def", b"ghi")

    tail.trim(5)  # in the middle of the second chunk
    assert (tail.start, tail.end) == (3, 9)
    assert tail.read(3, 10) == b"def" and tail.read(0, 10) == b""

    tail.trim(9)
    assert (tail.start, tail.end) == (9, 9)


def test_upstream_waits_while_the_tail_is_full_until_it_drains():
    tail = tail_of(0, b"x" * (TAIL_HIGH - TAIL_LOW), b"y" * (TAIL_LOW - 1))
    assert not tail.full()
    tail.add(b"z")
    assert tail.full() and not tail.drained()

    tail.trim(TAIL_HIGH - TAIL_LOW)  # the slowest follower sent the first chunk

    assert tail.drained() and not tail.full()
