"""Blob GET/HEAD: cache hits, misses, coalescing, backpressure, integrity."""

from __future__ import annotations

import os

from ..fakeregistry import REGISTRY_HOST, sha256


def blob_path(digest: str) -> str:
    return f"/v2/library/busybox/blobs/{digest}"


def test_miss_then_hit_costs_one_upstream_get(harness):
    data = os.urandom(1_000_000)
    digest = harness.registry.add_blob(data)

    first = harness.get(blob_path(digest))
    second = harness.get(blob_path(digest))

    assert (first.status, first.body, first.complete) == (200, data, True)
    assert first.headers["docker-content-digest"] == digest
    assert first.headers["content-length"] == str(len(data))
    assert (second.status, second.body) == (200, data)
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert harness.registry.count("GET", "/blobs/") == 1


def test_unknown_blob_is_blob_unknown(harness):
    response = harness.get(blob_path(sha256(b"nothing")))
    assert response.status == 404
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
