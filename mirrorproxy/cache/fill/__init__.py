"""One upstream fetch of a blob into a spool file, verified, then committed.

Clients never read the upstream body: they follow the spool file (see
`follow`), and the fill tells them how far they may read.  The last byte is
held back until the length and digest check out, so no client ever sees a
clean end to a wrong or short body; on a failure every follower aborts and
nothing is committed.

A `Fill` runs the fetch; each of its parts, a module here, keeps its own
state and answers its own questions:

- `state`: where the fill is in its life, and why one failed;
- `body`: the upstream connection: paused, resumed, watched for silence;
- `resumes`: asking for the rest with a Range when a body ends early;
- `spool`: writing and hashing in the thread pool, relaying from memory
  when the file cannot be written, committing;
- `writes`, `tail`, `followers`: when upstream must wait: for the disk, for
  a relay's slowest client, for the fastest client.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from ...common.runner import Runner
from ...registry.names import Digest
from ...storage import ICacheStore
from ...upstream.answers import content_length
from ...upstream.bodies import discard_body
from .body import BodyEnd, UpstreamBody
from .followers import Followers
from .origin import BlobOrigin
from .resumes import Resumer
from .spool import SpoolWriter
from .state import FailureKind, FillState

log = Logger()

STARTING, STREAMING, VERIFIED, COMMITTED, FAILED = (
    FillState.STARTING,
    FillState.STREAMING,
    FillState.VERIFIED,
    FillState.COMMITTED,
    FillState.FAILED,
)


class FillFailed(Exception):
    """The fill could not produce a verified blob."""


class FillGone(Exception):
    """The fill is over and its file is where the cache keeps it: look there."""


@define(eq=False)
class Fill:
    """Fetches one blob once, for however many clients follow it."""

    registry: str
    digest: Digest
    _store: ICacheStore
    _run: Runner
    _clock: IReactorTime
    _silence: float
    # Upstream, or in a cluster what `origin` says.
    _origin: BlobOrigin
    _repository: str
    expected: int | None = None
    received: int = 0
    state: FillState = STARTING
    reason: str | None = None
    failure_kind: FailureKind | None = None
    upstream_pauses: int = 0  # how often upstream waited for the disk (or the relay tail)
    lead_pauses: int = 0  # how often upstream waited for the fastest client
    done: Deferred[None] = field(factory=Deferred)
    _body: UpstreamBody = field(init=False)
    _spool: SpoolWriter = field(init=False)
    _followers: Followers = field(factory=Followers)
    _resumer: Resumer = field(factory=Resumer)
    _watchers: list[Deferred[None]] = field(factory=list)
    _joiners: list[Deferred[int]] = field(factory=list)  # waiting for upstream's answer
    _start_error: BaseException | None = None

    def __attrs_post_init__(self) -> None:
        self._body = UpstreamBody(self._clock, self._silence)
        self._spool = SpoolWriter(self._store, self._run, self.digest, self._batch_done, self._hash_failed)

    @property
    def written(self) -> int:
        """Bytes in the spool file."""
        return self._spool.written

    @property
    def relaying(self) -> bool:
        """Whether the spool file could not take the blob: it is relayed
        from memory, and nothing will be committed."""
        return self._spool.tail is not None

    @property
    def resumes(self) -> int:
        """How often upstream was asked for the rest after a failure."""
        return self._resumer.tries

    # -- what followers see (source.Source) --------------------------------

    def readable(self) -> int:
        tail = self._spool.tail
        available = self._spool.written if tail is None else tail.end
        if self.state.verified:
            return available
        # The last byte waits for verification: no client can see a whole
        # body, whether its length was announced or not, before it is checked.
        if self.expected is not None:
            return min(available, self.expected - 1)
        return max(available - 1, 0)

    def in_file(self) -> int:
        return self._spool.written

    def read_relayed(self, offset: int, size: int) -> bytes:
        tail = self._spool.tail
        return b"" if tail is None else tail.read(offset, size)

    def follower_sent(self, follower: object, offset: int) -> None:
        self._followers.at(follower, offset)
        if self._spool.tail is not None:
            self._trim_tail()
        self._let_upstream_go()

    def follower_left(self, follower: object) -> None:
        self._followers.left(follower)
        if self._spool.tail is not None and self.state is STREAMING:
            if not self._followers:
                self._fail("every client left a blob that could not be cached", kind=FailureKind.DISK)
                return
            self._trim_tail()
        self._let_upstream_go()

    def finished(self) -> bool:
        return self.state.verified

    def failed(self) -> bool:
        return self.state is FAILED

    def changed(self) -> Deferred[None]:
        d: Deferred[None] = Deferred(lambda d: self._watchers.remove(d) if d in self._watchers else None)
        self._watchers.append(d)
        return d

    def join(self) -> Deferred[int]:
        """A descriptor of the spool file, once upstream has answered.

        Each follower gets its own (and closes it): it keeps reading through
        it after the rename that commits the file.  Duplicated the moment the
        fill is ready, while the spool file is certainly open.
        """
        if self.state is STARTING:
            d: Deferred[int] = Deferred()
            self._joiners.append(d)
            return d
        if self.state is FAILED:
            return fail(self._start_error or FillFailed(self.reason))
        if not self._spool.has_file and not self._all_in_memory():
            # Released: the blob is in the cache (or was lost committing).
            return fail(FillGone())
        return self._spool.descriptor()

    def _all_in_memory(self) -> bool:
        """No spool file could be created, and nothing relayed is dropped yet."""
        tail = self._spool.tail
        return self.state is STREAMING and tail is not None and tail.start == 0

    def _trim_tail(self) -> None:
        tail = self._spool.tail
        assert tail is not None
        tail.trim(self._followers.slowest(default=tail.end))

    # -- the fetch -------------------------------------------------------------

    async def fetch(self) -> None:
        try:
            response = await self._origin.get_blob(self._repository, self.digest)
        except Exception as e:
            self._fail(f"upstream: {e}", start_error=e)
            return
        self.expected = content_length(response)
        await self._spool.create()
        self.state = STREAMING
        joiners, self._joiners = self._joiners, []
        for d in joiners:
            self._spool.descriptor().chainDeferred(d)
        self._deliver(response)

    def _deliver(self, response: IResponse) -> None:
        response.deliverBody(self._receiver())

    def _receiver(self) -> Protocol:
        return self._body.receiver(self._received, self._body_ended)

    def _received(self, data: bytes) -> None:
        if self.state is not STREAMING:
            return
        if self._resumer.skip:
            data = self._resumer.fresh(data)
            if not data:
                return
        self.received += len(data)
        if self.expected is not None and self.received > self.expected:
            self._fail(
                f"upstream sent more than its Content-Length of {self.expected}", kind=FailureKind.LENGTH
            )
            return
        self._spool.add(data)
        if self._spool.tail is not None:
            self._notify()
        if self._body.flowing:
            self._hold_upstream_if_needed()
        if self._spool.write_next():
            self._let_upstream_go()

    # -- pacing upstream: each reason to pause it is its own decision ----------

    def _hold_upstream_if_needed(self) -> None:
        if self._spool.full():
            self.upstream_pauses += 1
            self._body.pause()
        elif self._far_ahead_of_followers():
            self.lead_pauses += 1
            self._body.pause()
        else:
            self._body.alive()

    def _far_ahead_of_followers(self) -> bool:
        # A relay is paced by its slowest follower (the tail), not its fastest.
        return self._spool.tail is None and self._followers.too_far_behind(self.received)

    def _followers_close_behind(self) -> bool:
        return self._spool.tail is not None or self._followers.close_behind(self.received)

    def _let_upstream_go(self) -> None:
        """Memory drained or a follower moved: upstream may go on, paused
        or dropped while it waited."""
        if self.state is not STREAMING:
            return
        if self._resumer.reconnect_when_needed:
            if self._followers_close_behind():
                self._resumer.reconnecting()
                Deferred.fromCoroutine(self._resume())
        elif self._body.paused and self._spool.drained() and self._followers_close_behind():
            self._body.resume()

    # -- the end of a body, and asking for the rest ------------------------------

    def _body_ended(self, reason: Failure) -> None:
        end = self._body.ended(reason, held_for_followers=not self._followers_close_behind())
        if self.state is not STREAMING:
            return
        if end is BodyEnd.DROPPED_WHILE_HELD:
            # An idle connection dropped while we held it on purpose: not
            # upstream failing.  The rest is asked for when it is needed.
            log.info(
                "blob {digest}: upstream closed a connection held for a slow client "
                "after {offset} bytes; the rest will be asked for with a Range",
                digest=str(self.digest),
                offset=self.received,
            )
            self._resumer.held_connection_dropped()
        elif end is BodyEnd.SILENT:
            self._retry_or_fail(f"upstream went silent for {self._silence:g}s")
        elif end is BodyEnd.LOST:
            self._retry_or_fail(f"upstream connection lost: {reason.getErrorMessage()}")
        else:
            self._maybe_verify()

    def _retry_or_fail(self, why: str) -> None:
        """Ask upstream for the rest of the blob, or give up after a few tries."""
        delay = self._resumer.next_delay(length_known=self.expected is not None)
        if delay is None:
            self._fail(f"{why} after {self.received} bytes")
            return
        log.warn(
            "blob {digest}: {reason} after {offset} bytes; resuming in {delay}s (try {attempt})",
            digest=str(self.digest),
            reason=why,
            offset=self.received,
            delay=delay,
            attempt=self._resumer.tries,
        )
        self._clock.callLater(delay, lambda: Deferred.fromCoroutine(self._resume()))

    async def _resume(self) -> None:
        if self.state is not STREAMING:
            return
        try:
            response = await self._origin.get_blob(self._repository, self.digest, start=self.received)
        except Exception as e:
            self._retry_or_fail(f"resuming failed: {e}")
            return
        if self.state is not STREAMING:
            discard_body(response)
            return
        self._resumer.answered(response.code, self.received)
        self._deliver(response)

    # -- writing and verifying ------------------------------------------------------

    def _batch_done(self) -> None:
        """A batch is in the file (or relayed): followers may read on; the
        next batch, upstream and verification may go on."""
        self._notify()
        started = self._spool.write_next()
        self._let_upstream_go()
        if not started:
            self._maybe_verify()

    def _hash_failed(self, reason: str) -> None:
        self._fail(reason, kind=FailureKind.DISK)

    def _maybe_verify(self) -> None:
        if not self._body.complete or not self._spool.idle or self.state is not STREAMING:
            return
        mismatch = self._spool.mismatch(self.expected)
        if mismatch is not None:
            kind, reason = mismatch
            self._fail(reason, kind=kind)
            return
        self.state = VERIFIED
        self._notify()
        if self._spool.tail is not None:
            log.info(
                "relayed blob {digest} uncached ({size} bytes)", digest=str(self.digest), size=self._spool.hashed
            )
            self._end()
        else:
            Deferred.fromCoroutine(self._commit())

    # -- the end ----------------------------------------------------------------------

    async def _commit(self) -> None:
        try:
            await self._spool.commit(self.registry)
        except Exception as e:
            # Every client already has its verified bytes; only the cache lost.
            log.error(
                "could not commit blob {digest} to the cache: {error}",
                digest=str(self.digest),
                error=str(e),
            )
        else:
            self.state = COMMITTED
            log.info(
                "cached blob {digest} ({size} bytes)", digest=str(self.digest), size=self.written
            )
        self.done.callback(None)

    def _fail(
        self, reason: str, start_error: BaseException | None = None, kind: FailureKind = FailureKind.UPSTREAM
    ) -> None:
        if self.state is FAILED or self.state.verified:
            return
        self.state = FAILED
        self.reason = reason
        self.failure_kind = kind
        self._start_error = start_error
        if start_error is None:
            log.error(
                "blob {digest} not cached: {reason}", digest=str(self.digest), reason=reason
            )
        self._body.stop()
        self._notify()
        joiners, self._joiners = self._joiners, []
        for d in joiners:
            d.errback(start_error or FillFailed(reason))
        self._end()

    def release(self) -> None:
        """Close the fill's own descriptor once no one can join it any more."""
        self._spool.release()

    def _end(self) -> None:
        """Nothing will be committed: remove the spool file and end the fill."""
        self._spool.abandon().addBoth(lambda _: self.done.callback(None))

    def _notify(self) -> None:
        watchers, self._watchers = self._watchers, []
        for d in watchers:
            d.callback(None)
