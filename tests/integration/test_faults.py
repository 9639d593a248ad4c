"""Real processes under faults: a mirror killed mid-fill, a client that
stops reading, an upstream that is down when the mirror starts."""

from __future__ import annotations

import hashlib
import http.client
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness.mirror import Mirror, MirrorFactory
from .harness.oci import MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.slowlink import SlowLink
from .test_blobs import Received, fetch

pytestmark = pytest.mark.integration


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def begin_get(mirror: Mirror, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send ``GET path`` and read the response's head; its body is the
    caller's to read, and the connection the caller's to close."""
    connection = mirror.connection(timeout=30)
    connection.request("GET", path)
    return connection, connection.getresponse()


def test_kill_9_mid_fill_leaves_no_partial_blob_and_the_next_pull_succeeds(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    blob = publisher.blob(f"org/{unique('killed')}", 16 * MiB)
    with SlowLink(upstream.port, bytes_per_second=4 * MiB) as link:
        mirror = start_mirror(upstream_url=link.url)
        connection, response = begin_get(mirror, blob.path)
        assert response.status == 200
        assert len(response.read(2 * MiB)) == 2 * MiB  # the fill is well under way

        mirror.kill()
        connection.close()

    leftovers = files_under(mirror.cache_dir / "spool")
    assert leftovers, "a fill cut by SIGKILL leaves its spool file"
    final = [p for p in files_under(mirror.cache_dir) if "/blobs/" in str(p)]
    assert final == [], f"a partial blob reached a final path: {final}"

    restarted = start_mirror(cache_dir=mirror.cache_dir)
    assert files_under(mirror.cache_dir / "spool") == []
    assert fetch(restarted, blob.path) == Received(200, len(blob.data), blob.digest)


def test_a_client_that_stops_reading_does_not_hold_up_another(
    publisher: Publisher,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    blob = publisher.blob(f"org/{unique('paced')}", 24 * MiB)
    mirror = start_mirror()
    stalled = socket.create_connection(("127.0.0.1", mirror.port), timeout=30)
    # A small receive buffer, so the mirror feels this client's stall at once.
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    stalled.sendall(f"GET {blob.path} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
    first = stalled.recv(64 * 1024)
    assert first.startswith(b"HTTP/1.1 200")

    # While the first client reads nothing more, a second gets every byte.
    assert fetch(mirror, blob.path) == Received(200, len(blob.data), blob.digest)

    head, _, body = first.partition(b"\r\n\r\n")
    hasher, length = hashlib.sha256(body), len(body)
    while length < len(blob.data):
        chunk = stalled.recv(1024 * 1024)
        assert chunk, "the stalled client's connection ended early"
        hasher.update(chunk)
        length += len(chunk)
    stalled.close()
    assert (length, "sha256:" + hasher.hexdigest()) == (len(blob.data), blob.digest)


def test_a_mirror_starts_and_serves_its_cache_while_upstream_is_down(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    cached = publisher.blob(f"org/{unique('offline')}", 3 * MiB)
    uncached = publisher.blob(f"org/{unique('never')}", 1 * MiB)
    # The mirror reaches upstream through a relay that can be taken away,
    # so the upstream URL (and the cache's key for it) stays the same.
    with SlowLink(upstream.port, bytes_per_second=1024 * MiB) as link:
        relay_url = link.url
        first = start_mirror(upstream_url=relay_url)
        assert fetch(first, cached.path) == Received(200, len(cached.data), cached.digest)
        first.stop()

    offline = start_mirror(cache_dir=first.cache_dir, upstream_url=relay_url)

    assert fetch(offline, cached.path) == Received(200, len(cached.data), cached.digest)
    status, _, error = offline.get(uncached.path, timeout=30)
    assert status == 502 and b'"UNAVAILABLE"' in error


def test_sigterm_lets_a_response_in_flight_finish_and_refuses_new_ones(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    blob = publisher.blob(f"org/{unique('draining')}", 8 * MiB)
    with SlowLink(upstream.port, bytes_per_second=4 * MiB) as link:
        mirror = start_mirror(upstream_url=link.url)
        connection, response = begin_get(mirror, blob.path)
        first = response.read(1 * MiB)

        mirror.process._popen.send_signal(15)  # SIGTERM, as systemd stops it
        rest = response.read()
        connection.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", mirror.port), timeout=5).close()
        status = mirror.process._popen.wait(30)

    body = first + rest
    assert (len(body), "sha256:" + hashlib.sha256(body).hexdigest()) == (len(blob.data), blob.digest)
    # twistd stops cleanly, then exits by the signal it got, as daemons should.
    assert status == -15
    assert files_under(mirror.cache_dir / "spool") == []
