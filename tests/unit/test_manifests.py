"""Manifest GET/HEAD through the mirror: exact bytes, tag freshness, integrity.

Counts of upstream GETs matter to users: Docker Hub counts manifest GETs
against pull limits, HEADs not.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.logger import capturedLogs

from mirrorproxy.registry.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.filesystem import _write_and_commit
from mirrorproxy.storage.values import TagRecord

from ..fakeregistry import AUTH_HOST, REGISTRY_HOST, FakeRegistry, sha256
from .cachebuilder import run
from .harness import Harness, cache_turned_read_only, run_inline

REPO = "library/alpine"
TTL = 300.0


def manifest_path(reference: str, repository: str = REPO) -> str:
    return f"/v2/{repository}/manifests/{reference}"


def docker_manifest(seed: str) -> bytes:
    # Not canonical JSON on purpose: the mirror must never re-serialise.
    return (
        '{\n   "schemaVersion": 2,\n   "mediaType": "%s",\n   "config": {"mediaType": '
        '"application/vnd.docker.container.image.v1+json", "size": 2, "digest": "%s"},\n'
        '   "layers": []  ,"seed":"%s"}' % (DOCKER_MANIFEST, sha256(seed.encode()), seed)
    ).encode()


def index(media_type: str, *manifests: tuple[str, int]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
                for digest, size in manifests
            ],
        },
        indent=3,
    ).encode()


def upstream_gets(harness: Harness) -> int:
    return harness.registry.count("GET", "/manifests/")


def upstream_heads(harness: Harness) -> int:
    return harness.registry.count("HEAD", "/manifests/")


def cache_latest(harness: Harness) -> tuple[str, bytes]:
    """Upstream tags ``latest`` (a Docker manifest) and one GET through the
    mirror caches it; the manifest's digest and body."""
    body = docker_manifest("one")
    digest = harness.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)
    harness.get(manifest_path("latest"))
    return digest, body


# -- GET and HEAD ---------------------------------------------------------------


def test_get_by_tag_serves_upstream_bytes_and_headers(harness):
    body = docker_manifest("one")
    digest = harness.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)

    response = harness.get(manifest_path("latest"))

    assert response.status == 200
    assert response.body == body
    assert response.headers["content-type"] == DOCKER_MANIFEST
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["content-length"] == str(len(body))
    assert upstream_gets(harness) == 1


def test_get_by_digest_serves_exact_bytes(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])

    response = harness.get(manifest_path(digest))

    assert (response.status, response.body) == (200, body)
    assert response.headers["content-type"] == OCI_MANIFEST
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["content-length"] == str(len(body))


def test_head_by_tag_after_get_has_the_get_headers_and_no_body(harness):
    body = docker_manifest("one")
    digest = harness.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)
    harness.get(manifest_path("latest"))

    response = harness.head(manifest_path("latest"))

    assert response.status == 200
    assert response.body == b""
    assert response.headers["content-type"] == DOCKER_MANIFEST
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["content-length"] == str(len(body))
    assert upstream_gets(harness) + upstream_heads(harness) == 1


def test_head_by_digest_has_digest_type_and_length(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])

    response = harness.head(manifest_path(digest))

    assert response.status == 200
    assert response.body == b""
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["content-type"] == OCI_MANIFEST
    assert response.headers["content-length"] == str(len(body))


def test_head_on_uncached_tag_is_answered_by_a_head_upstream(harness):
    """The answer comes from upstream's HEAD (not counted against Docker
    Hub's pull limit); the manifest it names is then fetched once, in the
    background, so the tag can be served whole later with upstream down."""
    body = docker_manifest("one")
    digest = harness.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)

    client = harness.send("HEAD", manifest_path("latest"))
    harness.pump()
    response = client.response()

    assert response.status == 200
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["content-type"] == DOCKER_MANIFEST
    assert upstream_heads(harness) == 1
    assert [s.path for s in harness.registry.seen if s.method == "GET"] == [f"/v2/{REPO}/manifests/{digest}"]


def test_head_then_get_by_digest_downloads_once(harness):
    """dockerd's sequence: HEAD the tag, GET the digest it names."""
    body = docker_manifest("one")
    digest = harness.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)

    head = harness.head(manifest_path("latest"))
    get = harness.get(manifest_path(head.headers["docker-content-digest"]))
    again = harness.get(manifest_path(digest))

    assert get.body == body and again.body == body
    assert (upstream_heads(harness), upstream_gets(harness)) == (1, 1)


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
def test_index_and_manifest_list_are_served_with_their_type(harness, media_type):
    child, child_body = harness.registry.add_image(REPO, None, [b"layer"])  # type: ignore[arg-type]
    body = index(media_type, (child, len(child_body)))
    digest = harness.registry.add_manifest(REPO, "multi", body, media_type)

    by_tag = harness.get(manifest_path("multi"))
    by_digest = harness.get(manifest_path(digest))
    child_response = harness.get(manifest_path(child))

    assert (by_tag.status, by_tag.body, by_tag.headers["content-type"]) == (200, body, media_type)
    assert by_tag.headers["docker-content-digest"] == digest
    assert (by_digest.body, by_digest.headers["content-type"]) == (body, media_type)
    assert (child_response.body, child_response.headers["content-type"]) == (child_body, OCI_MANIFEST)
    assert upstream_gets(harness) == 2  # the index once, the child once


# -- tag freshness ----------------------------------------------------------


def test_second_get_within_ttl_costs_nothing_upstream(harness):
    _, body = cache_latest(harness)
    seen = len(harness.registry.seen)

    harness.clock.advance(TTL - 1)
    second = harness.get(manifest_path("latest"))
    head = harness.head(manifest_path("latest"))

    assert (second.status, second.body) == (200, body)
    assert head.status == 200
    assert second.headers["x-cache"] == "HIT"
    assert len(harness.registry.seen) == seen


def test_after_ttl_unchanged_tag_is_revalidated_with_one_head(harness):
    digest, body = cache_latest(harness)
    gets_before = upstream_gets(harness)

    harness.clock.advance(TTL + 1)
    response = harness.get(manifest_path("latest"))

    assert (response.status, response.body) == (200, body)
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["x-cache"] == "REVALIDATED"
    assert upstream_heads(harness) == 1
    assert upstream_gets(harness) - gets_before == 0


def test_a_tag_another_node_revalidated_is_not_revalidated_again(harness):
    """Past its TTL a tag is read from the store once more before upstream
    is asked: in a cluster another node may have revalidated it (its record
    in Redis), and one revalidation per TTL is enough for all."""
    digest, body = cache_latest(harness)
    harness.clock.advance(TTL + 1)
    key = harness.settings.served()[0].upstream.cache_key
    record = run(harness.store.read_tag(key, REPO, "latest"))
    renewed = TagRecord(record.digest, record.media_type, record.size, harness.clock.seconds())
    run(harness.store.write_tag(key, REPO, "latest", renewed))

    response = harness.get(manifest_path("latest"))

    assert (response.status, response.body, response.headers["x-cache"]) == (200, body, "HIT")
    assert upstream_heads(harness) == 0


def test_client_head_after_ttl_revalidates_with_one_upstream_head(harness):
    digest, body = cache_latest(harness)
    gets_before = upstream_gets(harness)

    harness.clock.advance(TTL + 1)
    response = harness.head(manifest_path("latest"))

    assert response.status == 200
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["x-cache"] == "REVALIDATED"
    assert upstream_heads(harness) == 1
    assert upstream_gets(harness) - gets_before == 0


def test_revalidation_restarts_the_ttl(harness):
    cache_latest(harness)
    harness.clock.advance(TTL + 1)
    harness.get(manifest_path("latest"))

    harness.clock.advance(TTL - 1)
    harness.get(manifest_path("latest"))

    assert (upstream_heads(harness), upstream_gets(harness)) == (1, 1)


def test_after_ttl_changed_tag_downloads_the_new_manifest(harness):
    old = docker_manifest("old")
    harness.registry.add_manifest(REPO, "latest", old, DOCKER_MANIFEST)
    harness.get(manifest_path("latest"))
    new = docker_manifest("new")
    new_digest = harness.registry.add_manifest(REPO, "latest", new, DOCKER_MANIFEST)

    harness.clock.advance(TTL - 1)
    assert harness.get(manifest_path("latest")).body == old  # still fresh
    harness.clock.advance(2)
    response = harness.get(manifest_path("latest"))

    assert (response.status, response.body) == (200, new)
    assert response.headers["docker-content-digest"] == new_digest
    assert (upstream_heads(harness), upstream_gets(harness)) == (1, 2)
    # And the new answer is what the cache now holds.
    assert harness.get(manifest_path("latest")).body == new
    assert upstream_gets(harness) == 2


def test_head_after_ttl_on_changed_tag_reports_the_new_digest(harness):
    harness.registry.add_manifest(REPO, "latest", docker_manifest("old"), DOCKER_MANIFEST)
    harness.get(manifest_path("latest"))
    new = docker_manifest("new")
    new_digest = harness.registry.add_manifest(REPO, "latest", new, DOCKER_MANIFEST)

    harness.clock.advance(TTL + 1)
    response = harness.head(manifest_path("latest"))

    assert response.headers["docker-content-digest"] == new_digest
    assert response.headers["content-length"] == str(len(new))
    # The HEAD was answered by upstream's HEAD; the new manifest it names is
    # then fetched once by digest, in the background.
    gets = [s.path for s in harness.registry.seen if s.method == "GET" and "/manifests/" in s.path]
    assert gets == [manifest_path("latest"), manifest_path(new_digest)]


def test_head_after_ttl_on_changed_tag_costs_one_upstream_head(harness):
    harness.registry.add_manifest(REPO, "latest", docker_manifest("old"), DOCKER_MANIFEST)
    harness.get(manifest_path("latest"))
    harness.registry.add_manifest(REPO, "latest", docker_manifest("new"), DOCKER_MANIFEST)

    harness.clock.advance(TTL + 1)
    harness.head(manifest_path("latest"))

    assert upstream_heads(harness) == 1


def test_by_digest_is_never_fetched_again(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.get(manifest_path(digest))

    harness.clock.advance(10 * 365 * 24 * 3600)
    responses = [harness.get(manifest_path(digest)), harness.head(manifest_path(digest))]

    assert [r.status for r in responses] == [200, 200]
    assert responses[0].body == body
    assert responses[0].headers["x-cache"] == "HIT"
    assert len(harness.registry.seen) == 1


def test_by_digest_from_any_repository_shares_the_cache(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.get(manifest_path(digest))

    response = harness.get(manifest_path(digest, "someone/fork"))

    assert response.body == body
    assert upstream_gets(harness) == 1


# -- stale on upstream failure ------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_upstream_failure_after_ttl_serves_cached_tag_stale(harness, status):
    digest, body = cache_latest(harness)

    harness.clock.advance(TTL + 1)
    harness.registry.status_override = lambda seen: status
    response = harness.get(manifest_path("latest"))
    head = harness.head(manifest_path("latest"))

    assert (response.status, response.body) == (200, body)
    assert response.headers["x-cache"] == "STALE"
    assert response.headers["docker-content-digest"] == digest
    assert (head.status, head.headers["x-cache"]) == (200, "STALE")


def test_upstream_failure_without_cache_is_an_error(harness):
    harness.registry.add_manifest(REPO, "latest", docker_manifest("one"), DOCKER_MANIFEST)
    harness.registry.status_override = lambda seen: 503
    response = harness.get(manifest_path("latest"))
    assert response.status == 502
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_stale_tag_is_refreshed_once_upstream_recovers(harness):
    cache_latest(harness)
    harness.clock.advance(TTL + 1)
    harness.registry.status_override = lambda seen: 503
    assert harness.get(manifest_path("latest")).headers["x-cache"] == "STALE"

    harness.registry.status_override = None
    new = docker_manifest("two")
    harness.registry.add_manifest(REPO, "latest", new, DOCKER_MANIFEST)
    response = harness.get(manifest_path("latest"))

    assert response.body == new


def test_token_service_outage_after_ttl_serves_cached_tag_stale(harness):
    harness.registry.require_token = True
    _, body = cache_latest(harness)

    harness.clock.advance(TTL + 1)  # the 300 s token has expired too
    harness.registry.status_override = lambda seen: 503 if seen.host == AUTH_HOST else None
    response = harness.get(manifest_path("latest"))

    assert (response.status, response.body) == (200, body)
    assert response.headers["x-cache"] == "STALE"


# -- integrity --------------------------------------------------------------


def test_wrong_bytes_for_a_digest_are_refused_and_not_cached(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.registry.wrong_bytes[digest] = body.replace(b"amd64", b"arm64") + b" "

    refused = harness.get(manifest_path(digest))

    assert refused.status == 502
    assert refused.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert b"arm64" not in refused.body

    del harness.registry.wrong_bytes[digest]
    fixed = harness.get(manifest_path(digest))
    assert (fixed.status, fixed.body) == (200, body)
    assert upstream_gets(harness) == 2


def test_wrong_bytes_for_a_tag_are_refused_and_the_tag_not_recorded(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.registry.wrong_bytes[digest] = b'{"schemaVersion":2,"evil":true}'

    refused = harness.get(manifest_path("latest"))

    assert refused.status == 502
    assert refused.json()["errors"][0]["code"] == "UNAVAILABLE"
    del harness.registry.wrong_bytes[digest]
    fixed = harness.get(manifest_path("latest"))
    assert (fixed.status, fixed.body) == (200, body)
    assert upstream_gets(harness) == 2


def test_wrong_bytes_without_a_digest_header_are_still_refused(tmp_path):
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(digest_header=False))
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.registry.wrong_bytes[digest] = body + b"\n"

    refused = harness.get(manifest_path(digest))

    assert refused.status == 502
    del harness.registry.wrong_bytes[digest]
    assert harness.get(manifest_path(digest)).body == body


def test_tag_digest_is_computed_when_upstream_omits_the_header(tmp_path):
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(digest_header=False))
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])

    response = harness.get(manifest_path("latest"))

    assert response.body == body
    assert response.headers["docker-content-digest"] == digest


# -- Accept ---------------------------------------------------------------


def test_accept_is_forwarded_upstream_on_a_miss(harness):
    harness.registry.add_manifest(REPO, "latest", docker_manifest("one"), DOCKER_MANIFEST)
    accept = f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"

    harness.get(manifest_path("latest"), Accept=accept)

    (get,) = [s for s in harness.registry.seen if s.method == "GET"]
    forwarded = {t.strip() for t in get.headers["accept"].split(",")}
    assert forwarded == {DOCKER_MANIFEST, OCI_MANIFEST}


def test_without_accept_mirror_asks_upstream_for_every_manifest_type(harness):
    harness.registry.add_manifest(REPO, "latest", docker_manifest("one"), DOCKER_MANIFEST)

    harness.get(manifest_path("latest"))

    (get,) = [s for s in harness.registry.seen if s.method == "GET"]
    forwarded = {t.strip() for t in get.headers["accept"].split(",")}
    assert {DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX} <= forwarded


def test_cached_manifest_of_unaccepted_type_is_not_served_from_cache(tmp_path):
    harness = Harness(str(tmp_path / "cache"))
    narrow = docker_manifest("amd64")
    narrow_digest = harness.registry.add_manifest(REPO, None, narrow, DOCKER_MANIFEST)
    wide = index(DOCKER_MANIFEST_LIST, (narrow_digest, len(narrow)))
    wide_digest = harness.registry.add_manifest(REPO, "latest", wide, DOCKER_MANIFEST_LIST)
    # Upstream serves old clients the platform's manifest, as Docker Hub does.
    harness.registry.narrow_tags[(REPO, "latest")] = narrow_digest
    first = harness.get(manifest_path("latest"))
    assert first.body == wide

    old_client = harness.get(manifest_path("latest"), Accept=DOCKER_MANIFEST)

    assert (old_client.status, old_client.body) == (200, narrow)
    assert old_client.headers["content-type"] == DOCKER_MANIFEST
    assert old_client.headers["docker-content-digest"] == narrow_digest
    assert upstream_gets(harness) == 2
    # The narrow answer did not replace the tag's full answer for everyone else.
    later = harness.get(manifest_path("latest"))
    assert (later.body, later.headers["docker-content-digest"]) == (wide, wide_digest)
    assert upstream_gets(harness) == 2


def test_cached_by_digest_of_unaccepted_type_is_refused_without_asking_upstream(harness):
    """A digest names the same bytes whoever asks: upstream could only say
    that it is a type the client does not take, and count the pull."""
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.get(manifest_path(digest))

    response = harness.get(manifest_path(digest), Accept=DOCKER_MANIFEST)

    assert (response.status, response.json()["errors"][0]["code"]) == (404, "MANIFEST_UNKNOWN")
    assert upstream_gets(harness) == 1


def test_wildcard_accept_is_served_from_cache(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.get(manifest_path("latest"))

    response = harness.get(manifest_path("latest"), Accept=f"{DOCKER_MANIFEST}, */*")

    assert response.body == body
    assert upstream_gets(harness) == 1


# -- errors -----------------------------------------------------------------


def test_unknown_tag_is_manifest_unknown(harness):
    response = harness.get(manifest_path("nope"))
    assert response.status == 404
    assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_unknown_tag_head_is_404(harness):
    response = harness.head(manifest_path("nope"))
    assert response.status == 404
    assert upstream_gets(harness) == 0


def test_unknown_tag_is_asked_again_after_the_negative_ttl(harness):
    """A 404 is remembered only briefly: an image pushed a moment later is
    found once the negative TTL is over."""
    harness.get(manifest_path("latest"))
    body = docker_manifest("one")
    harness.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)
    harness.clock.advance(harness.settings.negative_ttl)

    assert harness.get(manifest_path("latest")).body == body


@pytest.fixture
def slow(tmp_path):
    """The fake registry holding manifest answers until the test releases them."""
    return Harness(str(tmp_path / "cache"), registry=FakeRegistry(hold_manifests=True))


def cache_latest_released(slow) -> bytes:
    """`cache_latest` through the slow registry, its answer released at once;
    the manifest's body."""
    body = docker_manifest("one")
    slow.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)
    slow.send("GET", manifest_path("latest"))
    slow.registry.release_manifests()
    slow.pump()
    return body


def test_concurrent_gets_of_one_tag_cost_one_upstream_get(slow):
    body = docker_manifest("one")
    slow.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)

    clients = [slow.send("GET", manifest_path("latest")) for _ in range(5)]
    slow.pump()
    assert [c.response() for c in clients] == [None] * 5
    slow.registry.release_manifests()
    slow.pump()

    assert [c.response().body for c in clients] == [body] * 5
    assert upstream_gets(slow) == 1


def test_concurrent_gets_of_one_digest_cost_one_upstream_get(slow):
    digest, body = slow.registry.add_image(REPO, "latest", [b"layer"])

    clients = [slow.send("GET", manifest_path(digest)) for _ in range(3)]
    slow.pump()
    slow.registry.release_manifests()
    slow.pump()

    assert [c.response().body for c in clients] == [body] * 3
    assert upstream_gets(slow) == 1


def test_concurrent_revalidations_cost_one_upstream_head(slow):
    body = cache_latest_released(slow)
    slow.clock.advance(TTL + 1)

    clients = [slow.send("GET", manifest_path("latest")) for _ in range(4)]
    slow.pump()
    slow.registry.release_manifests()
    slow.pump()

    assert [c.response().body for c in clients] == [body] * 4
    assert (upstream_heads(slow), upstream_gets(slow)) == (1, 1)


def test_client_leaving_does_not_cancel_the_fetch_for_others(slow):
    body = docker_manifest("one")
    slow.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)
    leaver = slow.send("GET", manifest_path("latest"))
    stayer = slow.send("GET", manifest_path("latest"))
    slow.pump()

    leaver.disconnect()
    slow.registry.release_manifests()
    slow.pump()

    assert stayer.response().body == body
    assert slow.get(manifest_path("latest")).headers["x-cache"] == "HIT"
    assert upstream_gets(slow) == 1


def test_hung_upstream_after_ttl_serves_stale_after_the_header_timeout(slow):
    body = cache_latest_released(slow)
    slow.clock.advance(TTL + 1)

    client = slow.send("GET", manifest_path("latest"))
    slow.pump()
    assert client.response() is None  # the revalidating HEAD hangs
    slow.clock.advance(slow.settings.timeouts.headers + 1)
    slow.pump()

    response = client.response()
    assert (response.status, response.body) == (200, body)
    assert response.headers["x-cache"] == "STALE"


def test_hung_upstream_without_cache_is_504(slow):
    slow.registry.add_manifest(REPO, "latest", docker_manifest("one"), DOCKER_MANIFEST)

    client = slow.send("GET", manifest_path("latest"))
    slow.pump()
    slow.clock.advance(slow.settings.timeouts.headers + 1)
    slow.pump()

    response = client.response()
    assert response.status == 504
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_a_wildcard_accept_asks_upstream_for_every_modern_type(harness):
    """curl and other clients send */*; upstream must still be asked for
    OCI and Docker types by name, or distribution answers 404."""
    import json as _json

    body = _json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}).encode()
    harness.registry.add_manifest("library/curl", "v1", body, "application/vnd.oci.image.index.v1+json")

    response = harness.get("/v2/library/curl/manifests/v1", accept="*/*")

    assert response.status == 200 and response.body == body
    sent = [s.headers["accept"] for s in harness.registry.seen if "/manifests/" in s.path][-1]
    assert "application/vnd.oci.image.index.v1+json" in sent and "*/*" in sent


def purge_tag(harness: Harness, repository: str, tag: str) -> None:
    """What `mirrorproxy purge REPOSITORY:TAG` does to the cache."""
    from mirrorproxy.admin.gc import purge
    from mirrorproxy.admin.inventory import scan

    purge(scan(harness.cache_dir), repository, tag, 3600.0, 0.0, with_content=False)


def test_a_purged_tag_is_asked_upstream_again_within_a_second(harness):
    """`mirrorproxy purge` acts on a running mirror within TAGS_STAMP_INTERVAL."""
    from mirrorproxy.cache.manifests import TAGS_STAMP_INTERVAL

    digest, body = harness.registry.add_image("library/hot", "v1", [b"layer"])
    assert harness.get("/v2/library/hot/manifests/v1").body == body
    assert harness.get("/v2/library/hot/manifests/v1").headers["x-cache"] == "HIT"
    before = harness.registry.count("GET", "/manifests/")
    purge_tag(harness, "library/hot", "v1")
    harness.clock.advance(TAGS_STAMP_INTERVAL)

    again = harness.get("/v2/library/hot/manifests/v1")

    assert (again.body, again.headers["x-cache"]) == (body, "MISS")
    assert harness.registry.count("GET", "/manifests/") == before + 1


def test_tag_hits_within_the_ttl_read_nothing_from_disk(tmp_path):
    from .harness import Harness

    reads: list[str] = []

    def run(function, *args):
        reads.append(function.__name__)
        return run_inline(function, *args)

    harness = Harness(str(tmp_path / "cache"), run=run)
    digest, body = harness.registry.add_image("library/hot", "v1", [b"layer"])
    harness.get("/v2/library/hot/manifests/v1")
    reads.clear()

    for _ in range(3):
        hit = harness.get("/v2/library/hot/manifests/v1")
        assert (hit.body, hit.headers["x-cache"]) == (body, "HIT")

    assert reads == []  # within a second of the last look at the cache stamp
    harness.clock.advance(1)
    harness.get("/v2/library/hot/manifests/v1")
    assert reads == ["_read_small"]  # the stamp, not the tag record


def test_a_tag_record_read_while_a_purge_is_noticed_is_not_kept(tmp_path):
    """A read that started before the purge must not put the purged record
    back in memory after the mirror has forgotten it."""
    from .harness import Harness, ManualRunner

    runner = ManualRunner()
    harness = Harness(str(tmp_path / "cache"), run=runner)
    digest, body = harness.registry.add_image("library/hot", "v1", [b"layer"])
    first = harness.send("GET", "/v2/library/hot/manifests/v1")
    while runner.jobs:
        runner.run_all()
        harness.pump()
    assert first.response().body == body
    cache = harness.mirror.manifests
    cache._held.forget()  # as if evicted: the next hit reads the record

    harness.clock.advance(1)
    slow = harness.send("GET", "/v2/library/hot/manifests/v1")
    runner.run_one("_read_small")  # the stamp, unchanged; the record's read waits
    ((read, args, delivered),) = runner.jobs
    runner.jobs.clear()
    record_bytes = read(*args)  # read from disk before the purge...
    purge_tag(harness, "library/hot", "v1")
    harness.clock.advance(1)
    # Another tag's pull notices the purge before the slow read is done.
    noticing = Deferred.fromCoroutine(cache._notice_admin_changes())
    stamp_job = runner.jobs[-1]
    runner.jobs.remove(stamp_job)
    stamp_job[2].callback(stamp_job[0](*stamp_job[1]))
    assert cache._stamp is not None
    delivered.callback(record_bytes)  # ...and back after the purge was noticed
    while runner.jobs:
        runner.run_all()
        harness.pump()

    assert slow.response().body == body
    assert noticing.called and noticing.result is None
    assert not cache._held.holds_record(("library/hot", "v1", None))


# -- a cache that cannot take them -------------------------------------------------


def cache_files(harness: Harness) -> list[str]:
    root = Path(harness.cache_dir)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def disk_full_when_writing(function, *args):
    if function is _write_and_commit:
        fd, spool_path = args[0], args[1]
        os.close(fd)
        os.unlink(spool_path)
        return fail(OSError(errno.ENOSPC, "No space left on device"))
    return run_inline(function, *args)


@pytest.mark.parametrize(
    "run", [cache_turned_read_only(), disk_full_when_writing], ids=["read-only", "disk-full"]
)
def test_a_cache_that_cannot_write_still_answers_by_tag_and_by_digest(tmp_path, run):
    harness = Harness(str(tmp_path / "cache"), run=run)
    body = docker_manifest("one")
    digest = harness.registry.add_manifest(REPO, "latest", body, DOCKER_MANIFEST)

    by_tag = harness.get(manifest_path("latest"))
    by_digest = harness.get(manifest_path(digest))

    for response in (by_tag, by_digest):
        assert (response.status, response.body) == (200, body)
        assert response.headers["docker-content-digest"] == digest
    assert cache_files(harness) == []
    # No tag record could be kept: the next pull by tag asks upstream again.
    assert harness.get(manifest_path("latest")).body == body
    assert upstream_gets(harness) == 2


def gc_tag_with_content(harness: Harness, repository: str, tag: str) -> None:
    """What `mirrorproxy purge REPOSITORY:TAG --gc --grace 0` does to the cache."""
    from mirrorproxy.admin.gc import purge
    from mirrorproxy.admin.inventory import scan

    purge(scan(harness.cache_dir), repository, tag, 0.0, time.time() + 3600, with_content=True)


def test_a_pull_after_purge_with_gc_puts_the_manifest_back_on_disk(harness):
    """The mirror must not trust a manifest it holds in memory once an admin
    command removed its file: the disk and the running mirror agree."""
    from mirrorproxy.cache.manifests import TAGS_STAMP_INTERVAL

    digest, body = harness.registry.add_image("library/multi", "v1", [b"layer"])
    assert harness.get("/v2/library/multi/manifests/v1").body == body
    manifest_file = Path(harness.mirror.store.manifest_path(harness.mirror.registry.cache_key, Digest.parse(digest)))
    assert manifest_file.exists()
    gc_tag_with_content(harness, "library/multi", "v1")
    assert not manifest_file.exists()
    harness.clock.advance(TAGS_STAMP_INTERVAL)

    again = harness.get("/v2/library/multi/manifests/v1")

    assert (again.body, again.headers["x-cache"]) == (body, "MISS")
    assert manifest_file.read_bytes() == body


def test_a_manifest_removed_by_an_admin_command_is_not_a_hit_from_memory(harness):
    from mirrorproxy.cache.manifests import TAGS_STAMP_INTERVAL

    digest, body = harness.registry.add_image("library/multi", "v1", [b"layer"])
    assert harness.get(f"/v2/library/multi/manifests/{digest}").body == body
    from mirrorproxy.admin.gc import collect
    from mirrorproxy.admin.inventory import scan

    collect(scan(harness.cache_dir), 0.0, time.time() + 3600)
    harness.clock.advance(TAGS_STAMP_INTERVAL)
    before = upstream_gets(harness)

    again = harness.get(f"/v2/library/multi/manifests/{digest}")

    assert (again.body, again.headers["x-cache"]) == (body, "MISS")
    assert upstream_gets(harness) == before + 1
    assert Path(harness.mirror.store.manifest_path(harness.mirror.registry.cache_key, Digest.parse(digest))).read_bytes() == body


def test_the_cache_size_is_measured_again_after_an_admin_command(harness):
    from mirrorproxy.cache.manifests import TAGS_STAMP_INTERVAL

    digest, body = harness.registry.add_image("library/multi", "v1", [b"layer" * 100])
    harness.get("/v2/library/multi/manifests/v1")
    harness.get(f"/v2/library/multi/blobs/{sha256(b'layer' * 100)}")
    assert harness.mirror.store.entries == 2
    gc_tag_with_content(harness, "library/multi", "v1")
    harness.clock.advance(TAGS_STAMP_INTERVAL)

    harness.get("/v2/library/other/manifests/v1")  # any request notices

    assert (harness.mirror.store.bytes, harness.mirror.store.entries) == (0, 0)


# -- a narrower Accept is cached too (its own answer) -------------------------------


def test_repeated_pulls_with_a_narrow_accept_cost_one_upstream_get(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])

    responses = [harness.get(manifest_path("latest"), Accept=OCI_MANIFEST) for _ in range(4)]

    assert [r.body for r in responses] == [body] * 4
    assert [r.headers["x-cache"] for r in responses] == ["MISS", "HIT", "HIT", "HIT"]
    assert upstream_gets(harness) == 1


def test_a_narrow_answer_never_replaces_the_full_one(harness):
    child, child_body = harness.registry.add_image(REPO, None, [b"layer"])  # type: ignore[arg-type]
    full = index(OCI_INDEX, (child, len(child_body)))
    harness.registry.add_manifest(REPO, "multi", full, OCI_INDEX)
    assert harness.get(manifest_path("multi")).body == full
    # Upstream answers a client that takes no index with the platform's
    # manifest, as registries that convert do.
    harness.registry.tags[(REPO, "multi")] = child
    narrow_answer = harness.get(manifest_path("multi"), Accept=OCI_MANIFEST)
    full_again = harness.get(manifest_path("multi"))

    assert narrow_answer.body == child_body
    assert (full_again.body, full_again.headers["x-cache"]) == (full, "HIT")


def test_a_narrow_client_is_served_the_full_answer_when_it_takes_it(harness):
    """A tag whose full answer is a plain manifest answers a client that
    takes only that type with the same bytes: no upstream request."""
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.get(manifest_path("latest"))

    narrow = harness.get(manifest_path("latest"), Accept=OCI_MANIFEST)

    assert (narrow.body, narrow.headers["x-cache"]) == (body, "HIT")
    assert upstream_gets(harness) == 1


def test_a_narrow_answer_survives_a_restart_and_is_served_stale(tmp_path):
    first = Harness(str(tmp_path / "cache"), tag_ttl=TTL)
    digest, body = first.registry.add_image(REPO, "latest", [b"layer"])
    assert first.get(manifest_path("latest"), Accept=OCI_MANIFEST).body == body

    again = Harness(str(tmp_path / "cache"), registry=first.registry, tag_ttl=TTL)
    again.clock.advance(TTL + 1)
    again.registry.status_override = lambda seen: 503

    response = again.get(manifest_path("latest"), Accept=OCI_MANIFEST)

    assert (response.status, response.body, response.headers["x-cache"]) == (200, body, "STALE")


# -- 404s remembered for a short while ---------------------------------------------


def not_found_answers(harness: Harness, path: str, count: int, method: str = "GET") -> list:
    return [harness.request(method, path) for _ in range(count)]


def test_a_missing_tag_asked_five_times_costs_one_upstream_request(harness):
    responses = not_found_answers(harness, manifest_path("nope"), 5)

    errors = {(r.status, r.json()["errors"][0]["code"], r.json()["errors"][0]["message"]) for r in responses}
    assert len(errors) == 1 and next(iter(errors))[:2] == (404, "MANIFEST_UNKNOWN")
    assert upstream_gets(harness) == 1


def test_a_missing_tag_is_asked_again_after_the_negative_ttl(harness):
    not_found_answers(harness, manifest_path("nope"), 2)
    harness.clock.advance(harness.settings.negative_ttl)
    not_found_answers(harness, manifest_path("nope"), 2)

    assert upstream_gets(harness) == 2


def test_an_unknown_repository_answers_for_all_its_tags(harness):
    harness.registry.canned["/v2/library/ghost/manifests/a"] = (
        404,
        {"Content-Type": "application/json"},
        b'{"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]}',
    )
    first = harness.get(manifest_path("a", "library/ghost"))
    others = [harness.get(manifest_path(tag, "library/ghost")) for tag in ("b", "c")]
    listing = harness.get("/v2/library/ghost/tags/list")

    for response in [first, *others, listing]:
        assert (response.status, response.json()["errors"][0]["code"]) == (404, "NAME_UNKNOWN")
    assert len([s for s in harness.registry.seen if "/library/ghost/" in s.path]) == 1


def test_head_of_a_missing_tag_is_remembered_too(harness):
    not_found_answers(harness, manifest_path("nope"), 3, method="HEAD")

    assert upstream_heads(harness) == 1


def test_a_missing_tag_list_is_remembered(harness):
    for _ in range(3):
        assert harness.get("/v2/library/nothing/tags/list").status == 404

    assert harness.registry.count("GET", "/tags/list") == 1


def test_a_negative_ttl_of_zero_remembers_nothing(tmp_path):
    harness = Harness(str(tmp_path / "cache"), negative_ttl=0)
    not_found_answers(harness, manifest_path("nope"), 3)

    assert upstream_gets(harness) == 3


# -- a tag resolved by HEAD can be served whole later ---------------------------------


def test_a_tag_resolved_by_head_is_served_whole_with_upstream_down(tmp_path):
    """dockerd resolves a tag with HEAD and fetches only the layers it lacks;
    the mirror still gets the manifest, so the next pull works when upstream
    is gone."""
    harness = Harness(str(tmp_path / "cache"), tag_ttl=TTL)
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    assert harness.head(manifest_path("latest")).headers["docker-content-digest"] == digest

    harness.clock.advance(TTL + 1)
    harness.registry.status_override = lambda seen: 503
    by_tag = harness.get(manifest_path("latest"))
    by_digest = harness.get(manifest_path(digest))

    assert (by_tag.status, by_tag.body, by_tag.headers["x-cache"]) == (200, body, "STALE")
    assert (by_digest.status, by_digest.body, by_digest.headers["x-cache"]) == (200, body, "HIT")


def test_the_manifest_behind_a_head_is_fetched_once_per_digest(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    harness.registry.tags[(REPO, "stable")] = digest

    harness.head(manifest_path("latest"))
    harness.head(manifest_path("stable"))
    get = harness.get(manifest_path(digest))  # what dockerd asks next

    assert (get.body, get.headers["x-cache"]) == (body, "HIT")
    assert [s.path for s in harness.registry.seen if s.method == "GET"] == [manifest_path(digest)]


def test_the_background_fetch_and_the_clients_get_by_digest_share_one_request(tmp_path):
    from .harness import ManualRunner

    runner = ManualRunner()
    harness = Harness(str(tmp_path / "cache"), run=runner)
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    head = harness.send("HEAD", manifest_path("latest"))
    get = harness.send("GET", manifest_path(digest))
    while runner.jobs:
        runner.run_all()
        harness.pump()

    assert head.response().headers["docker-content-digest"] == digest
    assert get.response().body == body
    assert upstream_gets(harness) == 1


def test_a_narrow_answer_goes_with_its_tag_and_keeps_its_manifest(harness):
    """The admin command knows a narrower client's record: gc keeps what it
    names, purge of the tag removes it too, ls lists the tag once."""
    from mirrorproxy.admin.contents import list_cache
    from mirrorproxy.admin.gc import collect, purge
    from mirrorproxy.admin.inventory import scan

    child, child_body = harness.registry.add_image(REPO, None, [b"layer"])  # type: ignore[arg-type]
    full = index(OCI_INDEX, (child, len(child_body)))
    harness.registry.add_manifest(REPO, "multi", full, OCI_INDEX)
    harness.get(manifest_path("multi"))
    # The narrow answer is a manifest the index does not reference: only its
    # own record keeps it alive.
    other, _ = harness.registry.add_image(REPO, None, [b"other layer"])  # type: ignore[arg-type]
    harness.registry.tags[(REPO, "multi")] = other
    harness.get(manifest_path("multi"), Accept=OCI_MANIFEST)
    other_file = Path(harness.mirror.store.manifest_path(harness.mirror.registry.cache_key, Digest.parse(other)))
    tags_dir = Path(harness.mirror.store.tag_path(harness.mirror.registry.cache_key, REPO, "multi")).parent

    listing = list_cache(scan(harness.cache_dir), REPO)
    assert [t.tag for r in listing.repositories for t in r.tags] == ["multi"]
    collect(scan(harness.cache_dir), 0.0, time.time() + 3600)
    assert other_file.exists()

    purge(scan(harness.cache_dir), REPO, "multi", 3600.0, 0.0, with_content=False)
    assert list(tags_dir.iterdir()) == []


# -- upstreams without manifest HEADs -------------------------------------------------


def manifest_requests(harness: Harness) -> list[tuple[str, str]]:
    return [(s.method, s.path) for s in harness.registry.seen if "/manifests/" in s.path]


@pytest.mark.parametrize("status", [405, 501, 400])
def test_a_head_miss_from_an_upstream_without_head_is_answered_by_one_get(tmp_path, status):
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(manifest_head_status=status))
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])

    head = harness.head(manifest_path("latest"))
    get = harness.get(manifest_path(digest))

    assert (head.status, head.headers["docker-content-digest"], head.body) == (200, digest, b"")
    assert head.headers["content-length"] == str(len(body))
    assert (get.body, get.headers["x-cache"]) == (body, "HIT")
    # One refused HEAD, one GET whose manifest is kept: no background fetch.
    assert manifest_requests(harness) == [("HEAD", manifest_path("latest")), ("GET", manifest_path("latest"))]


def test_an_upstream_that_refused_a_head_is_asked_by_get_alone_for_an_hour(tmp_path):
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(manifest_head_status=405))
    for tag in ("a", "b", "c"):
        harness.registry.add_image(REPO, tag, [tag.encode()])

    with capturedLogs() as events:
        assert harness.head(manifest_path("a")).status == 200
        assert harness.head(manifest_path("b")).status == 200
    harness.clock.advance(3600)
    assert harness.head(manifest_path("c")).status == 200

    assert [m for m, _ in manifest_requests(harness)] == ["HEAD", "GET", "GET", "HEAD", "GET"]
    (warning,) = [e for e in events if "does not answer manifest HEADs" in e.get("log_format", "")]
    assert (warning["registry"], warning["reason"]) == (REGISTRY_HOST, "upstream answered 405 to a manifest HEAD")


def test_a_tag_past_its_ttl_is_revalidated_by_get_not_served_stale(tmp_path):
    """Before, a 405 to the revalidating HEAD looked like an outage: the old
    digest was served STALE for ever."""
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(manifest_head_status=405))
    harness.registry.add_manifest(REPO, "latest", docker_manifest("old"), DOCKER_MANIFEST)
    harness.get(manifest_path("latest"))
    new = docker_manifest("new")
    new_digest = harness.registry.add_manifest(REPO, "latest", new, DOCKER_MANIFEST)
    harness.clock.advance(TTL + 1)

    head = harness.head(manifest_path("latest"))
    get = harness.get(manifest_path("latest"))

    assert (head.status, head.headers["docker-content-digest"], head.headers["x-cache"]) == (200, new_digest, "MISS")
    assert (get.body, get.headers["x-cache"]) == (new, "HIT")
    assert manifest_requests(harness) == [
        ("GET", manifest_path("latest")),
        ("HEAD", manifest_path("latest")),
        ("GET", manifest_path("latest")),
    ]


def test_an_unchanged_tag_revalidated_by_get_is_revalidated(tmp_path):
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(manifest_head_status=405))
    digest, body = cache_latest(harness)
    harness.clock.advance(TTL + 1)

    response = harness.get(manifest_path("latest"))

    assert (response.body, response.headers["x-cache"]) == (body, "REVALIDATED")
    assert upstream_gets(harness) == 2


def test_a_head_404_contradicted_by_get_keeps_a_cached_tag(tmp_path):
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(manifest_head_lies=True))
    digest, body = cache_latest(harness)
    harness.registry.add_image(REPO, "other", [b"other layer"])
    harness.clock.advance(TTL + 1)

    response = harness.get(manifest_path("latest"))
    other = harness.head(manifest_path("other"))

    assert (response.status, response.body, response.headers["x-cache"]) == (200, body, "REVALIDATED")
    assert other.status == 200
    # The lie found out, the next tag is resolved by GET without a HEAD first.
    assert [m for m, _ in manifest_requests(harness)] == ["GET", "HEAD", "GET", "GET"]


def test_a_cached_tag_deleted_upstream_is_404_after_a_head_and_a_get(harness):
    cache_latest(harness)
    del harness.registry.tags[(REPO, "latest")]
    harness.clock.advance(TTL + 1)

    response = harness.get(manifest_path("latest"))

    assert (response.status, response.json()["errors"][0]["code"]) == (404, "MANIFEST_UNKNOWN")
    assert [m for m, _ in manifest_requests(harness)] == ["GET", "HEAD", "GET"]
    # And a HEAD that says 404 for what is truly gone keeps HEADs in use.
    harness.registry.add_image(REPO, "next", [b"next layer"])
    assert harness.head(manifest_path("next")).status == 200
    assert [m for m, _ in manifest_requests(harness)][3] == "HEAD"


def test_a_head_404_for_a_tag_the_cache_never_had_is_believed(tmp_path):
    """A GET to check every 404 would double the cost of every miss (CI
    probing for tags); a HEAD that lies is found out on a tag the cache holds."""
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(manifest_head_lies=True))

    assert harness.head(manifest_path("missing")).status == 404
    assert manifest_requests(harness) == [("HEAD", manifest_path("missing"))]
