"""Stopping gracefully: stop accepting, let responses finish, then stop.

On SIGTERM twistd stops the service tree.  The listeners close at once; the
responses in flight get up to a deadline to finish (a client halfway through
a layer would otherwise have to start again elsewhere); then the pools stop.
Fills cut short leave only spool files, swept at the next start, so the cache
is consistent whatever the deadline cuts.

At start, a listener that cannot listen (port in use, no permission) stops
the start with one line naming its endpoint and the reason.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..api.openresponses import OpenResponses

log = Logger()

class ListenFailed(SystemExit, Exception):
    """A listener could not listen: the start ends with exit status 1.

    An Exception, so that twistd, which catches those around starting the
    application, removes its pid file (and tells a daemon's parent why); a
    SystemExit, so that the interpreter, when it reaches the top, exits
    without a traceback.  The reason was logged where it happened.
    """

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot listen on {endpoint}: {reason}")
        self.code = 1


def _endpoint_of(error: CannotListenError | OSError) -> str:
    """The endpoint a listen error is about, as the error tells it."""
    if isinstance(error, CannotListenError) and isinstance(error.port, int):
        interface = f":interface={error.interface}" if error.interface else ""
        return f"tcp:{error.port}{interface}"
    return "an endpoint"


def _reason_of(error: CannotListenError | OSError) -> str:
    cause = error.socketError if isinstance(error, CannotListenError) else error
    text = getattr(cause, "strerror", None) or str(cause)
    return text[:1].lower() + text[1:]


class GracefulService(MultiService):
    """Listeners first, then in-flight responses (up to a deadline), then the rest."""

    def __init__(self, responses: OpenResponses, clock: IReactorTime, deadline: float) -> None:
        super().__init__()
        self._responses = responses
        self._clock = clock
        self._deadline = deadline
        self._listeners: list[IService] = []
        self._endpoints: dict[IService, str] = {}
        self._backends: list[IService] = []

    def add_listener(self, service: IService, endpoint: str | None = None) -> None:
        """A listening service; `endpoint`, its endpoint string, names it
        if it cannot listen."""
        self._listeners.append(service)
        if endpoint is not None:
            self._endpoints[service] = endpoint
        service.setServiceParent(self)

    def add_backend(self, service: IService) -> None:
        self._backends.append(service)
        service.setServiceParent(self)

    def privilegedStartService(self) -> None:
        # twistd's listeners listen here, before it drops privileges.
        Service.privilegedStartService(self)
        for service in self:
            self._start(service, service.privilegedStartService)

    def startService(self) -> None:
        Service.startService(self)
        for service in self:
            self._start(service, service.startService)

    def _start(self, service: IService, start: Any) -> None:
        try:
            start()
        # CannotListenError, or an OSError from a unix socket's lock file.
        except (CannotListenError, OSError) as e:
            if service not in self._listeners:
                raise
            endpoint = self._endpoints.get(service) or _endpoint_of(e)
            reason = _reason_of(e)
            log.critical("cannot listen on {endpoint}: {reason}", endpoint=endpoint, reason=reason)
            raise ListenFailed(endpoint, reason) from None

    def stopService(self) -> Deferred[Any]:
        self.running = 0
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await DeferredList([maybeDeferred(s.stopService) for s in self._listeners])
        if self._responses.count:
            log.info(
                "stopping: waiting up to {deadline}s for {count} responses",
                deadline=self._deadline,
                count=self._responses.count,
            )
            idle = self._responses.when_idle()
            timer = self._clock.callLater(self._deadline, idle.cancel)
            try:
                await idle
            except Exception:
                log.warn("stopping with {count} responses unfinished", count=self._responses.count)
            else:
                if timer.active():
                    timer.cancel()
        others = [s for s in self if s not in self._listeners and s not in self._backends]
        await DeferredList([maybeDeferred(s.stopService) for s in others])
        await DeferredList([maybeDeferred(s.stopService) for s in reversed(self._backends)])
