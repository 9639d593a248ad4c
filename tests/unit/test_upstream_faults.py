"""Upstream misbehaving: redirect loops and strange redirects, token services
that hang or talk nonsense, lengths that lie.  Clear errors, nothing cached,
no client left hanging."""

from __future__ import annotations

import os

from ..fakeregistry import AUTH_HOST, FakeRegistry
from .harness import Harness


def cached_blobs(harness) -> list[str]:
    return [f for _, _, files in os.walk(os.path.join(harness.cache_dir)) for f in files if len(f) == 64]


def harness_with(tmp_path, registry) -> Harness:
    return Harness(str(tmp_path / "cache"), registry=registry)


def test_a_redirect_loop_is_a_502_after_a_few_hops(tmp_path):
    registry = FakeRegistry()
    path = "/v2/library/a/blobs/sha256:" + "1" * 64
    registry.redirect(path, path)
    harness = harness_with(tmp_path, registry)

    response = harness.get(path)

    assert response.status == 502 and response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "redirects" in response.json()["errors"][0]["message"]
    assert len(registry.seen) == 6  # the first request and five redirects, no more
    assert cached_blobs(harness) == []


def test_a_redirect_to_a_non_http_url_is_refused(tmp_path):
    registry = FakeRegistry()
    registry.redirect("/v2/library/a/blobs/sha256:" + "2" * 64, "file:///etc/passwd")
    harness = harness_with(tmp_path, registry)

    response = harness.get("/v2/library/a/blobs/sha256:" + "2" * 64)

    assert response.status == 502
    assert "non-HTTP(S)" in response.json()["errors"][0]["message"]


def test_a_token_service_that_talks_nonsense_is_a_502_not_a_denial(tmp_path):
    registry = FakeRegistry(require_token=True, token_body=b"<html>proxy error</html>")
    harness = harness_with(tmp_path, registry)

    response = harness.get("/v2/library/a/manifests/latest")

    assert response.status == 502
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_a_token_service_that_hangs_is_a_504_after_the_header_timeout(tmp_path):
    registry = FakeRegistry(require_token=True, hold_tokens=True)  # never released
    harness = harness_with(tmp_path, registry)
    client = harness.send("GET", "/v2/library/a/manifests/latest")
    harness.pump()
    assert client.response() is None

    harness.clock.advance(harness.settings.timeouts.headers + 1)
    harness.pump()

    response = client.response()
    assert response.status == 504 and response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert registry.count("GET", "/token", host=AUTH_HOST) == 1


def test_a_content_length_shorter_than_the_blob_fails_verification(tmp_path):
    registry = FakeRegistry()
    data = os.urandom(200_000)
    digest = registry.add_blob(data)
    registry.claimed_length[digest] = 150_000
    harness = harness_with(tmp_path, registry)

    client = harness.send("GET", f"/v2/library/a/blobs/{digest}")
    harness.pump()

    response = client.response()
    assert response.aborted and not response.complete
    assert cached_blobs(harness) == []
    assert harness.mirror.blobs.failures["digest"] == 1


def test_a_content_length_longer_than_the_blob_never_ends_cleanly(tmp_path):
    registry = FakeRegistry(honour_ranges=False)
    data = os.urandom(200_000)
    digest = registry.add_blob(data)
    registry.claimed_length[digest] = 250_000
    harness = harness_with(tmp_path, registry)

    client = harness.send("GET", f"/v2/library/a/blobs/{digest}")
    harness.pump()
    for _ in range(5):  # every resume meets the same lie
        harness.clock.advance(60)
        harness.pump()

    response = client.response()
    assert not response.complete
    assert response.aborted
    assert cached_blobs(harness) == []


def test_no_descriptor_for_an_upstream_socket_is_a_503_to_retry(tmp_path):
    """EMFILE when connecting upstream is the mirror's own shortage, not
    upstream failing: 503 TOOMANYREQUESTS with Retry-After, not 502."""
    import errno

    from treq.client import HTTPClient
    from twisted.internet.defer import fail
    from twisted.internet.error import ConnectBindError

    class NoSockets:
        def request(self, *args, **kwargs):
            return fail(ConnectBindError(errno.EMFILE, "Too many open files"))

    harness = harness_with(tmp_path, FakeRegistry())
    harness.mirror.upstream._http = HTTPClient(NoSockets())

    response = harness.get("/v2/library/a/manifests/latest")

    (error,) = response.json()["errors"]
    assert (response.status, error["code"]) == (503, "TOOMANYREQUESTS")
    assert "retry-after" in response.headers
