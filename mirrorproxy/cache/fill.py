"""One upstream fetch of a blob into a spool file, verified, then committed.

The upstream body is the spool file's only consumer: each chunk is queued,
then written and hashed in the thread pool (so neither write nor sha256 of a
large buffer blocks the reactor).  When writes queue up the upstream
connection is paused, so memory stays bounded however fast upstream is.
Clients never read the upstream body: they follow the spool file (see
`follow`), and the fill tells them how far they may read.  The last byte is
held back until the length and digest check out, so no client ever sees a
clean end to a wrong or short body; on a failure every follower aborts and
nothing is committed.  An upstream that dies or goes silent mid-body is asked
for the rest with a Range request; a spool file that cannot be created or
written (disk full, read-only cache) turns the fill into a relay from a
bounded memory tail.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from typing import Any

from attrs import define, field
from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from ..common.runner import Runner
from ..registry.names import Digest
from ..storage.filesystem import FilesystemStore, Spool, SpoolWriteFailed, hash_all
from ..upstream.answers import content_length
from ..upstream.bodies import SilenceTimer, discard_body, ended_cleanly
from ..upstream.client import UpstreamClient

log = Logger()

# An upstream that dies mid-blob is asked for the rest with a Range request,
# this many times, after these pauses (seconds).
RESUME_BACKOFF = (0.5, 2.0, 5.0)

# When the cache cannot be written (disk full, read-only), the blob is relayed
# to its clients from memory instead: at most this much, paced by the slowest.
TAIL_HIGH = 8 * 1024 * 1024
TAIL_LOW = 2 * 1024 * 1024

# Pause upstream when this much is waiting to be written or being written;
# resume below LOW.  With one socket read (UPSTREAM_READ) on top, that is
# what a fill holds in memory at most: 20 fills at once stay near 60 MiB.
QUEUE_HIGH = 2 * 1024 * 1024
QUEUE_LOW = 512 * 1024

# A fill runs at most LEAD_HIGH bytes ahead of its fastest client, then waits
# until that client is within LEAD_LOW: upstream bandwidth (often one shared,
# slow link) goes to the clients that can take it, not to racing ahead for
# one reading at 1 MiB/s.  A fill that has no client left, or gains a fast
# one, runs at full speed.
LEAD_HIGH = 16 * 1024 * 1024
LEAD_LOW = 8 * 1024 * 1024

# Read an upstream blob body from its socket this much at a time (Twisted's
# default is 64 KiB): a fast upstream then costs the reactor, the HTTP parser
# and the write queue one pass per MiB rather than one per 64 KiB.
UPSTREAM_READ = 1024 * 1024

STARTING, STREAMING, VERIFIED, COMMITTED, FAILED = (
    "starting",
    "streaming",
    "verified",
    "committed",
    "failed",
)


class FillFailed(Exception):
    """The fill could not produce a verified blob."""


class FillGone(Exception):
    """The fill is over and its file is where the cache keeps it: look there."""


def _socket_transport(transport: object) -> tcp.Connection | None:
    """The TCP connection under a response body's transport (treq wraps it
    in a proxy producer; TLS in a protocol of its own), if there is one."""
    for _ in range(4):
        if isinstance(transport, tcp.Connection):
            return transport
        transport = getattr(transport, "_producer", None) or getattr(transport, "transport", None)
    return None


def _empty_descriptor() -> int:
    """A descriptor for followers of a fill with no spool file.

    They take every byte from memory (`Fill.in_file` stays 0) and never read
    it; were one to, it would read nothing and abort, never send wrong bytes.
    /dev/null is no disk file: opening it cannot block the reactor.
    """
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


@define(eq=False)
class _ToSpool(Protocol):
    """Receives the upstream body for a fill."""

    _fill: Fill

    def connectionMade(self) -> None:
        self._fill._body_started(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self._fill._received(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._fill._body_ended(reason)


@define(eq=False)
class Fill:
    """Fetches one blob once, for however many clients follow it."""

    registry: str
    digest: Digest
    _store: FilesystemStore
    _run: Runner
    _clock: IReactorTime
    _silence: float
    expected: int | None = None
    written: int = 0
    received: int = 0
    state: str = STARTING
    reason: str | None = None
    done: Deferred[None] = field(factory=Deferred)
    _spool: Spool | None = None
    _hasher: Any = field(factory=hashlib.sha256)
    _queue: list[bytes] = field(factory=list)
    _queued: int = 0
    _in_flight: int = 0  # bytes of the batch being written
    _writing: bool = False
    _body_over: bool = False
    _upstream: IPushProducer | None = None
    _upstream_paused: bool = False
    _timer: SilenceTimer | None = None
    _watchers: list[Deferred[None]] = field(factory=list)
    _ready: list[Deferred[int]] = field(factory=list)
    _start_error: BaseException | None = None
    _client: UpstreamClient | None = None
    _repository: str = ""
    resumes: int = 0
    upstream_pauses: int = 0  # how often the disk held upstream back
    lead_pauses: int = 0  # how often upstream waited for the fastest client
    # Upstream dropped the connection while it waited for a client: ask for
    # the rest when the client needs it, without spending a retry.
    _reconnect_when_needed: bool = False
    # Why it failed: "upstream", "length", "digest" or "disk".
    failure_kind: str | None = None
    hashed: int = 0
    # Relaying: the spool file could not be written, so bytes past `written`
    # live in `_tail` (from offset `_tail_start`) until every follower has
    # sent them; nothing will be committed.
    relaying: bool = False
    _tail: deque[bytes] = field(factory=deque)
    _tail_start: int = 0
    _tail_bytes: int = 0
    _positions: dict[int, int] = field(factory=dict)
    _skip: int = 0  # leading bytes to drop: upstream ignored our Range
    _stalled: bool = False

    # -- what followers see (follow.Source) --------------------------------

    def readable(self) -> int:
        available = self._tail_start + self._tail_bytes if self.relaying else self.written
        if self.state in (VERIFIED, COMMITTED):
            return available
        # The last byte waits for verification: no client can see a whole
        # body, whether its length was announced or not, before it is checked.
        if self.expected is not None:
            return min(available, self.expected - 1)
        return max(available - 1, 0)

    def in_file(self) -> int:
        return self.written

    def memory(self, offset: int, size: int) -> bytes:
        """Relayed bytes from `offset`: what the spool file could not take."""
        position = self._tail_start
        for chunk in self._tail:
            end = position + len(chunk)
            if offset < end:
                start = max(offset - position, 0)
                return chunk[start : start + size] if offset >= position else b""
            position = end
        return b""

    def at(self, follower: object, offset: int) -> None:
        """A follower has sent everything before `offset`."""
        self._positions[id(follower)] = offset
        if self.relaying:
            self._trim()
        else:
            self._maybe_resume()

    def gone(self, follower: object) -> None:
        self._positions.pop(id(follower), None)
        if self.relaying and self.state == STREAMING:
            if self._positions:
                self._trim()
            else:
                self._fail("every client left a blob that could not be cached", kind="disk")
        else:
            self._maybe_resume()

    def _trim(self) -> None:
        floor = min(self._positions.values(), default=self._tail_start + self._tail_bytes)
        while self._tail and self._tail_start + len(self._tail[0]) <= floor:
            chunk = self._tail.popleft()
            self._tail_start += len(chunk)
            self._tail_bytes -= len(chunk)
        self._maybe_resume()

    def finished(self) -> bool:
        return self.state in (VERIFIED, COMMITTED)

    def failed(self) -> bool:
        return self.state == FAILED

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
        if self.state in (STREAMING, VERIFIED, COMMITTED):
            if self._spool is None and not self._all_in_memory():
                # Released: the blob is in the cache (or was lost committing).
                return fail(FillGone())
            try:
                return succeed(self._descriptor())
            except OSError as e:
                self._no_descriptor(e)
                return fail(e)
        d: Deferred[int] = Deferred()
        if self.state == FAILED:
            d.errback(self._start_error or FillFailed(self.reason))
            return d
        self._ready.append(d)
        return d

    def _all_in_memory(self) -> bool:
        """No spool file could be created, and nothing relayed is dropped yet."""
        return self.state == STREAMING and self.relaying and self._tail_start == 0

    def _descriptor(self) -> int:
        """A descriptor of its own for one follower; OSError when the process
        has none left (that follower fails, the fill goes on)."""
        if self._spool is None:
            return _empty_descriptor()
        return self._store.share(self._spool.fd)

    def _no_descriptor(self, error: OSError) -> None:
        log.error(
            "a client of blob {digest} got no file descriptor ({error}); the fill goes on",
            digest=str(self.digest),
            error=str(error),
        )

    def _hand_out_descriptors(self) -> None:
        """Each waiting follower its own descriptor, or its own failure."""
        ready, self._ready = self._ready, []
        for d in ready:
            try:
                fd = self._descriptor()
            except OSError as e:
                self._no_descriptor(e)
                d.errback(e)
            else:
                d.callback(fd)

    # -- the fetch -------------------------------------------------------------

    async def run(self, upstream: UpstreamClient, repository: str) -> None:
        self._client, self._repository = upstream, repository
        try:
            response = await upstream.get_blob(repository, self.digest)
        except Exception as e:
            self._fail(f"upstream: {e}", start_error=e)
            return
        self.expected = content_length(response)
        try:
            self._spool = await self._store.new_spool()
        except OSError as e:
            # Read-only, out of inodes, out of quota: the cache cannot take a
            # byte, the clients still can.  Relay it all from memory.
            log.error(
                "cannot create a spool file for blob {digest} ({error}): relaying it to "
                "its clients without caching it",
                digest=str(self.digest),
                error=str(e),
            )
            self.relaying = True
        self.state = STREAMING
        self._hand_out_descriptors()
        self._deliver(response)

    def _deliver(self, response: IResponse) -> None:
        self._body_over = False
        self._stalled = False
        self._timer = SilenceTimer(self._clock, self._silence, self._silent)
        self._timer.reset()
        response.deliverBody(_ToSpool(self))

    def _body_started(self, transport: IPushProducer) -> None:
        self._upstream = transport
        connection = _socket_transport(transport)
        if connection is not None:
            connection.bufferSize = max(connection.bufferSize, UPSTREAM_READ)
        if self.state == FAILED:
            transport.stopProducing()

    def _received(self, data: bytes) -> None:
        if self.state != STREAMING:
            return
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
            if not data:
                return
        self.received += len(data)
        if self.expected is not None and self.received > self.expected:
            self._fail(f"upstream sent more than its Content-Length of {self.expected}", kind="length")
            return
        self._queue.append(data)
        self._queued += len(data)
        if self.relaying:
            self._tail.append(data)
            self._tail_bytes += len(data)
            self._notify()
        assert self._timer is not None
        if not self._upstream_paused and self._upstream is not None:
            if self._too_much_waiting():
                self.upstream_pauses += 1
                self._pause_upstream()
            elif self._ahead_of_clients(LEAD_HIGH):
                self.lead_pauses += 1
                self._pause_upstream()
            else:
                self._timer.reset()
        self._write_queued()

    def _pause_upstream(self) -> None:
        assert self._timer is not None and self._upstream is not None
        self._upstream_paused = True
        self._timer.suspend()
        self._upstream.pauseProducing()

    def _ahead_of_clients(self, lead: int) -> bool:
        """Whether the fill is `lead` bytes or more ahead of every client."""
        if not self._positions or self.relaying:
            return False
        return self.received - max(self._positions.values()) >= lead

    def _held(self) -> int:
        """Bytes in memory waiting to be written, or being written."""
        return self._queued + self._in_flight

    def _too_much_waiting(self) -> bool:
        return self._held() >= QUEUE_HIGH or (self.relaying and self._tail_bytes >= TAIL_HIGH)

    def _maybe_resume(self) -> None:
        if self._reconnect_when_needed and not self._ahead_of_clients(LEAD_LOW):
            self._reconnect_when_needed = False
            if self.state == STREAMING:
                Deferred.fromCoroutine(self._resume())
            return
        if not self._upstream_paused or self._upstream is None:
            return
        if self._held() > QUEUE_LOW or (self.relaying and self._tail_bytes > TAIL_LOW):
            return
        if self._ahead_of_clients(LEAD_LOW):
            return
        self._upstream_paused = False
        assert self._timer is not None
        self._timer.reset()
        self._upstream.resumeProducing()

    def _silent(self) -> None:
        self._stalled = True
        if self._upstream is not None:
            self._upstream.stopProducing()

    def _body_ended(self, reason: Failure) -> None:
        waiting_for_clients = self._upstream_paused and self._ahead_of_clients(LEAD_LOW)
        self._body_over = True
        self._upstream = None
        self._upstream_paused = False
        if self._timer is not None:
            self._timer.stop()
        if self.state != STREAMING:
            return
        if waiting_for_clients and not ended_cleanly(reason):
            # An idle connection dropped while we held it on purpose: not
            # upstream failing.  The rest is asked for when it is needed.
            log.info(
                "blob {digest}: upstream closed a connection held for a slow client "
                "after {offset} bytes; the rest will be asked for with a Range",
                digest=str(self.digest),
                offset=self.received,
            )
            self._body_over = False
            self._reconnect_when_needed = True
            return
        if self._stalled:
            self._retry_or_fail(f"upstream went silent for {self._silence:g}s")
        elif not ended_cleanly(reason):
            self._retry_or_fail(f"upstream connection lost: {reason.getErrorMessage()}")
        else:
            self._maybe_verify()

    def _retry_or_fail(self, why: str) -> None:
        """Ask upstream for the rest of the blob, or give up after a few tries."""
        if self.expected is None or self.resumes >= len(RESUME_BACKOFF):
            self._fail(f"{why} after {self.received} bytes")
            return
        delay = RESUME_BACKOFF[self.resumes]
        self.resumes += 1
        log.warn(
            "blob {digest}: {reason} after {offset} bytes; resuming in {delay}s (try {attempt})",
            digest=str(self.digest),
            reason=why,
            offset=self.received,
            delay=delay,
            attempt=self.resumes,
        )
        self._body_over = False  # not over: the rest is coming
        self._clock.callLater(delay, lambda: Deferred.fromCoroutine(self._resume()))

    async def _resume(self) -> None:
        if self.state != STREAMING:
            return
        assert self._client is not None
        try:
            response = await self._client.get_blob(self._repository, self.digest, start=self.received)
        except Exception as e:
            self._body_over = True
            self._retry_or_fail(f"resuming failed: {e}")
            return
        if self.state != STREAMING:
            discard_body(response)
            return
        # An upstream that ignores Range sends it all again: drop what we have.
        self._skip = 0 if response.code == 206 else self.received
        self._deliver(response)

    def _write_queued(self) -> None:
        if self._writing or not self._queue or self.state != STREAMING:
            return
        chunks, self._queue = self._queue, []
        self._in_flight, self._queued = self._queued, 0
        self._writing = True
        d = Deferred.fromCoroutine(self._write(chunks))
        d.addCallbacks(self._wrote, self._write_failed, callbackArgs=(chunks,), errbackArgs=(chunks,))
        self._maybe_resume()

    async def _write(self, chunks: list[bytes]) -> int:
        # One pool job per batch: hash, then write.  Two jobs side by side
        # finish a batch sooner but cost twice the thread hops, and a batch
        # is a MiB or more: the hops, not the work, were what the reactor
        # lost its time to.
        if self.relaying:
            await self._run(hash_all, self._hasher, chunks)
            return 0
        assert self._spool is not None
        return await self._store.write_spool(self._spool, self.written, chunks, self._hasher)

    def _wrote(self, count: int, chunks: list[bytes]) -> None:
        self._writing = False
        self._in_flight = 0
        if self.state == FAILED:
            self._cleanup()
            return
        self.written += count
        self.hashed += sum(len(c) for c in chunks)
        self._notify()
        if self._queue:
            self._write_queued()
        else:
            self._maybe_resume()
            self._maybe_verify()

    def _write_failed(self, failure: Failure, chunks: list[bytes]) -> None:
        self._writing = False
        self._in_flight = 0
        if self.state == FAILED:
            self._cleanup()
            return
        if not failure.check(SpoolWriteFailed):
            self._fail(f"cannot hash the blob: {failure.getErrorMessage()}", kind="disk")
            return
        # The cache cannot take it; the clients still can.  The batch was
        # hashed; it and everything after it is relayed from memory.
        error = failure.value.error
        log.error(
            "cannot write blob {digest} to the cache ({error}): relaying it to its "
            "clients without caching it",
            digest=str(self.digest),
            error=str(error),
        )
        self.relaying = True
        self.hashed += sum(len(c) for c in chunks)
        self._tail = deque(chunks + self._queue)
        self._tail_start = self.written
        self._tail_bytes = sum(len(c) for c in self._tail)
        self._notify()
        if self._queue:
            self._write_queued()
        else:
            self._maybe_resume()
            self._maybe_verify()

    def _maybe_verify(self) -> None:
        if not self._body_over or self._writing or self._queue or self.state != STREAMING:
            return
        if self.expected is not None and self.hashed != self.expected:
            self._fail(f"upstream sent {self.hashed} of {self.expected} bytes", kind="length")
            return
        actual = self._hasher.hexdigest()
        if actual != self.digest.hex:
            self._fail(f"content hashes to sha256:{actual}", kind="digest")
            return
        self.state = VERIFIED
        self._notify()
        if self.relaying:
            log.info("relayed blob {digest} uncached ({size} bytes)", digest=str(self.digest), size=self.hashed)
            self._cleanup()
        else:
            Deferred.fromCoroutine(self._commit())

    async def _commit(self) -> None:
        assert self._spool is not None
        # The spool's descriptor stays open until `release`: late joiners
        # still share it, after the rename too.
        try:
            await self._store.commit_blob(self._spool, self.registry, self.digest)
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
        self, reason: str, start_error: BaseException | None = None, kind: str = "upstream"
    ) -> None:
        if self.state in (FAILED, VERIFIED, COMMITTED):
            return
        self.state = FAILED
        self.reason = reason
        self.failure_kind = kind
        self._start_error = start_error
        if start_error is None:
            log.error(
                "blob {digest} not cached: {reason}", digest=str(self.digest), reason=reason
            )
        if self._timer is not None:
            self._timer.stop()
        if self._upstream is not None:
            self._upstream.stopProducing()
        self._queue = []
        self._notify()
        ready, self._ready = self._ready, []
        for d in ready:
            d.errback(start_error or FillFailed(reason))
        if not self._writing:
            self._cleanup()

    def release(self) -> None:
        """Close the fill's own descriptor once no one can join it any more."""
        spool, self._spool = self._spool, None
        if spool is not None:
            os.close(spool.fd)

    def _cleanup(self) -> None:
        """Remove the spool file (no write may be in flight) and end the fill."""
        Deferred.fromCoroutine(self._discard_spool()).addBoth(lambda _: self.done.callback(None))

    async def _discard_spool(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            await self._store.discard(spool)

    def _notify(self) -> None:
        watchers, self._watchers = self._watchers, []
        for d in watchers:
            d.callback(None)
