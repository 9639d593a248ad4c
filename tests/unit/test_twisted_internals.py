"""Twisted's undocumented attributes that mirrorproxy relies on, pinned on
the installed Twisted: an upgrade that changes one fails here, by name,
rather than as a blob served slowly or a client left hanging."""

from __future__ import annotations

import socket

import pytest
from attrs import define
from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.web._newclient import TransportProxyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import directlyProvides, implementer

from mirrorproxy.common import twisted_internals as internals


@define
class _Port:
    _realPortNumber: int = 0


@define(eq=False)
class Received(Protocol):
    chunks: list[bytes]

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)


@implementer(IPushProducer)
@define(eq=False)
class Producer:
    resumed: int = 0

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


@pytest.fixture
def connection():
    """Twisted's own TCP connection over one end of a socket pair, on a
    memory reactor; yields it and the other end."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    protocol = Received([])
    connection = tcp.Server(ours, protocol, ("127.0.0.1", 1), _Port(), 1, MemoryReactorClock())
    protocol.makeConnection(connection)
    yield connection, theirs
    ours.close()
    theirs.close()


def test_the_connection_under_a_response_body_is_found_through_treqs_proxy(connection):
    conn, _ = connection
    proxy = TransportProxyProducer(conn)

    assert proxy._producer is conn
    assert internals.tcp_connection_under(proxy) is conn
    assert internals.tcp_connection_under(StringTransport()) is None


def test_the_connection_under_tls_is_its_transport(connection):
    conn, _ = connection
    wrapped = TLSMemoryBIOProtocol.__new__(TLSMemoryBIOProtocol)
    wrapped.transport = conn

    assert internals.tcp_connection_under(TransportProxyProducer(wrapped)) is conn


def test_a_larger_read_size_is_what_one_read_of_the_socket_takes(connection):
    conn, theirs = connection
    default = conn.bufferSize
    theirs.sendall(b"x" * (default + 100_000))

    internals.read_at_least(conn, 4 * default)
    conn.doRead()

    assert conn.bufferSize == 4 * default
    assert len(conn.protocol.chunks[0]) > default
    internals.read_at_least(conn, 1)
    assert conn.bufferSize == 4 * default  # never smaller


def test_the_write_buffer_is_empty_only_once_twisted_has_sent_it(connection):
    conn, theirs = connection
    assert internals.write_buffer_empty(conn)

    conn.write(b"held by Twisted")
    assert conn._tempDataBuffer and not internals.write_buffer_empty(conn)

    conn.doWrite()
    assert (conn.dataBuffer, conn.offset) == (b"", 0)
    assert internals.write_buffer_empty(conn)
    assert theirs.recv(100) == b"held by Twisted"


def test_a_producer_is_resumed_once_the_socket_is_writable(connection):
    conn, _ = connection
    producer = Producer()
    conn.registerProducer(producer, True)

    conn.doWrite()  # writable, nothing buffered: a streaming producer Twisted did not pause stays paused
    assert producer.resumed == 0

    internals.resume_when_writable(conn)
    assert conn in conn.reactor.getWriters()
    conn.doWrite()

    assert producer.resumed == 1 and not conn.producerPaused


def test_only_plain_tcp_connections_may_be_written_to_directly(connection):
    conn, _ = connection

    @define
    class Channel:
        transport: object

    @define
    class Asking:
        channel: Channel

    assert internals.plain_tcp(Asking(Channel(conn))) is conn  # type: ignore[arg-type]
    assert internals.plain_tcp(Asking(Channel(StringTransport()))) is None  # type: ignore[arg-type]
    directlyProvides(conn, ISSLTransport)
    assert internals.plain_tcp(Asking(Channel(conn))) is None  # type: ignore[arg-type]


class _Held(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render_GET(self, request: Request) -> int:
        self.requests.append(request)
        return NOT_DONE_YET


def test_bytes_sent_behind_twisteds_back_are_counted_as_sent():
    clock = Clock()
    resource = _Held()
    site = Site(resource, reactor=clock)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: m\r\n\r\n")
    (request,) = resource.requests
    request.setHeader(b"content-length", b"12")
    request.write(b"")
    assert request.sentLength == 0

    internals.count_sent(request, 5)
    internals.count_sent(request, 7)

    assert request.sentLength == 12
    request.finish()
    assert request.sentLength == 12 and not transport.disconnecting
