"""What an attacker and a scarce file-descriptor limit tried, against the
real mirror process: every client gets an answer and the mirror recovers by
itself; a hostile upstream's redirect inside relays nothing.

The descriptor limit is set on the mirror alone (``prlimit --nofile``), so
the test process can open as many connections as it likes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from attrs import frozen

from .harness.hostile import SECRET, HostileUpstream, InternalService
from .harness.mirror import Mirror, MirrorFactory
from .harness.oci import MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.slowlink import SlowLink
from .harness.tools import require_tool

pytestmark = pytest.mark.integration

FD_LIMIT = 256
CLIENT_TIMEOUT = 120.0


def low_descriptor_limit() -> list[str]:
    prlimit = require_tool("prlimit", "util-linux")
    return [prlimit, f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--"]


@frozen
class Answer:
    """What one client got: a status and the body's digest, or the error
    that ended its connection."""

    status: int | None
    digest: str | None = None
    error: str | None = None


def fetch(mirror: Mirror, path: str, start: threading.Barrier) -> Answer:
    connection = mirror.connection(CLIENT_TIMEOUT)
    try:
        start.wait(CLIENT_TIMEOUT)
        connection.request("GET", path)
        response = connection.getresponse()
        hasher = hashlib.sha256()
        while chunk := response.read(256 * 1024):
            hasher.update(chunk)
        return Answer(response.status, "sha256:" + hasher.hexdigest())
    except (OSError, http.client.HTTPException) as e:
        # Closed at accept, or aborted: an answer, not a hang.
        return Answer(None, error=type(e).__name__)
    finally:
        connection.close()


def test_150_clients_joining_one_fill_under_256_descriptors_all_get_an_answer(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    blob = publisher.blob(f"org/{unique('crowd')}", 24 * MiB)
    clients = 150
    # Paced, the fill lasts a second or more: every client joins it.
    with SlowLink(upstream.port, bytes_per_second=16 * MiB) as link:
        mirror = start_mirror(upstream_url=link.url, command_prefix=low_descriptor_limit())
        start = threading.Barrier(clients)
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda _: fetch(mirror, blob.path, start), range(clients)))

        served = [a for a in answers if a.status == 200]
        assert served and all(a.digest == blob.digest for a in served)
        for answer in answers:
            # Bytes (whole and right), a registry error, or a closed connection.
            assert answer.status in (200, 503, None), answer
        # The digest is not wedged: it is whole in the cache now.
        again = fetch(mirror, blob.path, threading.Barrier(1))
    assert again == Answer(200, blob.digest)
    assert upstream.fetches(blob.path) == 1
    assert "Traceback" not in mirror.process.tail(400)


@pytest.fixture
def idle_connections() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for connection in opened:
        connection.close()


def test_a_thousand_idle_connections_under_256_descriptors_do_not_keep_a_client_out(
    publisher: Publisher,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
    idle_connections: list[socket.socket],
) -> None:
    blob = publisher.blob(f"org/{unique('idle')}", 1 * MiB)
    mirror = start_mirror(command_prefix=low_descriptor_limit())

    for _ in range(1000):
        connection = socket.create_connection(("127.0.0.1", mirror.port), timeout=10)
        idle_connections.append(connection)

    status, headers, body = mirror.get(blob.path, timeout=30)

    assert (status, "sha256:" + hashlib.sha256(body).hexdigest()) == (200, blob.digest)
    assert "Traceback" not in mirror.process.tail(400)


@pytest.fixture
def internal_service() -> Iterator[InternalService]:
    service = InternalService().start()
    yield service
    service.stop()


@pytest.mark.parametrize("target", ["127.0.0.1", "127.0.0.2", "[::ffff:127.0.0.1]"])
def test_a_hostile_upstreams_redirect_to_loopback_relays_nothing(
    start_mirror: MirrorFactory, internal_service: InternalService, target: str
) -> None:
    hostile = HostileUpstream(f"http://{target}:{internal_service.port}/secret").start()
    try:
        # Upstream by name: its own host is "localhost", not the address.
        mirror = start_mirror(upstream_url=f"http://localhost:{hostile.port}")
        digest = "sha256:" + hashlib.sha256(SECRET).hexdigest()
        answers = {
            path: mirror.get(path)
            for path in (
                f"/v2/org/app/blobs/{digest}",
                "/v2/org/app/manifests/latest",
                "/v2/org/app/tags/list",
            )
        }
        ranged = mirror.connection()
        ranged.request("GET", f"/v2/org/app/blobs/{digest}", headers={"Range": "bytes=0-99"})
        range_answer = ranged.getresponse()
        range_body = range_answer.read()
    finally:
        hostile.stop()

    for path, (status, _, body) in answers.items():
        (error,) = json.loads(body)["errors"]
        assert (status, error["code"]) == (502, "UNAVAILABLE"), path
        assert "internal address" in error["message"], path
        assert SECRET[:16] not in body
    assert range_answer.status == 502 and SECRET[:16] not in range_body
    assert internal_service.seen == []
    assert "refused a redirect from upstream" in mirror.process.tail(200)
