"""``mirrorproxy stats``: size and entries from the cache, hit ratio from the service."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from .cachebuilder import CacheBuilder
from .clirunner import invoke, invoke_json
from .mirroranswers import exposition
from .staticserver import Answer, serve


@pytest.fixture
def cache(tmp_path: Path) -> CacheBuilder:
    return CacheBuilder(str(tmp_path / "cache"))


def unused_url() -> str:
    """A metrics URL nothing listens on (port 0 is never connectable)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


def test_sizes_and_entries_per_registry(cache: CacheBuilder) -> None:
    one = cache.image("library/alpine", "1", os.urandom(1000))
    two = cache.index("org/app", "2", {"linux/amd64": [os.urandom(2000)], "linux/arm64": [os.urandom(10)]})
    cache.tag("org/app", "latest", two.top)
    Path(cache.root, "spool", "fill").write_bytes(b"x" * 10)

    stats = invoke_json("stats", "--cache-dir", cache.root, "--no-metrics")

    (registry,) = stats["registries"]
    assert registry == {
        "name": "docker.io",
        "repositories": 2,
        "tags": 3,
        "manifests": {"count": 4, "bytes": sum(m.size for m in one.manifests + two.manifests)},
        "blobs": {"count": 6, "bytes": sum(b.size for b in one.blobs + two.blobs)},
    }
    assert stats["bytes"] == one.size + two.size
    assert stats["entries"] == 10
    assert stats["spool"] == {"files": 1, "bytes": 10}
    assert stats["quarantine"] == {"files": 0, "bytes": 0}
    assert "metrics" not in stats


def test_plain_output_says_size_entries_and_that_the_service_is_not_reachable(cache: CacheBuilder) -> None:
    cache.image("library/alpine", "1", os.urandom(1000))
    url = unused_url()

    result = invoke("stats", "--cache-dir", cache.root, "--metrics", url)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"cache {cache.root}: ") and lines[0].endswith("in 3 entries")
    assert "docker.io: 1 repository, 1 tag, 1 manifest" in lines[1]
    assert lines[-1] == f"hit ratio: unknown, no metrics at {url} (Connection refused)"


def test_the_hit_ratio_comes_from_the_services_metrics(cache: CacheBuilder) -> None:
    text = exposition(blob_hit=6, manifest_hit=1, manifest_revalidated=1, blob_miss=1, blob_join=1)
    with serve({"/metrics": Answer(200, {"Content-Type": "text/plain; version=0.0.4"}, text)}) as server:
        url = server.url + "/metrics"
        result = invoke("stats", "--cache-dir", cache.root, "--metrics", url)
        stats = invoke_json("stats", "--cache-dir", cache.root, "--metrics", url)

    assert result.stdout.splitlines()[-1] == (
        "hit ratio since the service started: 80.0% (HIT 7, REVALIDATED 1, STALE 0, JOIN 1, MISS 1)"
    )
    assert stats["metrics"]["hitRatio"] == pytest.approx(0.8)
    assert stats["metrics"]["outcomes"]["HIT"] == 7


def test_an_endpoint_without_our_metrics_is_said_so(cache: CacheBuilder) -> None:
    with serve({"/metrics": Answer(200, {}, b"some_other_metric 1\n")}) as server:
        result = invoke("stats", "--cache-dir", cache.root, "--metrics", server.url + "/metrics")

    assert result.exit_code == 0
    assert "no mirrorproxy_cache_requests_total" in result.stdout.splitlines()[-1]


def test_quarantine_is_counted_apart(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(100))
    flip = cache.blob_path(image.blobs[1])
    with open(flip, "r+b") as f:
        f.write(b"\0")
    assert invoke("verify", "--cache-dir", cache.root).exit_code == 1

    stats = invoke_json("stats", "--cache-dir", cache.root, "--no-metrics")

    assert stats["quarantine"] == {"files": 1, "bytes": 100}
    assert stats["registries"][0]["blobs"]["count"] == 1
