"""One structured access-log event per request, with named fields."""

from __future__ import annotations

import os

from twisted.logger import globalLogPublisher


def access_events(harness, method: str, path: str) -> list[dict]:
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "mirrorproxy.access":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        harness.request(method, path)
    finally:
        globalLogPublisher.removeObserver(observe)
    return events


def test_a_blob_get_logs_its_repository_digest_status_bytes_and_outcome(harness):
    data = os.urandom(5000)
    digest = harness.registry.add_blob(data)
    harness.clock.advance(100)

    [event] = access_events(harness, "GET", f"/v2/library/alpine/blobs/{digest}")

    assert event["method"] == "GET"
    assert event["repository"] == "library/alpine" and event["reference"] == digest
    assert (event["status"], event["bytes"], event["cache"]) == (200, len(data), "MISS")
    assert event["kind"] == "blob" and event["duration_ms"] == 0.0


def test_an_error_is_logged_with_its_status(harness):
    [event] = access_events(harness, "DELETE", "/v2/library/alpine/manifests/latest")
    assert (event["method"], event["status"], event["cache"]) == ("DELETE", 405, "-")
