"""One structured access-log event per request, with named fields."""

from __future__ import annotations

import os

import pytest
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


# -- every response, on every path, exactly once ---------------------------------


@pytest.fixture
def access_log():
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "mirrorproxy.access" and "status" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def blob_path(digest: str) -> str:
    return f"/v2/library/alpine/blobs/{digest}"


def test_a_client_gone_after_the_last_byte_is_logged_and_counted(harness, access_log):
    """curl closes as soon as it has Content-Length bytes; if that comes
    before the mirror's own end of the response, it still counts."""
    data = os.urandom(300_000)
    digest = harness.registry.add_blob(data)
    harness.registry.hold.add(digest)
    client = harness.send("GET", blob_path(digest))
    harness.pump()
    harness.registry.held[digest].send(len(data) - 1)
    harness.pump()

    client.disconnect()  # the last byte was on its way
    harness.registry.held[digest].finish()
    harness.pump()

    [event] = access_log
    assert (event["status"], event["bytes"], event["finished"]) == (200, len(data) - 1, False)
    assert harness.site.responses[("blob", 200, "registry.fake")] == 1


def test_an_aborted_response_is_logged_once(harness, access_log):
    data = os.urandom(300_000)
    digest = harness.registry.add_blob(data)
    harness.registry.wrong_bytes[digest] = os.urandom(len(data))

    client = harness.send("GET", blob_path(digest))
    harness.pump()
    assert client.response().aborted
    client.disconnect()  # what the reactor does once the abort is through

    [event] = access_log
    assert (event["status"], event["finished"]) == (200, False)
    assert sum(harness.site.responses.values()) == 1


@pytest.mark.parametrize("cached", [False, True], ids=["miss", "hit"])
def test_six_separate_blob_gets_are_six_events_and_six_counts(harness, access_log, cached):
    data = os.urandom(100_000)
    digest = harness.registry.add_blob(data)
    if cached:
        harness.get(blob_path(digest))
        access_log.clear()
        harness.site.responses.clear()

    for _ in range(6):
        assert harness.get(blob_path(digest)).body == data

    assert [e["status"] for e in access_log] == [200] * 6
    assert all(e["finished"] for e in access_log)
    assert harness.site.responses[("blob", 200, "registry.fake")] == 6


def test_a_client_gone_before_its_headers_were_read_is_not_a_response(harness, access_log):
    client = harness.connect()
    client.protocol.dataReceived(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
    client.disconnect()

    assert access_log == []
    assert sum(harness.site.responses.values()) == 0


def test_a_refused_request_body_is_logged_as_a_413(harness, access_log):
    client = harness.connect()
    client.protocol.dataReceived(
        b"PUT /v2/library/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
    )

    [event] = access_log
    assert (event["method"], event["status"], event["kind"]) == ("PUT", 413, "invalid")
    assert harness.site.responses[("invalid", 413, "")] == 1
