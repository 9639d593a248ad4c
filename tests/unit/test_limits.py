"""Requests too large to be honest: refused before they cost anything."""

from __future__ import annotations


def test_an_oversized_request_line_closes_the_connection(harness):
    client = harness.connect()
    client.protocol.dataReceived(b"GET /v2/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: m\r\n\r\n")
    harness.pump()

    # Twisted drops a line over 16 KiB without reading on: nothing buffered.
    assert client.transport.value() == b""
    assert client.transport.disconnecting
    assert harness.registry.seen == []


def test_oversized_headers_are_refused_and_the_connection_closed(harness):
    client = harness.connect()
    headers = b"".join(b"X-Junk-%d: %s\r\n" % (n, b"x" * 100) for n in range(600))
    client.protocol.dataReceived(b"GET /v2/ HTTP/1.1\r\nHost: m\r\n" + headers + b"\r\n")
    harness.pump()

    assert client.transport.value().startswith(b"HTTP/1.1 4")
    assert client.transport.disconnecting


def test_an_idle_connection_is_timed_out(harness):
    client = harness.connect()
    client.protocol.dataReceived(b"GET /v2/ HTT")  # and then nothing more

    harness.clock.advance(harness.site.timeOut + 1)

    assert client.transport.disconnecting
