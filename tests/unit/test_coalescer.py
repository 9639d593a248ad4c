"""One piece of work for everyone who asks while it runs; a waiter that
gives up detaches without stopping it for the others."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, fail

from mirrorproxy.common.coalescer import Coalescer


def test_callers_while_the_work_runs_share_it():
    coalescer = Coalescer()
    started: list[Deferred[str]] = []

    def work() -> Deferred[str]:
        started.append(Deferred())
        return started[-1]

    first, second = coalescer.run("k", work), coalescer.run("k", work)
    other = coalescer.run("other", work)
    started[0].callback("done")

    assert len(started) == 2  # "k" once, "other" once
    assert (first.result, second.result) == ("done", "done")
    assert not other.called


def test_work_that_finished_runs_again_for_the_next_caller():
    coalescer = Coalescer()
    runs: list[int] = []

    def work() -> Deferred[int]:
        runs.append(1)
        d: Deferred[int] = Deferred()
        d.callback(len(runs))
        return d

    assert coalescer.run("k", work).result == 1
    assert coalescer.run("k", work).result == 2


def test_a_failure_reaches_every_waiter_and_is_not_left_unhandled():
    coalescer = Coalescer()
    pending: Deferred[None] = Deferred()
    waiters = [coalescer.run("k", lambda: pending) for _ in range(3)]
    errors: list[str] = []
    for waiter in waiters:
        waiter.addErrback(lambda f: errors.append(f.getErrorMessage()))

    pending.errback(ValueError("upstream said no"))

    assert errors == ["upstream said no"] * 3
    assert not coalescer.running("k")


def test_a_waiter_that_gives_up_does_not_stop_the_work_for_the_others():
    coalescer = Coalescer()
    cancelled: list[object] = []
    shared: Deferred[str] = Deferred(cancelled.append)
    leaving = coalescer.run("k", lambda: shared)
    staying = coalescer.run("k", lambda: shared)

    leaving.cancel()
    shared.callback("done")

    assert leaving.result.check(CancelledError) is not None
    leaving.addErrback(lambda _: None)
    assert cancelled == []
    assert staying.result == "done"


def test_work_that_fails_at_once_still_answers_its_caller():
    coalescer = Coalescer()

    d = coalescer.run("k", lambda: fail(RuntimeError("at once")))

    assert d.result.getErrorMessage() == "at once"
    d.addErrback(lambda _: None)
    assert not coalescer.running("k")
