"""Reading upstream response bodies without trusting upstream to behave.

treq's ``timeout=`` covers only the wait for headers; a body can stall
forever, so every body read here runs under a silence timer that is reset by
each chunk and suspended while we ourselves hold the body paused.
"""

from __future__ import annotations

from typing import Callable, cast

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse


def _producer(protocol: Protocol) -> IPushProducer:
    """A response body protocol's transport: the producer of the body."""
    return cast(IPushProducer, protocol.transport)


class BodyTooLarge(Exception):
    """An upstream body over the limit we accept for its kind."""


class BodySilent(Exception):
    """Upstream sent nothing for longer than the silence timeout."""


class BodyTruncated(Exception):
    """The connection ended before the body did."""


@define(eq=False)
class SilenceTimer:
    """Calls `on_silence` when `reset` has not been called for `seconds`."""

    _clock: IReactorTime
    _seconds: float
    _on_silence: Callable[[], None]
    _call: IDelayedCall | None = None

    def reset(self) -> None:
        if self._call is not None and self._call.active():
            self._call.reset(self._seconds)
        else:
            self._call = self._clock.callLater(self._seconds, self._on_silence)

    def suspend(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    stop = suspend


def ended_cleanly(reason: Failure) -> bool:
    """Whether a body's connectionLost reason means "all of it arrived".

    PotentialDataLoss means upstream closed a body that had no length; the
    caller's own length and digest checks decide whether that body is whole.
    """
    return reason.check(ResponseDone, PotentialDataLoss) is not None


@define(eq=False)
class _Collector(Protocol):
    _limit: int
    _done: Deferred[bytes]
    _timer: SilenceTimer | None = None
    _chunks: list[bytes] = field(factory=list)
    _size: int = 0
    _failure: Exception | None = None

    def connectionMade(self) -> None:
        if self._timer is not None:
            self._timer.reset()

    def dataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._abort(BodyTooLarge(f"body larger than {self._limit} bytes"))
            return
        self._chunks.append(data)
        if self._timer is not None:
            self._timer.reset()

    def silent(self) -> None:
        self._abort(BodySilent("upstream went silent in the middle of a body"))

    def _abort(self, failure: Exception) -> None:
        self._failure = failure
        if self._timer is not None:
            self._timer.stop()
        _producer(self).stopProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._timer is not None:
            self._timer.stop()
        if self._failure is not None:
            self._done.errback(self._failure)
        elif ended_cleanly(reason):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(BodyTruncated(f"upstream body cut short: {reason.getErrorMessage()}"))


def read_body(
    response: IResponse, limit: int, clock: IReactorTime, silence: float
) -> Deferred[bytes]:
    """The whole of a small body, or BodyTooLarge / BodySilent / BodyTruncated."""
    done: Deferred[bytes] = Deferred()
    collector = _Collector(limit, done)
    collector._timer = SilenceTimer(clock, silence, collector.silent)
    response.deliverBody(collector)
    return done


def discard_body(response: IResponse) -> None:
    """Drop a body we don't want: drain a small one, cut a large one off."""
    response.deliverBody(_Discarder())


@define(eq=False)
class _Discarder(Protocol):
    # Error and redirect bodies are small, and a persistent connection is
    # worth more than reading a few bytes; anything bigger is cut off.
    _budget: int = 64 * 1024

    def dataReceived(self, data: bytes) -> None:
        self._budget -= len(data)
        if self._budget < 0 and self.transport is not None:
            _producer(self).stopProducing()
            self.transport = None

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pass
