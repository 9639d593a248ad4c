"""The upstream body a fill receives: held back when the fill must wait,
watched for silence, and how it ended."""

from __future__ import annotations

from enum import Enum
from typing import Callable, cast

from attrs import define, field
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from ...common.twisted_internals import read_at_least, tcp_connection_under
from ...upstream.bodies import SilenceTimer, ended_cleanly

# Read an upstream blob body from its socket this much at a time (Twisted's
# default is 64 KiB): a fast upstream then costs the reactor, the HTTP parser
# and the write queue one pass per MiB rather than one per 64 KiB.
UPSTREAM_READ = 1024 * 1024


class BodyEnd(Enum):
    COMPLETE = "complete"  # every byte arrived
    DROPPED_WHILE_HELD = "dropped while held"  # closed while paused for slow followers
    SILENT = "silent"  # stopped by us: nothing came for too long
    LOST = "lost"  # the connection broke


@define(eq=False)
class UpstreamBody:
    """One body after another (the first answer, then each resume's), as a
    push producer the fill pauses and resumes; stopped when upstream sends
    nothing for `silence` seconds while it may send."""

    _clock: IReactorTime
    _silence: float
    _producer: IPushProducer | None = None
    paused: bool = False
    complete: bool = False  # the last body ended with every byte
    _stalled: bool = False
    _stopped: bool = False  # none of it is wanted any more
    _timer: SilenceTimer = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._timer = SilenceTimer(self._clock, self._silence, self._silent)

    def receiver(self, received: Callable[[bytes], None], ended: Callable[[Failure], None]) -> Protocol:
        """The protocol for the next body: `received` with each chunk,
        `ended` with how its connection ended."""
        self.complete = self._stalled = False
        self._timer.reset()
        return _Receiver(self, received, ended)

    def started(self, producer: IPushProducer) -> None:
        self._producer = producer
        connection = tcp_connection_under(producer)
        if connection is not None:
            read_at_least(connection, UPSTREAM_READ)
        if self._stopped:
            producer.stopProducing()

    @property
    def flowing(self) -> bool:
        """Whether a body is coming in, not held back."""
        return self._producer is not None and not self.paused

    def alive(self) -> None:
        """Bytes arrived: the silence starts again."""
        self._timer.reset()

    def pause(self) -> None:
        assert self._producer is not None
        self.paused = True
        self._timer.suspend()
        self._producer.pauseProducing()

    def resume(self) -> None:
        assert self._producer is not None
        self.paused = False
        self._timer.reset()
        self._producer.resumeProducing()

    def stop(self) -> None:
        """No more of it is wanted."""
        self._stopped = True
        self._timer.stop()
        if self._producer is not None:
            self._producer.stopProducing()

    def ended(self, reason: Failure, held_for_followers: bool) -> BodyEnd:
        """The body's connection is over; how, given whether the fill was
        holding it paused for followers far behind."""
        was_paused = self.paused
        self._producer = None
        self.paused = False
        self._timer.stop()
        clean = ended_cleanly(reason)
        if was_paused and held_for_followers and not clean:
            return BodyEnd.DROPPED_WHILE_HELD
        if self._stalled:
            return BodyEnd.SILENT
        if not clean:
            return BodyEnd.LOST
        self.complete = True
        return BodyEnd.COMPLETE

    def _silent(self) -> None:
        self._stalled = True
        if self._producer is not None:
            self._producer.stopProducing()


@define(eq=False)
class _Receiver(Protocol):
    """Hands one upstream body to its fill."""

    _body: UpstreamBody
    _received: Callable[[bytes], None]
    _ended: Callable[[Failure], None]

    def connectionMade(self) -> None:
        self._body.started(cast(IPushProducer, self.transport))

    def dataReceived(self, data: bytes) -> None:
        self._received(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._ended(reason)
