"""Streaming a file to one client at the client's pace, following it as it grows.

A `FileFollower` is a push producer registered with the client's request.
It reads the next chunk only when the client's transport wants more, so a
slow client holds at most one chunk plus its socket buffer, and never slows
anything else down.  The file is either complete (a cache hit) or a spool
file still being filled, which the follower reads up to what the fill says
is safe to send (its `source.Source`).

On plain TCP everything after the first chunk goes by sendfile(2) in the
thread pool, from the file straight to the socket, for cache hits and
followers of a fill alike (a fill's `readable` already stops short of what
is not verified).  A chunk that must pass through Python (TLS, the first
chunk, a relayed tail) is read on the reactor thread when the page cache
has it (``RWF_NOWAIT``: such a read cannot block), in the pool otherwise.
"""

from __future__ import annotations

import errno
import os

from attrs import define, field
from twisted.internet import tcp
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from ..common.runner import Runner
from ..common.twisted_internals import (
    count_sent,
    plain_tcp,
    resume_when_writable,
    write_buffer_empty,
)
from .source import CompleteFile, Source

log = Logger()

CHUNK_SIZE = 256 * 1024

# On plain TCP only the first chunk passes through Python (with the headers):
# small, so a herd's first bytes all go out at once.
FIRST_CHUNK = 64 * 1024

# A follower that has caught up with a running fill waits for at least this
# much more before its next sendfile, rather than one pool call per write.
FOLLOW_BATCH = 1024 * 1024
# ... or for this many of the fill's writes, whichever comes first: a slow
# upstream's bytes still flow (and keep the client's connection alive).
FOLLOW_WAITS = 8


def abort_connection(request: Request) -> None:
    """End a response so no client can mistake it for a whole one."""
    transport = request.channel.transport if request.channel is not None else None
    if transport is None:
        return
    abort = getattr(transport, "abortConnection", None)
    (abort or transport.loseConnection)()


# sendfile(2) on plain TCP: at most this much per pool call.
SENDFILE_WINDOW = 8 * 1024 * 1024

# Whether preadv(RWF_NOWAIT) can work here; cleared at its first refusal.
_nowait = [hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")]


def read_cached(fd: int, size: int, offset: int) -> bytes | None:
    """Up to `size` bytes at `offset` if the page cache holds them, else None.

    preadv(2) with RWF_NOWAIT never waits for the disk, so this is safe on
    the reactor thread; a file just written by a fill is in the page cache.
    """
    if not _nowait[0]:
        return None
    buffer = bytearray(size)
    try:
        n = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            _nowait[0] = False
            return None
        raise
    if n <= 0:
        return None  # let the pool's read tell an early end from a miss
    return bytes(buffer) if n == size else bytes(memoryview(buffer)[:n])


def _sendfile_some(socket_fd: int, file_fd: int, offset: int, count: int) -> int:
    """Send up to `count` bytes of the file, until the socket is full.

    Runs in the thread pool, so a cold file's disk reads block a pool thread,
    not the reactor; the socket is non-blocking, so a full socket buffer
    returns at once.  BrokenPipe and friends propagate: the client is gone.
    """
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(socket_fd, file_fd, offset + sent, count - sent)
        except BlockingIOError:
            break
        if n == 0:
            break
        sent += n
    return sent


def _content_length_framed(request: Request) -> bool:
    # Chunked framing needs each chunk's size in the stream: no sendfile.
    return request.responseHeaders.hasHeader(b"content-length")


@implementer(IPushProducer)
@define(eq=False)
class FileFollower:
    """Sends bytes [start, end) of a file descriptor to one request."""

    _request: Request
    _source: Source
    _fd: int
    _run: Runner
    _start: int
    _end: int | None  # None: to the end, whatever the length turns out to be
    _chunk_size: int = CHUNK_SIZE
    _offset: int = 0  # the next byte to send
    _next: int = 0  # the next byte to read: _offset plus what is read ahead
    _ahead: bytes | None = None  # one chunk read while the last one drains
    _paused: bool = False
    _reading: bool = False  # a read is under way in the thread pool
    _waiting: bool = False  # waiting for the source to change
    _done: bool = False
    sent: int = 0
    _over: Deferred[None] = field(factory=Deferred)
    # Plain TCP: after the first chunk (written, to learn when Twisted's
    # buffer is empty) what is in the file goes by sendfile(2).
    _tcp: tcp.Connection | None = None
    _stalls: int = 0
    _waits: int = 0  # the fill's writes let pass since the last send

    def begin(self) -> Deferred[None]:
        """Start streaming; the result fires when this response is over."""
        if isinstance(self._source, CompleteFile) and self._end is None:
            self._end = self._source.size
        if self._end is None or self._end - self._start > 2 * self._chunk_size:
            if _content_length_framed(self._request):
                self._tcp = plain_tcp(self._request)
        self._offset = self._next = self._start
        self._source.follower_sent(self, self._offset)
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addErrback(self._client_gone)
        self._pump()
        return self._over

    # -- IPushProducer ---------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._close("stopped")

    # -- the loop ------------------------------------------------------------

    def _limit(self) -> int:
        readable = self._source.readable()
        if self._end is None:
            return readable
        if not self._source.finished():
            # A range's last byte waits for verification too: a clean 206
            # before the digest was checked would hand out unchecked bytes.
            return min(readable, self._end - 1)
        return min(readable, self._end)

    def _pump(self) -> None:
        # Send what was read ahead if the client takes it, then read the next
        # chunk, even while paused: the disk read then overlaps the socket
        # draining the last chunk.  At most one chunk waits in memory.
        # request.write() can re-enter pauseProducing; the flags make every
        # path through here safe to repeat.
        while not self._done:
            if self._ahead is not None:
                if self._paused:
                    return
                data, self._ahead = self._ahead, None
                if not self._send(data):
                    return
                continue
            if self._reading or self._waiting:
                return
            if self._source.failed():
                log.info("aborting a response: its content failed verification or upstream")
                self._close("aborted", abort=True)
                return
            limit = self._limit()
            if self._next < limit:
                in_file = self._source.in_file()
                if self._tcp is not None and self.sent > 0 and self._next < in_file:
                    if not self._paused:
                        self._sendfile(min(limit, in_file))
                    return
                if self._next >= in_file:
                    # Relayed from memory: the cache could not take these.
                    size = min(self._chunk_size, limit - self._next)
                    if not self._read_ahead(self._source.read_relayed(self._next, size)):
                        return
                    continue
                size = min(self._chunk_size, min(limit, in_file) - self._next)
                if self._tcp is not None:
                    size = min(size, FIRST_CHUNK)
                cached = read_cached(self._fd, size, self._next)
                if cached is not None:
                    if not self._read_ahead(cached):
                        return
                    continue
                self._reading = True
                d = Deferred.fromCoroutine(self._read(size, self._next))
                d.addCallbacks(self._got, self._read_failed)
                return
            if self._source.finished() and (self._end is None or self._offset >= self._end):
                self._close("finished")
                return
            self._waiting = True
            self._source.changed().addBoth(self._source_changed)
            return

    async def _read(self, size: int, offset: int) -> bytes:
        data: bytes = await self._run(os.pread, self._fd, size, offset)
        return data

    def _got(self, data: bytes) -> None:
        self._reading = False
        if self._done:
            self._close_fd()
            return
        if self._read_ahead(data):
            self._pump()

    def _read_ahead(self, data: bytes) -> bool:
        """Keep the next chunk to send; False if the response is over."""
        if not data:
            # The content is shorter than the source says: never pretend.
            log.error("content ended early at {offset}", offset=self._next)
            self._close("aborted", abort=True)
            return False
        self._next += len(data)
        self._ahead = data
        return True

    def _send(self, data: bytes) -> bool:
        """Write the next bytes to the client; False if the response is over."""
        self._offset += len(data)
        self.sent += len(data)
        self._request.write(data)
        self._source.follower_sent(self, self._offset)
        return not self._done

    # -- sendfile ---------------------------------------------------------------

    def _sendfile(self, limit: int) -> None:
        """Send from the file up to `limit` (what is in it and may be sent)."""
        assert self._tcp is not None
        if not write_buffer_empty(self._tcp):
            self._when_writable()
            return
        self._reading = True
        count = min(SENDFILE_WINDOW, limit - self._offset)
        socket_fd = self._tcp.getHandle().fileno()
        d = ensureDeferred(self._run(_sendfile_some, socket_fd, self._fd, self._offset, count))
        d.addCallbacks(self._sendfile_sent, self._sendfile_failed, callbackArgs=(count,))

    def _sendfile_sent(self, sent: int, asked: int) -> None:
        self._reading = False
        if self._done:
            self._close_fd()
            return
        self._offset += sent
        self._next = self._offset
        self.sent += sent
        count_sent(self._request, sent)
        self._source.follower_sent(self, self._offset)
        self._stalls = 0 if sent else self._stalls + 1
        if self._stalls > 3:
            # Writable, yet nothing goes: the file is shorter than it was.
            log.error("cached file ended early at {offset}", offset=self._offset)
            self._close("aborted", abort=True)
        elif sent == asked:
            self._pump()
        else:
            self._when_writable()

    def _when_writable(self) -> None:
        """Have Twisted resume us once the socket can take more."""
        assert self._tcp is not None
        resume_when_writable(self._tcp)

    def _sendfile_failed(self, failure: Failure) -> None:
        self._reading = False
        if self._done:
            self._close_fd()
            return
        if not failure.check(OSError):
            log.failure("sendfile failed", failure)
        self._close("aborted", abort=True)

    def _read_failed(self, failure: Failure) -> None:
        self._reading = False
        if self._done:
            self._close_fd()
            return
        log.failure("reading a cached file failed", failure)
        self._close("aborted", abort=True)

    def _source_changed(self, _: object) -> None:
        if self._tcp is not None and self.sent > 0 and self._worth_waiting():
            # Caught up with a running fill: let it write more first.
            self._waits += 1
            self._source.changed().addBoth(self._source_changed)
            return
        self._waits = 0
        self._waiting = False
        self._pump()

    def _worth_waiting(self) -> bool:
        source = self._source
        if self._done or source.finished() or source.failed() or self._waits >= FOLLOW_WAITS:
            return False
        limit = self._limit()
        if self._end is not None and limit >= self._end:
            return False
        return limit - self._offset < FOLLOW_BATCH

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _client_gone(self, failure: Failure) -> None:
        self._close("client gone")

    def _close(self, how: str, abort: bool = False) -> None:
        if self._done:
            return
        self._done = True
        self._source.follower_left(self)
        if not self._reading:
            # Otherwise the read in flight closes it: closing under it could
            # let the descriptor be reused and read from another file.
            self._close_fd()
        if how in ("finished", "aborted"):
            self._request.unregisterProducer()
            if abort:
                abort_connection(self._request)
            else:
                self._request.finish()
        self._over.callback(None)
