"""Who fills a digest, cluster-wide: one claim in Redis per (registry, digest).

A node about to fetch a blob from upstream claims it with
``SET key value NX PX ttl``; the value names the node, the URL other nodes
follow the fill through, and a token of this claim alone.  The holder
renews it every ttl/3 while the fill runs, and only while the value is
still its own (compare-and-extend, in Lua); it releases it at the end with
compare-and-delete, so a node never removes a claim that expired and was
taken by another.  A holder that dies stops renewing, and after the ttl
another node can claim the digest.

Three answers: `Claim` (ours: fill, then release; `when_lost` says if it
was lost on the way), `HeldBy` (follow that node), `LocalOnly` (Redis
cannot say: coalesce this node's own requests, fetch from upstream).  While
Redis is known to be away, `LocalOnly` comes at once.  `HeldBy` may name
this very node (a claim of its previous life, before a restart, not yet
expired): following itself finds no such fill, as following a dead node
does, and the caller falls back the same way.

A claim whose SET got no answer may still have been carried out (a hung
Redis does so when it wakes); it is removed, if still ours, as soon as
Redis answers again, so it does not stand unfilled for a whole ttl.  (If
the SET lands after that removal, it expires by itself.)
"""

from __future__ import annotations

import json
import secrets
from typing import Callable

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..registry.names import Digest
from .commands import Commands, RedisUnavailable
from .keys import KeySpace, Node

log = Logger()

DEFAULT_TTL = 30.0


class BadClaimValue(ValueError):
    """A claim key holds something other than a claim."""


@frozen
class ClaimHolder:
    """What a claim's value says: who holds it, and where to follow it."""

    node_id: str
    url: str
    token: str

    def encode(self) -> bytes:
        return json.dumps(
            {"node": self.node_id, "url": self.url, "token": self.token},
            separators=(",", ":"),
        ).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> ClaimHolder:
        try:
            document = json.loads(data)
            node, url, token = document["node"], document["url"], document["token"]
        except (ValueError, TypeError, KeyError) as e:
            raise BadClaimValue(f"not a fill claim: {data[:80]!r} ({e})") from None
        if not all(isinstance(v, str) for v in (node, url, token)):
            raise BadClaimValue(f"not a fill claim: {data[:80]!r}")
        return cls(node, url, token)


@frozen
class HeldBy:
    """Another fill holds the claim: follow `holder.url`."""

    holder: ClaimHolder


@frozen
class LocalOnly:
    """Redis cannot coordinate this fill (`reason`): coalesce locally."""

    reason: str


@define(eq=False)
class Claim:
    """A fill claim this node holds, renewed until released or lost."""

    key: str
    holder: ClaimHolder
    _commands: Commands
    _clock: IReactorTime
    _ttl: float
    # When the SET, or the latest renewal that worked, was sent: Redis
    # counts the ttl from when it got it, which is no earlier.
    _renewed_at: float
    lost_reason: str | None = field(default=None, init=False)
    released: bool = field(default=False, init=False)
    _loop: LoopingCall | None = field(default=None, init=False)
    _deadline: IDelayedCall | None = field(default=None, init=False)
    _last_error: str = field(default="no answer", init=False)
    _lost_waiters: list[Deferred[str]] = field(factory=list, init=False)

    @property
    def held(self) -> bool:
        return self.lost_reason is None and not self.released

    def start_renewing(self) -> None:
        self._loop = LoopingCall(self._renew)
        self._loop.clock = self._clock
        self._loop.start(self._ttl / 3, now=False)
        self._set_deadline()

    def when_lost(self) -> Deferred[str]:
        """Fires with the reason if the claim is lost while held (taken
        over, or not renewed within its ttl); never after `release`."""
        if self.lost_reason is not None:
            d: Deferred[str] = Deferred()
            d.callback(self.lost_reason)
            return d

        def forget(waiter: Deferred[str]) -> None:
            if waiter in self._lost_waiters:
                self._lost_waiters.remove(waiter)

        waiter: Deferred[str] = Deferred(forget)
        self._lost_waiters.append(waiter)
        return waiter

    def stop_renewing(self) -> None:
        """Leave the claim to expire after its ttl unless released first
        (as a node that froze or died would)."""
        self._stop()

    async def release(self) -> bool:
        """Stop renewing and delete the claim if it is still ours; True if
        it was.  Redis away: False, and the claim expires by itself."""
        self._stop()
        if self.released:
            return False
        self.released = True
        self._cancel_deadline()
        self._lost_waiters.clear()
        try:
            return await self._commands.delete_if_owned(self.key, self.holder.encode())
        except RedisUnavailable as e:
            log.info("fill claim {key} left to expire: {error}", key=self.key, error=str(e))
            return False

    def _ms(self) -> int:
        return max(1, round(self._ttl * 1000))

    def _renew(self) -> Deferred[None]:
        sent = self._clock.seconds()
        d = self._commands.extend_if_owned(self.key, self.holder.encode(), self._ms())
        return d.addCallbacks(self._renewal_answered, self._renewal_failed, callbackArgs=(sent,))

    def _renewal_answered(self, still_ours: bool, sent: float) -> None:
        if not self.held:
            return
        if still_ours:
            self._renewed_at = sent
            self._set_deadline()
        else:
            self._lose("the claim expired or another node holds it")

    def _renewal_failed(self, failure: Failure) -> None:
        # Not renewed is not lost yet: the claim lives until its ttl runs
        # out from the last renewal that worked (the deadline).
        failure.trap(RedisUnavailable)
        self._last_error = failure.getErrorMessage()

    def _set_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        delay = max(0.0, self._renewed_at + self._ttl - self._clock.seconds())
        self._deadline = self._clock.callLater(delay, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if self.held:
            self._lose(f"not renewed within {self._ttl:g}s: {self._last_error}")

    def _lose(self, reason: str) -> None:
        self._stop()
        self._cancel_deadline()
        self.lost_reason = reason
        log.warn("fill claim {key} lost: {reason}", key=self.key, reason=reason)
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(reason)

    def _stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


ClaimOutcome = Claim | HeldBy | LocalOnly


def new_token() -> str:
    return secrets.token_hex(16)


@define(eq=False)
class FillClaims:
    _commands: Commands
    _clock: IReactorTime
    _node: Node
    _keys: KeySpace = KeySpace()
    ttl: float = DEFAULT_TTL
    _new_token: Callable[[], str] = new_token
    # A claim that vanished between our SET NX and our GET is tried again,
    # this many times in all, before giving up to local coalescing.
    _attempts: int = 3
    # Claims whose SET NX got no answer: Redis may still carry it out (a
    # hung server does, once it wakes up), leaving a claim nobody renews
    # or fills.  Removed (if ours) as soon as Redis answers again.
    _unanswered: set[tuple[str, bytes]] = field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        self._commands.health.watch(self._health_changed)

    async def claim(self, registry: str, digest: Digest) -> ClaimOutcome:
        key = self._keys.fill_claim(registry, digest)
        if not self._commands.health.reachable:
            return LocalOnly(f"redis {self._commands.health.state.describe()}")
        mine = ClaimHolder(self._node.id, self._node.url, self._new_token())
        try:
            for _ in range(self._attempts):
                sent = self._clock.seconds()
                if await self._set_if_absent(key, mine):
                    claim = Claim(key, mine, self._commands, self._clock, self.ttl, sent)
                    claim.start_renewing()
                    return claim
                value = await self._commands.get(key)
                if value is not None:
                    return HeldBy(ClaimHolder.decode(value))
        except RedisUnavailable as e:
            return LocalOnly(str(e))
        except BadClaimValue as e:
            return LocalOnly(f"{key}: {e}")
        return LocalOnly(f"{key}: the claim kept changing hands")

    async def take_over(self, registry: str, digest: Digest, gone: ClaimHolder) -> ClaimOutcome:
        """Claim a digest whose holder cannot give it (its node died, or it
        holds no fill): its claim is removed if it is still that holder's
        (compare-and-delete), then claimed as `claim` does, so that nodes
        arriving after a death follow the node that took over rather than
        each fetching the blob again."""
        key = self._keys.fill_claim(registry, digest)
        try:
            if await self._commands.delete_if_owned(key, gone.encode()):
                log.info("fill claim {key} of {node} taken over", key=key, node=gone.node_id)
        except RedisUnavailable as e:
            return LocalOnly(str(e))
        return await self.claim(registry, digest)

    async def holder(self, registry: str, digest: Digest) -> ClaimHolder | None:
        """Who holds the digest's claim, if anyone (RedisUnavailable if
        Redis cannot say; BadClaimValue if the key holds something else)."""
        value = await self._commands.get(self._keys.fill_claim(registry, digest))
        return None if value is None else ClaimHolder.decode(value)

    async def _set_if_absent(self, key: str, mine: ClaimHolder) -> bool:
        value = mine.encode()
        try:
            return await self._commands.set_if_absent(key, value, max(1, round(self.ttl * 1000)))
        except RedisUnavailable:
            if self._commands.health.reachable:
                self._clean_up(key, value)
            else:
                self._unanswered.add((key, value))
            raise

    def _health_changed(self, state: object) -> None:
        if self._commands.health.reachable:
            unanswered, self._unanswered = self._unanswered, set()
            for key, value in sorted(unanswered):
                self._clean_up(key, value)

    def _clean_up(self, key: str, value: bytes) -> None:
        def cleaned(removed: bool) -> None:
            if removed:
                log.info("removed fill claim {key} set after its SET timed out", key=key)

        def failed(failure: Failure) -> None:
            failure.trap(RedisUnavailable)
            self._unanswered.add((key, value))

        self._commands.delete_if_owned(key, value).addCallbacks(cleaned, failed)
