"""GracefulService at start: a listener that cannot listen stops the start
with one line naming the endpoint and the reason, and exit status 1."""

from __future__ import annotations

import errno
import os

import pytest
from twisted.application import strports
from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import Site

from mirrorproxy.api.openresponses import OpenResponses
from mirrorproxy.server.drain import GracefulService, ListenFailed


class BusyReactor(MemoryReactorClock):
    """Every TCP port is taken, as the kernel says when another process has it."""

    def listenTCP(self, port, factory, backlog=50, interface=""):  # type: ignore[no-untyped-def]
        error = OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        raise CannotListenError(interface, port, error)


def graceful(reactor: MemoryReactorClock) -> GracefulService:
    return GracefulService(OpenResponses(), reactor, 30.0)


@pytest.mark.parametrize("start", ["privilegedStartService", "startService"])
def test_a_port_in_use_is_one_line_naming_the_endpoint(start):
    reactor = BusyReactor()
    top = graceful(reactor)
    endpoint = "tcp:5000:interface=127.0.0.1"
    top.add_listener(strports.service(endpoint, Site(Resource()), reactor=reactor), endpoint)

    with capturedLogs() as events, pytest.raises(ListenFailed) as raised:
        getattr(top, start)()

    assert str(raised.value) == "cannot listen on tcp:5000:interface=127.0.0.1: address already in use"
    # No traceback at the top: a SystemExit with status 1...
    assert isinstance(raised.value, SystemExit) and raised.value.code == 1
    # ...which twistd still sees as a failed start (and removes its pid file).
    assert isinstance(raised.value, Exception)
    [event] = [e for e in events if e.get("log_namespace") == "mirrorproxy.server.drain"]
    assert formatEvent(event) == "cannot listen on tcp:5000:interface=127.0.0.1: address already in use"
    assert (event["endpoint"], event["reason"]) == ("tcp:5000:interface=127.0.0.1", "address already in use")


def test_without_its_endpoint_string_the_port_is_named_from_the_error():
    reactor = BusyReactor()
    top = graceful(reactor)
    top.add_listener(strports.service("tcp:5000", Site(Resource()), reactor=reactor))

    with pytest.raises(ListenFailed, match="^cannot listen on tcp:5000: address already in use$"):
        top.privilegedStartService()


def test_other_services_failing_to_start_are_not_listen_failures():
    class Broken(Service):
        def startService(self) -> None:
            raise OSError(errno.EACCES, "Permission denied")

    top = graceful(MemoryReactorClock())
    top.add_backend(Broken())

    with pytest.raises(OSError) as raised:
        top.startService()
    assert not isinstance(raised.value, ListenFailed)


def test_listeners_that_can_listen_do():
    reactor = MemoryReactorClock()
    top = graceful(reactor)
    top.add_listener(strports.service("tcp:5000", Site(Resource()), reactor=reactor), "tcp:5000")

    top.privilegedStartService()
    top.startService()

    assert [port for port, *_ in reactor.tcpServers] == [5000]
