"""Requests too large to be honest: refused before they cost anything."""

from __future__ import annotations

from mirrorproxy.server.channel import HEADER_DEADLINE


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
    client = harness.connect()  # and then nothing at all
    harness.clock.advance(harness.site.timeOut - 1)
    assert not client.transport.disconnecting

    harness.clock.advance(2)

    assert client.transport.disconnecting


def test_headers_trickled_past_the_deadline_get_408_and_the_connection_closed(harness):
    # Slowloris: a byte at a time, each well within the idle timeout, so
    # only a deadline for the whole header section ends it.
    client = harness.connect()
    client.protocol.dataReceived(b"GET /v2/library/alpine/manifests/3 HTTP/1.1\r\nHost: m\r\n")
    for _ in range(int(HEADER_DEADLINE // 5) - 1):
        harness.clock.advance(5)
        client.protocol.dataReceived(b"X")
        assert not client.transport.disconnecting

    harness.clock.advance(5)

    assert client.transport.value().startswith(b"HTTP/1.1 408 ")
    assert b'"code": "UNSUPPORTED"' in client.transport.value()
    assert client.transport.disconnecting
    assert harness.registry.seen == []


def test_the_header_deadline_restarts_for_each_request_on_a_connection(harness):
    harness.registry.add_blob(b"x" * 10)
    client = harness.connect()
    for _ in range(3):
        harness.clock.advance(HEADER_DEADLINE - 1)
        client.protocol.dataReceived(b"GET /v2/ HTTP/1.1\r\nHost: m\r\n\r\n")
        harness.pump()
    harness.clock.advance(HEADER_DEADLINE + 1)  # idle between requests: not a slow header

    assert client.transport.value().count(b"HTTP/1.1 200 ") == 3
    assert not client.transport.disconnecting


def test_headers_sent_at_once_are_not_cut_off_later(harness):
    client = harness.send("GET", "/v2/")
    harness.pump()
    harness.clock.advance(HEADER_DEADLINE + 1)

    assert client.transport.value().startswith(b"HTTP/1.1 200 ")
    assert not client.transport.disconnecting


def test_a_large_declared_body_is_refused_unread(harness):
    client = harness.connect()
    client.protocol.dataReceived(
        b"PUT /v2/library/alpine/blobs/uploads/x HTTP/1.1\r\nHost: m\r\n"
        b"Content-Length: 10000000000\r\n\r\n" + b"z" * 100_000
    )
    harness.pump()

    response = client.transport.value()
    assert response.startswith(b"HTTP/1.1 413 ")
    assert b'"code": "UNSUPPORTED"' in response
    assert response.count(b"HTTP/1.1") == 1  # nothing answered after the refusal
    assert client.transport.disconnecting
    assert harness.registry.seen == []


def test_a_chunked_body_is_refused_once_it_grows_past_the_limit(harness):
    client = harness.connect()
    client.protocol.dataReceived(
        b"POST /v2/library/alpine/blobs/uploads/ HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (32 * 1024, b"z" * 32 * 1024)
    for _ in range(3):
        client.protocol.dataReceived(chunk)
    client.protocol.dataReceived(b"0\r\n\r\n")
    harness.pump()

    response = client.transport.value()
    assert response.startswith(b"HTTP/1.1 413 ")
    assert response.count(b"HTTP/1.1") == 1
    assert client.transport.disconnecting


def test_a_small_body_is_ignored_and_the_request_answered(harness):
    client = harness.connect()
    client.protocol.dataReceived(
        b"POST /v2/library/alpine/blobs/uploads/ HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\n\r\nhello"
    )
    harness.pump()

    response = client.transport.value()
    assert response.startswith(b"HTTP/1.1 405 ")
    assert b'"code": "UNSUPPORTED"' in response
    assert not client.transport.disconnecting
    assert harness.registry.seen == []
