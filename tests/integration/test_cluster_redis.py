"""Coordination through a real redis-server, two nodes in this process.

Each "node" is a `Coordination` of its own (its own connections, thread
pool and pub/sub thread) on the real reactor, with short timeouts and a
short claim ttl so expiry happens within the test.  What is asserted is
what the cache will rely on: one winner per digest, a claim that outlives
its ttl while renewed and expires when not, a release that never removes
another node's claim, tag records and their revalidation lock shared,
events delivered to the other node and recognised as its own by the
sender, and, with Redis hung or gone, answers within the bound, "local
only" for claims, health saying why, and everything back when Redis is.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
import redis
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import deferLater

from mirrorproxy.cluster.address import parse_redis_url
from mirrorproxy.cluster.claims import Claim, ClaimHolder, HeldBy, LocalOnly
from mirrorproxy.cluster.commands import RedisUnavailable
from mirrorproxy.cluster.coordination import Coordination
from mirrorproxy.cluster.events import CacheStampChanged, Evict, Purge, Received
from mirrorproxy.cluster.health import Reachable, Unreachable
from mirrorproxy.cluster.keys import KeySpace, Node
from mirrorproxy.cluster.redisclient import RedisTimeouts
from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.values import TagRecord

from ..testca import TestCA
from .conftest import show_log_on_failure
from .harness.redisserver import RedisServer
from .harness.tools import require_tool

pytestmark = pytest.mark.integration

T = TypeVar("T")

TIMEOUTS = RedisTimeouts(connect=0.5, command=0.5, ping_interval=0.2)
# The longest a call may take with Redis hung, plus the reactor's slack.
BOUND = TIMEOUTS.call_bound + 0.5
CLAIM_TTL = 1.5
REGISTRY = "registry-1.docker.io"
DIGEST = Digest("ab" * 32)
RECORD = TagRecord(Digest("cd" * 32), "application/vnd.oci.image.index.v1+json", 1234, 1.5e9)


def node(server: RedisServer, name: str, prefix: str = "test") -> Coordination:
    return Coordination.build(
        reactor,
        parse_redis_url(server.url()),
        Node(name, f"http://{name}.internal:5000"),
        KeySpace(prefix),
        TIMEOUTS,
        claim_ttl=CLAIM_TTL,
    )


@pytest_twisted.async_yield_fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[tuple[Coordination, Coordination]]:
    a, b = node(redis_server, "node-a"), node(redis_server, "node-b")
    for each in (a, b):
        each.start()
    await within(gatherResults([a.events.when_subscribed(), b.events.when_subscribed()]), 5)
    await until(lambda: a.health.reachable and b.health.reachable, 5, "both nodes see Redis")
    yield a, b
    await within(gatherResults([a.stop(), b.stop()]), 5)


def within(d: Deferred[T], seconds: float) -> Deferred[T]:
    return d.addTimeout(seconds, reactor)


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `condition` on the reactor until it holds, or fail saying `what`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await deferLater(reactor, 0.02, lambda: None)


async def pause(seconds: float) -> None:
    """Let time pass (for a ttl to run out), not to wait for an event."""
    await deferLater(reactor, seconds, lambda: None)


def inspect(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)


def claim_key(digest: Digest = DIGEST) -> str:
    return KeySpace("test").fill_claim(REGISTRY, digest)


# Claims


@pytest_twisted.ensureDeferred
async def test_two_nodes_racing_for_each_digest_make_exactly_one_winner(
    nodes: tuple[Coordination, Coordination],
) -> None:
    a, b = nodes
    digests = [Digest(f"{i:064x}") for i in range(20)]
    answers = await within(
        gatherResults(
            [
                Deferred.fromCoroutine(n.claims.claim(REGISTRY, d))
                for d in digests
                for n in (a, b)
            ]
        ),
        10,
    )
    for d, (of_a, of_b) in zip(digests, zip(answers[0::2], answers[1::2])):
        winners = [x for x in (of_a, of_b) if isinstance(x, Claim)]
        assert len(winners) == 1, (d, of_a, of_b)
        (winner,) = winners
        loser = of_b if winner is of_a else of_a
        # The loser learns whom to follow: the winner's node and URL.
        assert loser == HeldBy(winner.holder)
        assert await b.claims.holder(REGISTRY, d) == winner.holder
    for answer in answers:
        if isinstance(answer, Claim):
            assert await answer.release() is True


@pytest_twisted.ensureDeferred
async def test_a_renewed_claim_outlives_its_ttl(
    nodes: tuple[Coordination, Coordination], redis_server: RedisServer
) -> None:
    a, b = nodes
    claim = await a.claims.claim(REGISTRY, DIGEST)
    assert isinstance(claim, Claim)
    await pause(CLAIM_TTL * 2.5)
    assert claim.held
    assert await b.claims.claim(REGISTRY, DIGEST) == HeldBy(claim.holder)
    assert 0 < inspect(redis_server).pttl(claim_key()) <= CLAIM_TTL * 1000
    assert await claim.release() is True
    assert inspect(redis_server).exists(claim_key()) == 0


@pytest_twisted.ensureDeferred
async def test_a_claim_not_renewed_expires_and_another_node_takes_it(
    nodes: tuple[Coordination, Coordination], redis_server: RedisServer
) -> None:
    a, b = nodes
    frozen = await a.claims.claim(REGISTRY, DIGEST)
    assert isinstance(frozen, Claim)
    frozen.stop_renewing()  # as a node that froze or died mid-fill
    started = time.monotonic()
    taken: list[Any] = []

    async def b_claims() -> bool:
        taken.append(await b.claims.claim(REGISTRY, DIGEST))
        return isinstance(taken[-1], Claim)

    while not await b_claims():
        assert taken[-1] == HeldBy(frozen.holder)
        assert time.monotonic() - started < CLAIM_TTL + 2, "the claim never expired"
        await pause(0.05)
    assert time.monotonic() - started >= CLAIM_TTL * 0.9
    new = taken[-1]
    # The frozen node wakes up and finishes: its release must not remove
    # the claim the other node holds now.
    assert await frozen.release() is False
    assert ClaimHolder.decode(inspect(redis_server).get(claim_key())) == new.holder
    assert await a.claims.holder(REGISTRY, DIGEST) == new.holder
    assert await new.release() is True


@pytest_twisted.ensureDeferred
async def test_a_node_that_stops_loses_its_claim_after_the_ttl_and_is_told(
    nodes: tuple[Coordination, Coordination], redis_server: RedisServer
) -> None:
    a, b = nodes
    claim = await a.claims.claim(REGISTRY, DIGEST)
    assert isinstance(claim, Claim)
    lost = claim.when_lost()
    await a.stop()  # its renewals now fail
    reason = await within(lost, CLAIM_TTL + BOUND + 1)
    assert reason.startswith(f"not renewed within {CLAIM_TTL:g}s: ")
    assert not claim.held
    await until(lambda: inspect(redis_server).exists(claim_key()) == 0, 2, "claim expired")
    assert isinstance(await b.claims.claim(REGISTRY, DIGEST), Claim)


@pytest_twisted.ensureDeferred
async def test_release_by_a_non_owner_does_nothing(
    nodes: tuple[Coordination, Coordination], redis_server: RedisServer
) -> None:
    a, b = nodes
    claim = await a.claims.claim(REGISTRY, DIGEST)
    assert isinstance(claim, Claim)
    impostor = ClaimHolder("node-b", "http://node-b.internal:5000", "not-the-token")
    assert await b.client.delete_if_owned(claim_key(), impostor.encode()) is False
    assert await b.client.extend_if_owned(claim_key(), impostor.encode(), 60_000) is False
    assert await b.claims.holder(REGISTRY, DIGEST) == claim.holder
    assert inspect(redis_server).pttl(claim_key()) <= CLAIM_TTL * 1000
    assert await claim.release() is True
    assert await claim.release() is False
    assert isinstance(await b.claims.claim(REGISTRY, DIGEST), Claim)


@pytest_twisted.ensureDeferred
async def test_a_claim_taken_over_is_reported_lost_to_its_holder(
    nodes: tuple[Coordination, Coordination], redis_server: RedisServer
) -> None:
    a, b = nodes
    claim = await a.claims.claim(REGISTRY, DIGEST)
    assert isinstance(claim, Claim)
    lost = claim.when_lost()
    # Someone else's value in its place (an operator, a node with a clock
    # gone wrong): the next renewal finds it is not ours any more.
    other = ClaimHolder("node-b", "http://node-b.internal:5000", "t")
    inspect(redis_server).set(claim_key(), other.encode(), px=60_000)
    reason = await within(lost, CLAIM_TTL)
    assert reason == "the claim expired or another node holds it"
    assert await claim.release() is False
    assert ClaimHolder.decode(inspect(redis_server).get(claim_key())) == other


# Shared tags


@pytest_twisted.ensureDeferred
async def test_tag_records_are_shared_between_nodes(
    nodes: tuple[Coordination, Coordination],
) -> None:
    a, b = nodes
    assert await b.tags.get(REGISTRY, "library/alpine", "3.20") is None
    await a.tags.put(REGISTRY, "library/alpine", "3.20", RECORD)
    docker_v2 = "application/vnd.docker.distribution.manifest.v2+json"
    narrower = TagRecord(Digest("ef" * 32), docker_v2, 99, 2e9)
    await a.tags.put(REGISTRY, "library/alpine", "3.20", narrower, variant="0123456789abcdef")
    assert await b.tags.get(REGISTRY, "library/alpine", "3.20") == RECORD
    assert await b.tags.get(REGISTRY, "library/alpine", "3.20", "0123456789abcdef") == narrower
    assert await b.tags.get("other-registry", "library/alpine", "3.20") is None
    assert await b.tags.get(REGISTRY, "library/alpine", "3.21") is None


@pytest_twisted.ensureDeferred
async def test_one_node_at_a_time_revalidates_a_tag(
    nodes: tuple[Coordination, Coordination],
) -> None:
    a, b = nodes
    a.tags.lock_ttl = b.tags.lock_ttl = 0.5
    first = await within(
        DeferredList(
            [
                Deferred.fromCoroutine(n.tags.revalidation_lock(REGISTRY, "library/alpine", "3"))
                for n in (a, b, a, b)
            ]
        ),
        5,
    )
    locks = [lock for ok, lock in first if ok and lock is not None]
    assert len(locks) == 1, first
    assert await b.tags.revalidation_lock(REGISTRY, "library/alpine", "latest") is not None
    owner = a if any(ok and lock is not None for ok, lock in first[0::2]) else b
    other = b if owner is a else a
    # Released once the record is put: the other node may revalidate next.
    assert await owner.tags.release(locks[0]) is True
    again = await other.tags.revalidation_lock(REGISTRY, "library/alpine", "3")
    assert again is not None
    assert await owner.tags.revalidation_lock(REGISTRY, "library/alpine", "3") is None
    # Never released (its node died): it expires after its ttl.
    started = time.monotonic()
    while (late := await owner.tags.revalidation_lock(REGISTRY, "library/alpine", "3")) is None:
        assert time.monotonic() - started < 3, "the revalidation lock never expired"
        await pause(0.05)
    assert time.monotonic() - started >= 0.4
    assert await other.tags.release(again) is False  # expired, and taken since
    assert await owner.tags.release(late) is True


# Events


@pytest_twisted.ensureDeferred
async def test_events_reach_the_other_node_and_the_sender_knows_its_own(
    nodes: tuple[Coordination, Coordination],
) -> None:
    a, b = nodes
    heard_by_a: list[Received] = []
    heard_by_b: list[Received] = []
    a.events.listen(heard_by_a.append)
    b.events.listen(heard_by_b.append)
    sent = [Purge(REGISTRY, "library/alpine", "3.20"), Purge(REGISTRY, "library/debian"),
            Evict(REGISTRY, DIGEST), CacheStampChanged()]  # fmt: skip
    for event in sent:
        assert await a.events.publish(event) == 2  # both nodes subscribed
    await until(lambda: len(heard_by_b) == len(sent) == len(heard_by_a), 5, "all delivered")
    assert heard_by_b == [Received("node-a", e, own=False) for e in sent]
    assert heard_by_a == [Received("node-a", e, own=True) for e in sent]


# Redis hung, gone, back


@pytest_twisted.ensureDeferred
async def test_a_hung_redis_answers_local_only_within_the_bound_and_recovers(
    nodes: tuple[Coordination, Coordination], redis_server: RedisServer
) -> None:
    a, b = nodes
    # Long enough that a claim left behind would outlive the test.
    a.claims.ttl = 60.0
    paused_at = reactor.seconds()
    redis_server.pause()
    started = time.monotonic()
    answer = await within(Deferred.fromCoroutine(a.claims.claim(REGISTRY, DIGEST)), BOUND + 1)
    assert time.monotonic() - started < BOUND
    assert isinstance(answer, LocalOnly), answer
    assert isinstance(a.health.state, Unreachable)
    assert paused_at <= a.health.state.since <= reactor.seconds()
    # Known to be away: the next answers come at once, not after a timeout.
    started = time.monotonic()
    assert isinstance(await a.claims.claim(REGISTRY, Digest("01" * 32)), LocalOnly)
    with pytest.raises(RedisUnavailable):
        await a.tags.get(REGISTRY, "library/alpine", "3.20")
    assert time.monotonic() - started < TIMEOUTS.command / 2
    # The other node notices through its PING alone.
    await until(lambda: not b.health.reachable, BOUND + 1, "node b sees Redis hung")

    redis_server.resume()
    await until(lambda: a.health.reachable and b.health.reachable, 5, "Redis back for both")
    assert isinstance(a.health.state, Reachable)
    # The hung server carried out the SET NX that timed out when it woke;
    # the node removes that claim (nobody would fill or renew it).
    await until(lambda: inspect(redis_server).exists(claim_key()) == 0, 2, "orphan removed")
    claim = await a.claims.claim(REGISTRY, DIGEST)
    assert isinstance(claim, Claim)
    assert await claim.release() is True


@pytest_twisted.ensureDeferred
async def test_redis_gone_then_restarted_nodes_fall_back_then_resubscribe(
    nodes: tuple[Coordination, Coordination], redis_server: RedisServer
) -> None:
    a, b = nodes
    redis_server.kill()
    started = time.monotonic()
    answer = await within(Deferred.fromCoroutine(a.claims.claim(REGISTRY, DIGEST)), BOUND)
    assert isinstance(answer, LocalOnly), answer
    await until(lambda: not a.health.reachable and not b.health.reachable, BOUND, "both see it")
    assert time.monotonic() - started < BOUND
    # Whatever failed first (a pooled connection closed, the subscription
    # lost), the PINGs that follow are refused, and health says so.
    await until(lambda: "Connection refused" in a.health.state.describe(), BOUND, "refused")
    assert a.health.state.describe().startswith("unreachable: ")
    assert isinstance(await a.claims.claim(REGISTRY, DIGEST), LocalOnly)
    with pytest.raises(RedisUnavailable):
        await b.events.publish(CacheStampChanged())
    await until(lambda: not a.events.subscribed and not b.events.subscribed, BOUND, "unsubscribed")
    subscriptions = a.events.subscriptions

    redis_server.restart()
    await within(gatherResults([a.events.when_subscribed(), b.events.when_subscribed()]), 10)
    await until(lambda: a.health.reachable and b.health.reachable, 5, "Redis back for both")
    assert a.events.subscriptions == subscriptions + 1
    heard: list[Received] = []
    a.events.listen(heard.append)
    assert await b.events.publish(Evict(REGISTRY, DIGEST)) == 2
    await until(lambda: len(heard) == 1, 5, "an event after the restart")
    assert heard == [Received("node-b", Evict(REGISTRY, DIGEST), own=False)]
    claim = await b.claims.claim(REGISTRY, DIGEST)
    assert isinstance(claim, Claim)
    assert await a.claims.claim(REGISTRY, DIGEST) == HeldBy(claim.holder)
    assert await claim.release() is True


@pytest_twisted.ensureDeferred
async def test_a_password_in_the_url_is_used_and_a_wrong_one_is_reported(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    binary = require_tool("redis-server", "redis-server")
    server = RedisServer.start(binary, tmp_path / "redis", password="s3cret/with:odd@chars")
    show_log_on_failure(request, "redis-server", server.log_path)
    try:
        right = node(server, "node-a")
        right.start()
        await until(lambda: right.health.reachable, 5, "the password is accepted")
        assert isinstance(await right.claims.claim(REGISTRY, DIGEST), Claim)
        await right.stop()

        wrong = Coordination.build(
            reactor,
            parse_redis_url(f"redis://:nope@127.0.0.1:{server.port}/0"),
            Node("node-b", "http://node-b.internal:5000"),
            timeouts=TIMEOUTS,
        )
        wrong.start()
        await until(lambda: wrong.health.failures > 0, 5, "the wrong password is refused")
        state = wrong.health.state
        assert isinstance(state, Unreachable)
        assert "password" in state.reason.lower() or "auth" in state.reason.lower(), state.reason
        assert isinstance(await wrong.claims.claim(REGISTRY, DIGEST), LocalOnly)
        await wrong.stop()
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_rediss_checks_the_servers_certificate_against_the_ca_given(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    binary = require_tool("redis-server", "redis-server")
    ca = TestCA.generate()
    files = ca.issue_server(tmp_path / "tls")
    server = RedisServer.start(binary, tmp_path / "redis", tls=files)
    show_log_on_failure(request, "redis-server", server.log_path)
    address = parse_redis_url(server.url())
    assert address.tls
    try:
        trusting = Coordination.build(
            reactor, address, Node("node-a", "http://a"), timeouts=TIMEOUTS,
            ca_file=str(files.ca_certificate),
        )  # fmt: skip
        trusting.start()
        await within(trusting.events.when_subscribed(), 5)
        await until(lambda: trusting.health.reachable, 5, "TLS with the test CA")
        claim = await trusting.claims.claim(REGISTRY, DIGEST)
        assert isinstance(claim, Claim)
        await trusting.stop()

        # The system's CAs do not know the test CA: refused, and said why.
        doubting = Coordination.build(
            reactor, address, Node("node-b", "http://b"), timeouts=TIMEOUTS
        )
        doubting.start()
        await until(lambda: doubting.health.failures > 0, 5, "the certificate is refused")
        state = doubting.health.state
        assert isinstance(state, Unreachable)
        assert "certificate verify failed" in state.reason, state.reason
        assert isinstance(await doubting.claims.claim(REGISTRY, DIGEST), LocalOnly)
        await doubting.stop()
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_a_claim_is_taken_over_only_from_the_holder_named(
    nodes: tuple[Coordination, Coordination], redis_server: RedisServer
) -> None:
    a, b = nodes
    claim = await a.claims.claim(REGISTRY, DIGEST)
    assert isinstance(claim, Claim)
    someone_else = ClaimHolder("node-c", "http://node-c.internal:5000", "other-token")

    # Naming a holder that is not the one in Redis removes nothing.
    kept = await b.claims.take_over(REGISTRY, DIGEST, someone_else)
    assert kept == HeldBy(claim.holder)
    # Naming the holder (found dead) hands the claim over.
    taken = await b.claims.take_over(REGISTRY, DIGEST, claim.holder)
    assert isinstance(taken, Claim)
    assert await a.claims.holder(REGISTRY, DIGEST) == taken.holder
    await taken.release()
