"""Blobs through the mirror over plain HTTP: many cold clients share one
upstream fetch, the cache outlives the process, and configured credentials
reach the upstream's token service."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness.fetching import Received, fetch
from .harness.mirror import MirrorFactory
from .harness.oci import MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.slowlink import SlowLink
from .harness.tokens import PUSHER, TokenIssuer

pytestmark = pytest.mark.integration

CLIENTS = 20
CLIENT_TIMEOUT = 60.0


def test_concurrent_cold_requests_share_one_upstream_fetch(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    blob = publisher.blob(f"org/{unique('big')}", 16 * MiB)
    # Paced at 16 MiB/s the upstream fetch lasts at least a second, so all
    # twenty requests (sent within milliseconds) arrive while it runs.
    with SlowLink(upstream.port, bytes_per_second=16 * MiB) as link:
        mirror = start_mirror(upstream_url=link.url)
        start = threading.Barrier(CLIENTS)
        with ThreadPoolExecutor(CLIENTS) as pool:
            received = list(pool.map(lambda _: fetch(mirror, blob.path, start), range(CLIENTS)))

    expected = Received(200, len(blob.data), blob.digest)
    assert received == [expected] * CLIENTS
    assert upstream.fetches(blob.path) == 1


def test_restarted_mirror_serves_its_cache_without_upstream(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    issuer: TokenIssuer,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    blob = publisher.blob(f"org/{unique('kept')}", 5 * MiB + 123)
    expected = Received(200, len(blob.data), blob.digest)
    first = start_mirror()
    assert fetch(first, blob.path) == expected
    assert upstream.fetches(blob.path) == 1
    first.stop()

    second = start_mirror(cache_dir=first.cache_dir)
    mark, tokens = upstream.mark(), issuer.count()
    assert fetch(second, blob.path) == expected

    # Nothing but the readiness probe's GET /v2/ (which may land after the
    # mark, on a loaded machine) reached upstream, and no token was asked for.
    assert [f"{r.method} {r.path}" for r in upstream.requests(mark) if r.path != "/v2/"] == []
    assert issuer.count() == tokens


def test_configured_credentials_reach_the_token_service(
    publisher: Publisher,
    issuer: TokenIssuer,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    """Credentials in the mirror's environment authenticate its token
    requests (Docker Hub's higher limits for accounts)."""
    blob = publisher.blob(f"org/{unique('account')}", 1 * MiB)
    mirror = start_mirror(credentials=PUSHER)

    assert fetch(mirror, blob.path) == Received(200, len(blob.data), blob.digest)
    asked = [r for r in issuer.requests() if f"repository:{blob.name}:pull" in r.scopes]
    assert [(r.username, r.status) for r in asked] == [(PUSHER[0], 200)]


def test_cache_hits_over_tcp_are_exact_whole_and_in_ranges(
    publisher: Publisher,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    """Cache hits on plain TCP go out with sendfile(2): whole blobs and
    ranges must still be exactly the bytes."""
    blob = publisher.blob(f"org/{unique('hit')}", 9 * MiB + 77)
    mirror = start_mirror()
    expected = Received(200, len(blob.data), blob.digest)
    assert fetch(mirror, blob.path) == expected  # the miss fills the cache
    assert fetch(mirror, blob.path) == expected  # a hit

    for first, last in ((0, 99), (3 * MiB + 5, 9 * MiB + 76), (1, 8 * MiB)):
        connection = mirror.connection(timeout=CLIENT_TIMEOUT)
        connection.request("GET", blob.path, headers={"Range": f"bytes={first}-{last}"})
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status == 206
        assert response.getheader("Content-Range") == f"bytes {first}-{last}/{len(blob.data)}"
        assert body == blob.data[first : last + 1]
