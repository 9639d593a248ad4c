"""Resuming a body that ended early: a few tries with pauses between, what
an upstream that ignores Range sends again skipped, and a connection dropped
while held for slow clients asked again without spending a try."""

from __future__ import annotations

from mirrorproxy.cache.fill.resumes import RESUME_BACKOFF, Resumer


def test_tries_follow_the_backoff_then_stop():
    resumer = Resumer()

    delays = [resumer.next_delay(length_known=True) for _ in range(len(RESUME_BACKOFF) + 1)]

    assert delays == [*RESUME_BACKOFF, None]
    assert resumer.tries == len(RESUME_BACKOFF)


def test_a_body_without_a_length_is_never_resumed():
    resumer = Resumer()

    assert resumer.next_delay(length_known=False) is None
    assert resumer.tries == 0


def test_a_partial_answer_is_kept_whole():
    resumer = Resumer()
    resumer.answered(206, 1000)

    assert resumer.skip == 0


def test_a_whole_answer_to_a_range_skips_what_the_fill_has():
    resumer = Resumer()
    resumer.answered(200, 5)

    assert resumer.fresh(b"abc") == b""
    assert resumer.fresh(b"defgh") == b"fgh"
    assert resumer.skip == 0
    assert resumer.fresh(b"ijk") == b"ijk"


def test_a_connection_dropped_while_held_is_asked_again_when_needed():
    resumer = Resumer()

    resumer.held_connection_dropped()
    assert resumer.reconnect_when_needed
    resumer.reconnecting()

    assert not resumer.reconnect_when_needed
    assert resumer.tries == 0  # no try spent
