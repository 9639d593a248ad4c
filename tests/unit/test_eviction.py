"""A bounded cache: least recently used blobs go, nothing in use does."""

from __future__ import annotations

import os

import pytest

from mirrorproxy.cache.eviction import parse_size
from mirrorproxy.registry.names import Digest

from .harness import Harness

KiB = 1024


def blob_files(harness) -> dict[str, int]:
    found = {}
    for directory, _, files in os.walk(harness.cache_dir):
        if "/blobs/" in directory + "/":
            for name in files:
                found["sha256:" + name] = os.path.getsize(os.path.join(directory, name))
    return found


def blob_path(harness, digest: str) -> str:
    return harness.mirror.store.blob_path(harness.mirror.registry.cache_key, Digest.parse(digest))


def age(harness, digest: str, seconds: float) -> None:
    path = blob_path(harness, digest)
    os.utime(path, (os.stat(path).st_atime - seconds, os.stat(path).st_mtime - seconds))


def test_the_cache_stays_under_its_cap_while_pulls_continue(tmp_path):
    harness = Harness(str(tmp_path / "cache"), max_cache_size=1000 * KiB)
    digests = [harness.registry.add_blob(os.urandom(200 * KiB)) for _ in range(12)]

    for n, digest in enumerate(digests):
        response = harness.get(f"/v2/library/a/blobs/{digest}")
        assert response.complete
        for earlier in digests[:n]:
            if earlier in blob_files(harness):
                age(harness, earlier, 1)  # older ones are less recently used
        assert sum(blob_files(harness).values()) <= 1000 * KiB

    assert harness.mirror.blobs.evictor.evicted >= 7
    # The newest stay; an evicted blob is simply fetched again.
    assert digests[-1] in blob_files(harness)
    again = harness.get(f"/v2/library/a/blobs/{digests[0]}")
    assert again.complete and again.headers["x-cache"] == "MISS"


def test_least_recently_used_goes_first(tmp_path):
    harness = Harness(str(tmp_path / "cache"), max_cache_size=700 * KiB)
    a, b, c = (harness.registry.add_blob(os.urandom(200 * KiB)) for _ in range(3))
    for digest in (a, b, c):
        harness.get(f"/v2/library/x/blobs/{digest}")
    age(harness, a, 7200)
    age(harness, b, 3600 * 3)  # b is the oldest now
    age(harness, c, 60)
    harness.get(f"/v2/library/x/blobs/{a}")  # a hit: touched

    d = harness.registry.add_blob(os.urandom(200 * KiB))
    harness.get(f"/v2/library/x/blobs/{d}")

    assert set(blob_files(harness)) == {a, c, d}


def test_a_blob_being_served_is_never_evicted(tmp_path):
    harness = Harness(str(tmp_path / "cache"), max_cache_size=500 * KiB)
    served = harness.registry.add_blob(os.urandom(400 * KiB))
    harness.get(f"/v2/library/x/blobs/{served}")
    age(harness, served, 7200)
    slow = harness.connect(window=64 * KiB)  # reads a little, then stops
    slow.protocol.dataReceived(f"GET /v2/library/x/blobs/{served} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
    harness.pump()
    assert not slow.response().complete

    other = harness.registry.add_blob(os.urandom(300 * KiB))
    harness.get(f"/v2/library/x/blobs/{other}")

    assert served in blob_files(harness)
    slow.transport.open_window()
    harness.pump()
    assert slow.response().complete


@pytest.mark.parametrize(
    "text, size", [("50G", 50 << 30), ("512M", 512 << 20), ("1.5T", int(1.5 * (1 << 40))), ("1000", 1000), ("2GiB", 2 << 30)]
)
def test_sizes(text, size):
    assert parse_size(text) == size


def test_bad_size():
    with pytest.raises(ValueError):
        parse_size("lots")


def test_evictions_are_counted_in_the_metrics(tmp_path):
    from prometheus_client import generate_latest

    from mirrorproxy.server.metrics import metrics_root

    harness = Harness(str(tmp_path / "cache"), max_cache_size=300 * KiB)
    for _ in range(3):
        harness.get(f"/v2/library/a/blobs/{harness.registry.add_blob(os.urandom(200 * KiB))}")

    _, registry = metrics_root(harness.mirrors, harness.site, harness.clock)
    text = generate_latest(registry).decode()
    assert f"mirrorproxy_evictions_total {float(harness.mirror.blobs.evictor.evicted)}" in text
    assert harness.mirror.blobs.evictor.evicted >= 2


def test_files_removed_behind_the_services_back_are_not_counted(tmp_path):
    """After `mirrorproxy gc` removes files, eviction counts again instead of
    evicting what the cache no longer holds."""
    harness = Harness(str(tmp_path / "cache"), max_cache_size=500 * KiB)
    first = harness.registry.add_blob(os.urandom(200 * KiB))
    second = harness.registry.add_blob(os.urandom(200 * KiB))
    harness.get(f"/v2/library/a/blobs/{first}")
    harness.get(f"/v2/library/a/blobs/{second}")
    path = harness.mirror.store.blob_path(harness.mirror.registry.cache_key, Digest.parse(first))
    os.unlink(path)  # as gc would

    third = harness.registry.add_blob(os.urandom(200 * KiB))
    harness.get(f"/v2/library/a/blobs/{third}")

    assert set(blob_files(harness)) == {second, third}
    assert harness.mirror.blobs.evictor.evicted == 0


def test_quarantined_files_are_not_counted(tmp_path):
    harness = Harness(str(tmp_path / "cache"))
    quarantine = tmp_path / "cache" / "quarantine" / "registry.fake" / "blobs" / "sha256" / "ab"
    quarantine.mkdir(parents=True)
    (quarantine / ("ab" * 32)).write_bytes(b"x" * 1000)

    from twisted.internet.defer import Deferred

    Deferred.fromCoroutine(harness.mirror.store.measure())
    assert (harness.mirror.store.bytes, harness.mirror.store.entries) == (0, 0)


def test_a_stray_file_among_the_blobs_is_neither_counted_nor_evicted(tmp_path):
    """Only what sits where the store puts blobs is cache content: a file
    someone left beside them is not the cache's to count or remove."""
    harness = Harness(str(tmp_path / "cache"), max_cache_size=500 * KiB)
    first, second, third = (harness.registry.add_blob(os.urandom(200 * KiB)) for _ in range(3))
    harness.get(f"/v2/library/a/blobs/{first}")
    stray = os.path.join(os.path.dirname(blob_path(harness, first)), "notes.txt")
    with open(stray, "wb") as f:
        f.write(b"x" * 400 * KiB)
    os.utime(stray, (0, 0))  # older than any blob
    age(harness, first, 60)

    harness.get(f"/v2/library/a/blobs/{second}")
    harness.get(f"/v2/library/a/blobs/{third}")  # over the cap: eviction counts again

    assert os.path.getsize(stray) == 400 * KiB
    assert harness.mirror.blobs.evictor.evicted == 1
    assert {first, second, third} & set(blob_files(harness)) == {second, third}
    assert (harness.mirror.store.bytes, harness.mirror.store.entries) == (400 * KiB, 2)
