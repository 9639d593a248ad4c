"""A range of a spool file as a request body, read a chunk at a time in the
thread pool: an upload holds one chunk in memory (plus what the transport
buffers before it pauses us), whatever the blob's size."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from ...common.runner import Runner

CHUNK = 256 * 1024


class SpoolShrank(OSError):
    """The spool ended before the range being uploaded did."""


@implementer(IBodyProducer)
@define(eq=False)
class SpoolBody:
    _fd: int
    _offset: int
    length: int
    _run: Runner
    # Called after each chunk goes to the transport (a silence timeout's reset).
    progressed: Callable[[], None] | None = None
    _resumed: Deferred[None] | None = field(default=None, init=False)
    _stopped: bool = field(default=False, init=False)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        # Cancelling (the request gave up) stops us; the Deferred fails then.
        done: Deferred[None] = Deferred(lambda _: self.stopProducing())

        def finished(error: BaseException | None) -> None:
            # Once stopped, the transport has given up on us: as with
            # Twisted's FileBodyProducer, the Deferred then never fires.
            if self._stopped or done.called:
                return
            if error is None:
                done.callback(None)
            else:
                done.errback(error)

        async def produce() -> None:
            try:
                await self._produce(consumer)
            except BaseException as e:  # noqa: BLE001 - handed to the transport
                finished(e)
            else:
                finished(None)

        Deferred.fromCoroutine(produce())
        return done

    async def _produce(self, consumer: Any) -> None:
        position, end = self._offset, self._offset + self.length
        while position < end:
            if self._resumed is not None:
                await self._resumed
            if self._stopped:
                raise CancelledError()
            chunk: bytes = await self._run(os.pread, self._fd, min(CHUNK, end - position), position)
            if not chunk:
                raise SpoolShrank(f"the spool ended at {position} bytes, before {end}")
            if self._stopped:
                raise CancelledError()
            consumer.write(chunk)
            position += len(chunk)
            if self.progressed is not None:
                self.progressed()

    def pauseProducing(self) -> None:
        if self._resumed is None:
            self._resumed = Deferred()

    def resumeProducing(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        self.resumeProducing()
