"""Fill claims over the fake commands on a task.Clock: the claim's value,
when renewals happen, when a claim counts as lost, release, and the
"local only" answer when Redis is away.  (That SET NX and the Lua scripts
do what the fake does is shown against a real redis-server in
tests/integration/test_cluster_redis.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mirrorproxy.cluster.claims import (
    BadClaimValue,
    Claim,
    ClaimHolder,
    FillClaims,
    HeldBy,
    LocalOnly,
)
from mirrorproxy.cluster.commands import RedisUnavailable
from mirrorproxy.cluster.keys import KeySpace, Node
from mirrorproxy.registry.names import Digest

from .test_cluster_fakecommands import FakeCommands

DIGEST = Digest("ab" * 32)
KEY = f"mp:docker.io:fill:{DIGEST}"
TTL = 30.0


def claims_for(redis: FakeCommands, name: str = "a", tokens: list[str] | None = None) -> FillClaims:
    supply = iter(tokens or [f"{name}-token-{i}" for i in range(100)])
    return FillClaims(
        redis,
        redis.clock,
        Node(name, f"http://{name}:5000"),
        KeySpace("mp"),
        ttl=TTL,
        new_token=lambda: next(supply),
    )


def result(d: Any) -> Any:
    """The result of a coroutine or Deferred that has finished."""
    if not isinstance(d, Deferred):
        d = Deferred.fromCoroutine(d)
    assert d.called, "not finished"
    outcome = d.result
    d.addErrback(lambda _: None)
    return outcome


def claimed(claims: FillClaims) -> Claim:
    claim = result(claims.claim("docker.io", DIGEST))
    assert isinstance(claim, Claim), claim
    return claim


def test_a_claim_value_names_node_url_and_token_and_reads_back() -> None:
    holder = ClaimHolder("node-1", "https://node-1.internal:5443", "0f" * 16)
    assert holder.encode() == (
        b'{"node":"node-1","url":"https://node-1.internal:5443","token":"' + b"0f" * 16 + b'"}'
    )
    assert ClaimHolder.decode(holder.encode()) == holder


@pytest.mark.parametrize(
    "data", [b"", b"node-1", b"[]", b'{"node":"n","url":"u"}', b'{"node":1,"url":"u","token":"t"}']
)
def test_a_value_that_is_no_claim_is_refused_with_what_it_was(data: bytes) -> None:
    with pytest.raises(BadClaimValue, match="not a fill claim"):
        ClaimHolder.decode(data)


def test_the_first_node_gets_the_claim_the_second_learns_whom_to_follow() -> None:
    redis = FakeCommands(Clock())
    a, b = claims_for(redis, "a"), claims_for(redis, "b")
    claim = claimed(a)
    assert claim.key == KEY
    assert claim.holder == ClaimHolder("a", "http://a:5000", "a-token-0")
    assert redis.values[KEY] == (claim.holder.encode(), TTL)
    assert result(b.claim("docker.io", DIGEST)) == HeldBy(claim.holder)
    assert result(b.holder("docker.io", DIGEST)) == claim.holder
    assert result(b.holder("docker.io", Digest("cd" * 32))) is None


def test_renewals_come_every_third_of_the_ttl_and_keep_the_claim() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    claim = claimed(claims_for(redis))
    redis.calls.clear()
    clock.advance(TTL / 3 - 0.01)
    assert redis.calls == []
    clock.advance(0.01)
    assert redis.calls == [("extend_if_owned", KEY)]
    for _ in range(9):
        clock.advance(TTL / 3)
    assert redis.names() == ["extend_if_owned"] * 10
    assert claim.held
    # Each renewal gave it a whole ttl from then.
    assert redis.values[KEY][1] == clock.seconds() + TTL


def test_a_renewal_that_finds_another_value_loses_the_claim_and_says_so() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    claim = claimed(claims_for(redis))
    lost = claim.when_lost()
    redis.values[KEY] = (b"someone else", None)
    clock.advance(TTL / 3)
    assert result(lost) == "the claim expired or another node holds it"
    assert not claim.held
    redis.calls.clear()
    clock.advance(TTL)
    assert redis.calls == []  # no more renewals
    assert result(claim.when_lost()) == "the claim expired or another node holds it"


def test_renewals_that_fail_keep_the_claim_until_its_ttl_from_the_last_one_that_worked() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    claim = claimed(claims_for(redis))
    lost = claim.when_lost()
    clock.advance(TTL / 3)  # renewed at 10
    redis.away = "Connection refused"
    clock.advance(TTL / 3)  # 20: failed
    clock.advance(TTL / 3)  # 30: failed, 20s since the last renewal
    assert claim.held and not lost.called
    clock.advance(TTL / 3)  # 40: 30s since the last renewal: it may be gone
    assert result(lost).startswith("not renewed within 30s: extend_if_owned ")
    assert "Connection refused" in result(lost)
    assert not claim.held


def test_a_renewal_that_fails_once_then_works_keeps_the_claim() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    claim = claimed(claims_for(redis))
    redis.away = "timeout"
    clock.advance(TTL / 3)  # 10: failed
    redis.away = None
    clock.advance(TTL / 3)  # 20: renewed, before the claim (set at 0) ran out
    for _ in range(6):
        clock.advance(TTL / 3)
    assert claim.held


def test_a_slow_renewal_is_not_doubled_by_the_next_tick() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    claimed(claims_for(redis))
    redis.calls.clear()
    redis.hang = True
    clock.advance(TTL / 3)
    clock.advance(TTL / 3)
    assert redis.names() == ["extend_if_owned"]
    redis.hang = False
    redis.hung[0].callback(True)
    clock.advance(TTL / 3)
    assert redis.names() == ["extend_if_owned", "extend_if_owned"]


def test_release_deletes_a_claim_still_ours_and_stops_renewing() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    claim = claimed(claims_for(redis))
    lost = claim.when_lost()
    assert result(claim.release()) is True
    assert KEY not in redis.values
    redis.calls.clear()
    clock.advance(TTL * 2)
    assert redis.calls == []
    assert not lost.called  # released is not lost
    assert result(claim.release()) is False
    assert redis.calls == []


def test_release_after_the_claim_changed_hands_deletes_nothing() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    a, b = claims_for(redis, "a"), claims_for(redis, "b")
    frozen = claimed(a)
    frozen.stop_renewing()
    clock.advance(TTL)
    taken = claimed(b)
    assert result(frozen.release()) is False
    assert redis.values[KEY][0] == taken.holder.encode()


def test_redis_away_answers_local_only_at_once_without_asking_it() -> None:
    redis = FakeCommands(Clock())
    redis.health.failed("Connection refused")
    redis.calls.clear()
    answer = result(claims_for(redis).claim("docker.io", DIGEST))
    assert answer == LocalOnly("redis unreachable: Connection refused")
    assert redis.calls == []


def test_a_call_that_fails_answers_local_only_with_its_reason() -> None:
    redis = FakeCommands(Clock())
    redis.away = "no answer within 4s"
    answer = result(claims_for(redis).claim("docker.io", DIGEST))
    assert answer == LocalOnly(f"set_if_absent {KEY}: no answer within 4s")


def test_a_claim_whose_set_timed_out_is_removed_when_redis_answers_again() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    claims = claims_for(redis)
    redis.hang = True
    pending = Deferred.fromCoroutine(claims.claim("docker.io", DIGEST))
    # Redis got the SET NX and will carry it out; its answer never came,
    # and the client gave up (as RedisClient does: health first, then the error).
    redis.values[KEY] = (ClaimHolder("a", "http://a:5000", "a-token-0").encode(), None)
    redis.health.failed("no answer within 4s")
    redis.hung.pop().errback(RedisUnavailable(f"SET NX {KEY}: no answer within 4s"))
    assert result(pending) == LocalOnly(f"SET NX {KEY}: no answer within 4s")
    assert KEY in redis.values
    redis.hang = False
    redis.calls.clear()
    redis.health.succeeded()  # the PING is answered
    assert redis.calls == [("delete_if_owned", KEY)]
    assert KEY not in redis.values
    assert isinstance(result(claims_for(redis, "b").claim("docker.io", DIGEST)), Claim)


def test_a_cleanup_that_fails_is_tried_at_the_next_recovery() -> None:
    redis = FakeCommands(Clock())
    claims = claims_for(redis)
    redis.hang = True
    pending = Deferred.fromCoroutine(claims.claim("docker.io", DIGEST))
    redis.values[KEY] = (ClaimHolder("a", "http://a:5000", "a-token-0").encode(), None)
    redis.health.failed("timeout")
    redis.hung.pop().errback(RedisUnavailable("timeout"))
    result(pending)
    redis.hang = False
    redis.away = "Connection refused"
    redis.health.succeeded()  # a PING got through, the cleanup does not
    assert KEY in redis.values
    redis.away = None
    redis.health.failed("flapping")
    redis.health.succeeded()
    assert KEY not in redis.values


def test_a_claim_that_vanished_before_it_was_read_is_tried_again() -> None:
    redis = FakeCommands(Clock())
    redis.values[KEY] = (b"gone before GET", None)
    original_get = redis.get

    def get_after_expiry(key: str) -> Deferred[bytes | None]:
        redis.values.pop(key, None)
        return original_get(key)

    redis.get = get_after_expiry  # type: ignore[method-assign]
    claim = claimed(claims_for(redis))
    assert redis.names() == ["set_if_absent", "get", "set_if_absent"]
    assert claim.held


def test_holder_reports_redis_away() -> None:
    redis = FakeCommands(Clock(), away="Connection refused")
    outcome = result(claims_for(redis).holder("docker.io", DIGEST))
    assert isinstance(outcome.value, RedisUnavailable)


def test_a_renewal_still_waiting_at_the_deadline_does_not_keep_the_claim() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    claim = claimed(claims_for(redis))
    lost = claim.when_lost()
    redis.hang = True
    clock.advance(TTL / 3)  # 10: sent, never answered
    clock.advance(TTL - TTL / 3 - 0.001)
    assert claim.held
    clock.advance(0.001)  # 30: the ttl from the SET ran out
    assert result(lost) == "not renewed within 30s: no answer"
    redis.hung[0].callback(True)  # too late to count
    assert not claim.held


def test_the_ttl_counts_from_when_the_set_was_sent_not_answered() -> None:
    clock = Clock()
    redis = FakeCommands(clock)
    redis.hang = True
    pending = Deferred.fromCoroutine(claims_for(redis).claim("docker.io", DIGEST))
    clock.advance(4)
    redis.hang = False
    redis.away = "Connection refused"
    redis.hung.pop().callback(True)
    claim = result(pending)
    lost = claim.when_lost()
    clock.advance(TTL - 4 - 0.001)
    assert not lost.called
    clock.advance(0.001)
    assert lost.called


def test_every_unanswered_claim_of_a_digest_is_cleaned_up_not_just_the_last() -> None:
    redis = FakeCommands(Clock())
    claims = claims_for(redis)
    redis.hang = True
    first = Deferred.fromCoroutine(claims.claim("docker.io", DIGEST))
    second = Deferred.fromCoroutine(claims.claim("docker.io", DIGEST))
    redis.health.failed("timeout")
    for pending in redis.hung:
        pending.errback(RedisUnavailable("timeout"))
    assert isinstance(result(first), LocalOnly) and isinstance(result(second), LocalOnly)
    # Redis carried out the first SET; the second found the key taken.
    redis.values[KEY] = (ClaimHolder("a", "http://a:5000", "a-token-0").encode(), None)
    redis.hang = False
    redis.health.succeeded()
    assert redis.names()[-2:] == ["delete_if_owned", "delete_if_owned"]
    assert KEY not in redis.values
