"""Real processes under faults: a mirror killed mid-fill, a client that
stops reading, an upstream that is down when the mirror starts, a cache on a
real filesystem too small for the blob being pulled."""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .harness.fetching import Received, fetch
from .harness.mirror import Mirror, MirrorFactory
from .harness.oci import HOST, MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.skopeo import Skopeo
from .harness.slowlink import SlowLink
from .harness.tmpfs import Tmpfs
from .harness.tools import require_mount
from .harness.verify import assert_dir_copy

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


# A cache on a filesystem of its own, smaller than the blob pulled through it.
SMALL_DISK = 16 * MiB
TOO_BIG = 48 * MiB
RELAY_CLIENTS = 3


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Tmpfs]:
    """A 16 MiB tmpfs for the mirror's cache; unmounted whatever happens
    (a test names it before ``start_mirror``, so the mirror stops first)."""
    require_mount("a cache on a real full filesystem")
    disk = Tmpfs.mount(tmp_path / "small-disk", SMALL_DISK)
    try:
        yield disk
    finally:
        disk.unmount()


def cached_copies(mirror: Mirror, digest: str) -> list[Path]:
    """Files named for ``digest`` anywhere in the cache but its spool."""
    name = digest.removeprefix("sha256:")
    return [
        p
        for p in files_under(mirror.cache_dir)
        if p.name == name and p.relative_to(mirror.cache_dir).parts[0] != "spool"
    ]


def wait_for_empty_spool(mirror: Mirror) -> None:
    # Clients have every byte once the blob is verified; the spool file is
    # removed just after, in the mirror's thread pool.
    spool = mirror.cache_dir / "spool"
    mirror.process.wait_until(lambda: files_under(spool) == [], 10, "an empty spool directory")


def wait_for_space_back(mirror: Mirror, disk: Tmpfs) -> None:
    # An unlinked file's space returns at the last close of a descriptor to
    # it, and responses close theirs a moment after their last byte.
    mirror.process.wait_until(lambda: disk.used() == 0, 10, "every byte of the disk free again")


def test_a_full_disk_relays_the_blob_whole_to_every_client_and_caches_nothing(
    small_disk: Tmpfs,
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    big = publisher.blob(f"org/{unique('toobig')}", TOO_BIG)
    small = publisher.blob(f"org/{unique('fits')}", 1 * MiB)
    whole_big = Received(200, len(big.data), big.digest)
    # Paced at 32 MiB/s the big fetch lasts 1.5 s: the clients all join it,
    # and the disk is full a third of the way through.
    with SlowLink(upstream.port, bytes_per_second=32 * MiB) as link:
        mirror = start_mirror(cache_dir=small_disk.path, upstream_url=link.url)
        start = threading.Barrier(RELAY_CLIENTS)
        with ThreadPoolExecutor(RELAY_CLIENTS) as pool:
            pulls = [pool.submit(fetch, mirror, big.path, start) for _ in range(RELAY_CLIENTS)]
            received = [pull.result() for pull in pulls]

        assert received == [whole_big] * RELAY_CLIENTS
        assert upstream.fetches(big.path) == 1
        wait_for_empty_spool(mirror)
        assert cached_copies(mirror, big.digest) == []
        # The partial spool file is gone, and with it every byte it held.
        wait_for_space_back(mirror, small_disk)

        # Nothing was kept, so the next pull is relayed the same way.
        assert fetch(mirror, big.path) == whole_big
        assert upstream.fetches(big.path) == 2
        wait_for_empty_spool(mirror)
        assert cached_copies(mirror, big.digest) == []
        wait_for_space_back(mirror, small_disk)

        # A blob that fits is cached as usual: the next pull is a hit.
        assert fetch(mirror, small.path) == Received(200, len(small.data), small.digest)
        mirror.process.wait_until(
            lambda: len(cached_copies(mirror, small.digest)) == 1, 10, "the small blob cached"
        )
        status, headers, body = mirror.get(small.path, timeout=30)
        assert (status, headers["x-cache"], body) == (200, "HIT", small.data)
        assert upstream.fetches(small.path) == 1
        assert small_disk.used() >= len(small.data)

    assert mirror.process.running()
    log = mirror.process.log_path.read_text(errors="replace")
    full = f"cannot write blob {big.digest} to the cache ([Errno 28] No space left on device)"
    assert log.count(full) == 2
    assert log.count(f"relayed blob {big.digest} uncached ({TOO_BIG} bytes)") == 2


def test_skopeo_copies_an_image_whose_layer_does_not_fit_the_cache(
    small_disk: Tmpfs,
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    image = publisher.image(f"org/{unique('hugelayer')}", "v1", {HOST: (40 * MiB,)})
    (platform,) = image.platforms
    (layer,) = platform.layers
    assert layer.size > SMALL_DISK
    mirror = start_mirror(cache_dir=small_disk.path)

    skopeo.pull_to_dir(mirror.host, image.reference, tmp_path / "copy")

    assert_dir_copy(tmp_path / "copy", image)
    assert upstream.blob_fetches(image.name, layer.digest) == 1
    wait_for_empty_spool(mirror)
    assert cached_copies(mirror, layer.digest) == []
    # The manifest came first, while there was room: it is cached.  (Not the
    # config: fetched beside the layer, it may meet the disk already full.)
    assert len(cached_copies(mirror, image.digest)) == 1
    assert mirror.process.running()
    log = mirror.process.log_path.read_text(errors="replace")
    full = f"cannot write blob {layer.digest} to the cache ([Errno 28] No space left on device)"
    assert log.count(full) == 1


def test_skopeo_copies_a_whole_image_through_a_read_only_cache(
    small_disk: Tmpfs,
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # Manifests by tag and by digest, the config and the layers: nothing can
    # be cached, everything is still answered.
    image = publisher.image(f"org/{unique('rocache')}", "v1", {HOST: (3 * MiB, 64 * 1024)})
    mirror = start_mirror(cache_dir=small_disk.path)
    small_disk.read_only()

    skopeo.pull_to_dir(mirror.host, image.reference, tmp_path / "copy")

    assert_dir_copy(tmp_path / "copy", image)
    assert files_under(mirror.cache_dir) == []
    assert mirror.process.running()
    log = mirror.process.log_path.read_text(errors="replace")
    assert f"cannot cache manifest {image.digest} ([Errno 30] Read-only" in log


def test_a_read_only_cache_relays_blobs_and_caches_again_once_writable(
    small_disk: Tmpfs,
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    # Larger than the relay's memory tail (8 MiB), small enough to cache.
    blob = publisher.blob(f"org/{unique('readonly')}", 12 * MiB)
    whole = Received(200, len(blob.data), blob.digest)
    mirror = start_mirror(cache_dir=small_disk.path)
    # Under a running mirror, as ext4's errors=remount-ro would do.
    small_disk.read_only()

    assert fetch(mirror, blob.path) == whole
    assert fetch(mirror, blob.path) == whole
    assert upstream.fetches(blob.path) == 2
    assert files_under(mirror.cache_dir) == []
    assert mirror.process.running()

    # Writable again: the next pull is cached, without a restart.
    small_disk.writable()
    assert fetch(mirror, blob.path) == whole
    mirror.process.wait_until(
        lambda: len(cached_copies(mirror, blob.digest)) == 1, 10, "the blob cached"
    )
    status, headers, body = mirror.get(blob.path, timeout=30)
    assert (status, headers["x-cache"], body) == (200, "HIT", blob.data)
    assert upstream.fetches(blob.path) == 3

    log = mirror.process.log_path.read_text(errors="replace")
    read_only = f"cannot create a spool file for blob {blob.digest} ([Errno 30] Read-only"
    assert log.count(read_only) == 2
    assert log.count(f"relayed blob {blob.digest} uncached ({len(blob.data)} bytes)") == 2
    assert log.count(f"cached blob {blob.digest}") == 1
