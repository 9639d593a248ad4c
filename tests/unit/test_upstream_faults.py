"""Upstream misbehaving: redirect loops and strange redirects, token services
that hang or talk nonsense, lengths that lie.  Clear errors, nothing cached,
no client left hanging."""

from __future__ import annotations

import os

from ..fakeregistry import AUTH_HOST, FakeRegistry
from .harness import Harness


def cached_blobs(harness) -> list[str]:
    return [f for _, _, files in os.walk(os.path.join(harness.cache_dir)) for f in files if len(f) == 64]


class Redirecting(FakeRegistry):
    """Blob GETs answer with a redirect to `location`."""

    location: str = ""

    def render(self, request):
        if b"/blobs/" in request.path and request.getRequestHostname() != b"cdn.fake":
            self.seen.append(None)  # counted, not inspected
            request.setResponseCode(307)
            request.setHeader(b"Location", self.location.encode())
            return b""
        return super().render(request)


def harness_with(tmp_path, registry) -> Harness:
    return Harness(str(tmp_path / "cache"), registry=registry)


def test_a_redirect_loop_is_a_502_after_a_few_hops(tmp_path):
    registry = Redirecting()
    registry.location = "/v2/library/a/blobs/sha256:" + "1" * 64
    harness = harness_with(tmp_path, registry)

    response = harness.get("/v2/library/a/blobs/sha256:" + "1" * 64)

    assert response.status == 502 and response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "redirects" in response.json()["errors"][0]["message"]
    assert len(registry.seen) == 6  # the first request and five redirects, no more
    assert cached_blobs(harness) == []


def test_a_redirect_to_a_non_http_url_is_refused(tmp_path):
    registry = Redirecting()
    registry.location = "file:///etc/passwd"
    harness = harness_with(tmp_path, registry)

    response = harness.get("/v2/library/a/blobs/sha256:" + "2" * 64)

    assert response.status == 502
    assert "non-HTTP(S)" in response.json()["errors"][0]["message"]


class GarbageTokens(FakeRegistry):
    def _token(self, request):
        self.issued += 1
        return b"<html>proxy error</html>"


def test_a_token_service_that_talks_nonsense_is_a_502_not_a_denial(tmp_path):
    registry = GarbageTokens(require_token=True)
    harness = harness_with(tmp_path, registry)

    response = harness.get("/v2/library/a/manifests/latest")

    assert response.status == 502
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


class HangingTokens(FakeRegistry):
    def _token(self, request):
        from twisted.web.server import NOT_DONE_YET

        self.issued += 1
        return NOT_DONE_YET  # never answers


def test_a_token_service_that_hangs_is_a_504_after_the_header_timeout(tmp_path):
    registry = HangingTokens(require_token=True)
    harness = harness_with(tmp_path, registry)
    client = harness.send("GET", "/v2/library/a/manifests/latest")
    harness.pump()
    assert client.response() is None

    harness.clock.advance(harness.settings.timeouts.headers + 1)
    harness.pump()

    response = client.response()
    assert response.status == 504 and response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert registry.count("GET", "/token", host=AUTH_HOST) == 1


class LyingLength(FakeRegistry):
    """Says Content-Length is `claimed` for every blob."""

    claimed: int = 0

    def render(self, request):
        if b"/blobs/" in request.path:
            original = request.setHeader

            def set_header(name, value):
                if name.lower() == b"content-length":
                    value = str(self.claimed).encode()
                original(name, value)

            request.setHeader = set_header
        return super().render(request)


def test_a_content_length_shorter_than_the_blob_fails_verification(tmp_path):
    registry = LyingLength()
    data = os.urandom(200_000)
    digest = registry.add_blob(data)
    registry.claimed = 150_000
    harness = harness_with(tmp_path, registry)

    client = harness.send("GET", f"/v2/library/a/blobs/{digest}")
    harness.pump()

    response = client.response()
    assert response.aborted and not response.complete
    assert cached_blobs(harness) == []
    assert harness.mirror.blobs.failures["digest"] == 1


def test_a_content_length_longer_than_the_blob_never_ends_cleanly(tmp_path):
    registry = LyingLength()
    registry.honour_ranges = False
    data = os.urandom(200_000)
    digest = registry.add_blob(data)
    registry.claimed = 250_000
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
