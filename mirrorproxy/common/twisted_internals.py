"""Every use of Twisted's undocumented attributes, in one place.

Streaming blobs fast means doing a few things Twisted has no public API for:
reading an upstream socket in larger pieces, writing to a client's socket
behind Twisted's back (sendfile), and telling Twisted about it afterwards.
Each function here names the attributes it relies on;
``tests/unit/test_twisted_internals.py`` pins them on the installed Twisted,
so an upgrade that changes one fails there and nowhere else.
"""

from __future__ import annotations

import os

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.web.server import Request


def tcp_connection_under(transport: object) -> tcp.Connection | None:
    """The TCP connection under a response body's transport, if there is one.

    treq hands a body's protocol a `TransportProxyProducer` (the connection
    is its ``_producer``); under TLS the connection is the TLS protocol's
    ``transport``.
    """
    for _ in range(4):
        if isinstance(transport, tcp.Connection):
            return transport
        transport = getattr(transport, "_producer", None) or getattr(transport, "transport", None)
    return None


def read_at_least(connection: tcp.Connection, size: int) -> None:
    """Have each read of the connection's socket take up to `size` bytes.

    `tcp.Connection.doRead` reads ``bufferSize`` bytes at a time.
    """
    connection.bufferSize = max(connection.bufferSize, size)


def plain_tcp(request: Request) -> tcp.Connection | None:
    """The request's connection, if its socket may be written to directly.

    Not TLS (bytes must be encrypted in user space) and nothing but
    Twisted's own TCP connection, whose write buffer (`write_buffer_empty`)
    and writability watch (`resume_when_writable`) a sender borrows.
    """
    transport = getattr(request.channel, "transport", None)
    if not hasattr(os, "sendfile") or not isinstance(transport, tcp.Connection):
        return None
    if ISSLTransport.providedBy(transport):
        return None
    return transport


def write_buffer_empty(connection: tcp.Connection) -> bool:
    """Whether Twisted has nothing buffered for the socket: what it holds
    must go out before a byte is written to the socket behind its back.

    A `FileDescriptor` buffers in ``dataBuffer`` (sent up to ``offset``)
    and in the list ``_tempDataBuffer``.
    """
    return len(connection.dataBuffer) == connection.offset and not connection._tempDataBuffer


def resume_when_writable(connection: tcp.Connection) -> None:
    """Have Twisted call its registered push producer's `resumeProducing`
    once the socket can take more.

    `FileDescriptor.doWrite`, finding its buffer empty, resumes a streaming
    producer only if ``producerPaused`` says it paused it.
    """
    connection.producerPaused = True
    connection.startWriting()


def count_sent(request: Request, count: int) -> None:
    """Bytes of the response went out without `request.write`: count them
    in ``sentLength`` (which the access log reports) and reset the
    channel's idle timer, as bytes moving should."""
    request.sentLength += count
    request.channel.resetTimeout()
