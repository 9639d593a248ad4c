"""The registry API surface as clients see it: routes, errors, names, tag lists, ranges.

dockerd falls back to Docker Hub on almost any error from a mirror, so status
codes and error codes here are what decides whether a pull works behind a
firewall.
"""

from __future__ import annotations

import os

import pytest

from mirrorproxy.registry.mediatypes import OCI_MANIFEST

from ..fakeregistry import CDN_HOST, REGISTRY_HOST, UPSTREAM_URL, sha256
from .harness import Harness, Response

HUB_URL = "https://registry-1.docker.io"
HUB_HOST = "registry-1.docker.io"


def error_code(response: Response) -> str:
    document = response.json()
    assert set(document) == {"errors"}
    (error,) = document["errors"]
    assert isinstance(error["message"], str)
    return error["code"]


def listing(root) -> set[str]:
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


# -- /v2/ and methods -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/", "/v2"])
def test_base_endpoint_answers_200_empty_json(harness, path):
    response = harness.get(path)

    assert (response.status, response.body) == (200, b"{}")
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.headers["content-type"].startswith("application/json")
    assert harness.registry.seen == []


def test_base_endpoint_needs_no_upstream_even_when_upstream_wants_tokens(harness):
    harness.registry.require_token = True
    response = harness.get("/v2/")
    assert response.status == 200
    assert harness.registry.seen == []


def test_head_base_endpoint(harness):
    response = harness.head("/v2/")
    assert response.status == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "path",
    [
        "/v2/library/alpine/blobs/uploads/",
        "/v2/library/alpine/manifests/latest",
        f"/v2/library/alpine/blobs/{sha256(b'x')}",
        "/v2/",
    ],
)
def test_writes_are_refused_with_405_unsupported(harness, method, path):
    harness.registry.add_manifest("library/alpine", "latest", b"{}", OCI_MANIFEST)
    response = harness.request(method, path, {"Content-Length": "0"})

    assert response.status == 405
    assert error_code(response) == "UNSUPPORTED"
    assert response.headers["content-type"].startswith("application/json")
    assert harness.registry.seen == []


@pytest.mark.parametrize("path", ["/", "/v1/_ping", "/v2/_catalog", "/v2/library/alpine/blobs/uploads/"])
def test_unknown_endpoints_are_404_unsupported(harness, path):
    response = harness.get(path)
    assert response.status == 404
    assert error_code(response) == "UNSUPPORTED"
    assert harness.registry.seen == []


# -- names, tags and digests in paths -----------------------------------------


@pytest.mark.parametrize(
    "name", ["Alpine", "-alpine", "alpine-", "a__/b", "a//b", "_a", ".a", "a" * 256, "a:b", "a@b"]
)
def test_invalid_names_are_400_name_invalid(harness, name):
    response = harness.get(f"/v2/{name}/manifests/latest")
    assert response.status == 400
    assert error_code(response) == "NAME_INVALID"
    assert harness.registry.seen == []


@pytest.mark.parametrize(
    "path",
    [
        "/v2/library/alpine/blobs/sha256:abc",
        f"/v2/library/alpine/blobs/sha256:{'A' * 64}",
        "/v2/library/alpine/blobs/latest",
        "/v2/library/alpine/manifests/sha256:abc",
        f"/v2/library/alpine/manifests/sha256:{'a' * 63}",
        f"/v2/library/alpine/manifests/SHA256:{'a' * 64}",
    ],
)
def test_malformed_digests_are_400_digest_invalid(harness, path):
    response = harness.get(path)
    assert response.status == 400
    assert error_code(response) == "DIGEST_INVALID"
    assert harness.registry.seen == []


@pytest.mark.parametrize("kind", ["blobs", "manifests"])
def test_sha512_digest_is_400_unsupported(harness, kind):
    response = harness.get(f"/v2/library/alpine/{kind}/sha512:{'a' * 128}")
    assert response.status == 400
    assert error_code(response) == "UNSUPPORTED"
    assert harness.registry.seen == []


@pytest.mark.parametrize("tag", ["-latest", ".latest", "a" * 129])
def test_invalid_tags_are_400_tag_invalid(harness, tag):
    response = harness.get(f"/v2/library/alpine/manifests/{tag}")
    assert response.status == 400
    assert error_code(response) == "TAG_INVALID"


ESCAPE = "../../../escape"  # from <cache>/<registry>/repositories/ up to tmp_path

TRAVERSALS = [
    f"/v2/{ESCAPE}/manifests/latest",
    "/v2/%2e%2e/%2e%2e/%2e%2e/escape/manifests/latest",
    "/v2/%2E%2E%2F%2E%2E%2F%2E%2E%2Fescape/manifests/latest",
    "/v2/library%2f..%2f..%2f..%2fescape/manifests/latest",
    "/v2/..\\..\\..\\escape/manifests/latest",
    "/v2/escape%00/manifests/latest",
    "/v2/library/alpine/manifests/..",
    "/v2/library/alpine/manifests/%2e%2e",
    "/v2/library/alpine/manifests/..%2f..%2f..%2f..%2f..%2fescape",
    "/v2/library/alpine/manifests/..\\..\\escape",
    "/v2/library/alpine/manifests/latest%00",
    "/v2/library/alpine/blobs/sha256:..%2f..%2fescape",
    "/v2/library/alpine/blobs/sha256%3a" + "a" * 64,
    f"/v2/{ESCAPE}/blobs/{sha256(b'escape')}",
    f"/v2/{ESCAPE}/tags/list",
    "/v2/library/alpine/tags/list?last=..%2f..%2fescape",
    "/v2/./library/alpine/manifests/latest",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_refused_and_touches_nothing(tmp_path, path):
    harness = Harness(str(tmp_path / "cache"))
    # Content waiting upstream under the names, so a mirror that let one
    # through would have something to write.
    for repository in (ESCAPE, "escape", "../escape", "library/alpine"):
        harness.registry.add_manifest(repository, "latest", b'{"schemaVersion":2}', OCI_MANIFEST)
    harness.registry.add_blob(b"escape")
    before = listing(tmp_path)

    get = harness.get(path)
    head = harness.head(path)

    assert 400 <= get.status < 500, (get.status, get.body)
    assert error_code(get) in {"NAME_INVALID", "TAG_INVALID", "DIGEST_INVALID", "UNSUPPORTED"}
    assert 400 <= head.status < 500
    assert listing(tmp_path) == before
    assert harness.registry.seen == []


# -- Docker Hub's library/ rule and containerd's ?ns= ------------------------------


@pytest.fixture
def hub(tmp_path):
    return Harness(str(tmp_path / "cache"), upstream_url=HUB_URL)


def test_hub_one_component_name_goes_upstream_as_library(hub):
    digest, body = hub.registry.add_image("library/alpine", "latest", [b"layer"])

    response = hub.get("/v2/alpine/manifests/latest")

    assert (response.status, response.body) == (200, body)
    assert [s.path for s in hub.registry.seen] == ["/v2/library/alpine/manifests/latest"]
    assert hub.registry.seen[0].host == HUB_HOST


def test_hub_short_and_library_names_share_one_cache_entry(hub):
    digest, body = hub.registry.add_image("library/alpine", "latest", [b"layer"])

    hub.get("/v2/alpine/manifests/latest")
    response = hub.get("/v2/library/alpine/manifests/latest")

    assert response.body == body
    assert hub.registry.count("GET", "/manifests/", host=HUB_HOST) == 1


def test_hub_library_rule_applies_to_blobs_and_tag_lists(hub):
    data = b"layer" * 100
    digest = hub.registry.add_blob(data)
    hub.registry.add_manifest("library/alpine", "latest", b"{}", OCI_MANIFEST)

    blob = hub.get(f"/v2/alpine/blobs/{digest}")
    tags = hub.get("/v2/alpine/tags/list")

    assert (blob.status, blob.body) == (200, data)
    assert tags.json() == {"name": "library/alpine", "tags": ["latest"]}
    assert [s.path for s in hub.registry.seen] == [
        f"/v2/library/alpine/blobs/{digest}",
        "/v2/library/alpine/tags/list",
    ]


def test_hub_two_component_names_are_unchanged(hub):
    hub.registry.add_image("bitnami/redis", "7", [b"layer"])
    assert hub.get("/v2/bitnami/redis/manifests/7").status == 200
    assert [s.path for s in hub.registry.seen] == ["/v2/bitnami/redis/manifests/7"]


def test_other_registry_one_component_name_is_not_rewritten(harness):
    digest, body = harness.registry.add_image("alpine", "latest", [b"layer"])

    response = harness.get("/v2/alpine/manifests/latest")

    assert (response.status, response.body) == (200, body)
    assert [(s.host, s.path) for s in harness.registry.seen] == [
        (REGISTRY_HOST, "/v2/alpine/manifests/latest")
    ]


@pytest.mark.parametrize("ns", ["docker.io", "DOCKER.IO"])
def test_hub_mirror_accepts_containerds_ns_docker_io(hub, ns):
    digest, body = hub.registry.add_image("library/alpine", "latest", [b"layer"])

    response = hub.get(f"/v2/alpine/manifests/latest?ns={ns}")

    assert (response.status, response.body) == (200, body)
    assert [s.path for s in hub.registry.seen] == ["/v2/library/alpine/manifests/latest"]


def test_other_registry_mirror_accepts_its_own_ns(harness):
    digest, body = harness.registry.add_image("alpine", "latest", [b"layer"])
    response = harness.get(f"/v2/alpine/manifests/latest?ns={REGISTRY_HOST}")
    assert (response.status, response.body) == (200, body)


@pytest.mark.parametrize(
    "upstream, ns",
    [(HUB_URL, "ghcr.io"), (HUB_URL, "registry-1.docker.io.evil"), (UPSTREAM_URL, "docker.io"), (UPSTREAM_URL, "quay.io")],
)
@pytest.mark.parametrize("kind", ["manifests/latest", f"blobs/{sha256(b'layer')}", "tags/list"])
def test_foreign_ns_is_404_name_unknown_and_never_reaches_upstream(tmp_path, upstream, ns, kind):
    harness = Harness(str(tmp_path / "cache"), upstream_url=upstream)
    harness.registry.add_image("library/alpine", "latest", [b"layer"])
    harness.registry.add_image("alpine", "latest", [b"layer"])

    response = harness.get(f"/v2/library/alpine/{kind}?ns={ns}")

    assert response.status == 404
    assert error_code(response) == "NAME_UNKNOWN"
    assert harness.registry.seen == []


# -- tag lists ------------------------------------------------------------------


@pytest.fixture
def paging(tmp_path):
    harness = Harness(str(tmp_path / "cache"))
    for tag in ("a", "b", "c", "d", "e"):
        harness.registry.add_manifest("library/alpine", tag, tag.encode(), OCI_MANIFEST)
    return harness


def tag_list_uris(harness: Harness) -> list[str]:
    return [s.uri for s in harness.registry.seen if "/tags/list" in s.path]


def test_tag_list_passes_n_and_last_through(paging):
    response = paging.get("/v2/library/alpine/tags/list?n=2&last=b")

    assert response.status == 200
    assert response.json() == {"name": "library/alpine", "tags": ["c", "d"]}
    assert response.headers["content-type"].startswith("application/json")
    (uri,) = tag_list_uris(paging)
    path, _, query = uri.partition("?")
    assert path == "/v2/library/alpine/tags/list"
    assert sorted(query.split("&")) == ["last=b", "n=2"]


def test_tag_list_next_link_points_at_the_mirror(paging):
    response = paging.get("/v2/library/alpine/tags/list?n=2")

    assert response.json()["tags"] == ["a", "b"]
    assert response.headers["link"] == '</v2/library/alpine/tags/list?n=2&last=b>; rel="next"'


def test_tag_list_is_cached_for_the_ttl(paging):
    first = paging.get("/v2/library/alpine/tags/list?n=2&last=b")
    paging.clock.advance(299)
    second = paging.get("/v2/library/alpine/tags/list?n=2&last=b")

    assert first.body == second.body
    assert len(tag_list_uris(paging)) == 1

    paging.registry.add_manifest("library/alpine", "c2", b"c2", OCI_MANIFEST)
    paging.clock.advance(2)
    third = paging.get("/v2/library/alpine/tags/list?n=2&last=b")

    assert third.json()["tags"] == ["c", "c2"]
    assert len(tag_list_uris(paging)) == 2


def test_tag_lists_with_different_queries_are_cached_apart(paging):
    whole = paging.get("/v2/library/alpine/tags/list")
    page = paging.get("/v2/library/alpine/tags/list?n=1")

    assert whole.json()["tags"] == ["a", "b", "c", "d", "e"]
    assert page.json()["tags"] == ["a"]
    assert len(tag_list_uris(paging)) == 2


@pytest.mark.parametrize("n", ["abc", "-1", "10001", "1e3", "%B2", "%C2%B2", "%D9%A3", "99999999999999999999"])
def test_bad_page_size_is_400_and_not_sent_upstream(paging, n):
    response = paging.get(f"/v2/library/alpine/tags/list?n={n}")
    assert response.status == 400
    assert error_code(response) == "PAGINATION_NUMBER_INVALID"
    assert tag_list_uris(paging) == []


def test_tag_list_of_unknown_repository_is_404_name_unknown(harness):
    response = harness.get("/v2/library/nothing/tags/list")
    assert response.status == 404
    assert error_code(response) == "NAME_UNKNOWN"


# -- upstream errors --------------------------------------------------------------


def rate_limited(seen):
    return 429 if seen.host == REGISTRY_HOST else None


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v2/library/alpine/manifests/latest"),
        ("HEAD", "/v2/library/alpine/manifests/latest"),
        ("GET", f"/v2/library/alpine/manifests/{sha256(b'm')}"),
        ("GET", f"/v2/library/alpine/blobs/{sha256(b'layer')}"),
        ("HEAD", f"/v2/library/alpine/blobs/{sha256(b'layer')}"),
        ("GET", "/v2/library/alpine/tags/list"),
    ],
)
def test_upstream_429_reaches_the_client_with_its_retry_after(harness, method, path):
    harness.registry.add_image("library/alpine", "latest", [b"layer"])
    harness.registry.status_override = rate_limited

    response = harness.request(method, path)

    assert response.status == 429
    assert response.headers["retry-after"] == "17"
    if method == "GET":
        assert error_code(response) == "TOOMANYREQUESTS"


def test_rate_limited_blob_is_fetched_once_the_limit_lifts(harness):
    data = b"layer" * 1000
    digest = harness.registry.add_blob(data)
    harness.registry.status_override = rate_limited
    assert harness.get(f"/v2/library/alpine/blobs/{digest}").status == 429

    harness.registry.status_override = None
    response = harness.get(f"/v2/library/alpine/blobs/{digest}")

    assert (response.status, response.body) == (200, data)


def test_upstream_404_manifest_is_manifest_unknown(harness):
    response = harness.get(f"/v2/library/alpine/manifests/{sha256(b'nothing')}")
    assert response.status == 404
    assert error_code(response) == "MANIFEST_UNKNOWN"


def test_upstream_404_blob_is_blob_unknown(harness):
    response = harness.get(f"/v2/library/alpine/blobs/{sha256(b'nothing')}")
    assert response.status == 404
    assert error_code(response) == "BLOB_UNKNOWN"


def test_upstream_404_blob_head_is_404(harness):
    response = harness.head(f"/v2/library/alpine/blobs/{sha256(b'nothing')}")
    assert response.status == 404
    assert harness.registry.count("HEAD", "/blobs/") == 1
    assert harness.registry.count("GET", "/blobs/") == 0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_upstream_5xx_without_cache_is_502_unavailable(harness, status):
    data = b"layer"
    digest = harness.registry.add_blob(data)
    harness.registry.status_override = lambda seen: status

    response = harness.get(f"/v2/library/alpine/blobs/{digest}")

    assert response.status == 502
    assert error_code(response) == "UNAVAILABLE"


# -- blob HEAD and ranges -----------------------------------------------------------


def test_blob_head_on_uncached_blob_asks_upstream_with_head_only(harness):
    data = os.urandom(12345)
    digest = harness.registry.add_blob(data)

    response = harness.head(f"/v2/library/alpine/blobs/{digest}")

    assert response.status == 200
    assert response.body == b""
    assert response.headers["content-length"] == "12345"
    assert response.headers["docker-content-digest"] == digest
    assert harness.registry.count("HEAD", "/blobs/") == 1
    assert harness.registry.count("GET", "/blobs/") == 0


def test_blob_head_follows_a_cdn_redirect_and_downloads_nothing(harness):
    harness.registry.redirect_blobs = True
    data = os.urandom(2222)
    digest = harness.registry.add_blob(data)

    response = harness.head(f"/v2/library/alpine/blobs/{digest}")

    assert (response.status, response.headers["content-length"]) == (200, "2222")
    assert [s.method for s in harness.registry.seen] == ["HEAD", "HEAD"]
    assert harness.registry.seen[1].host == CDN_HOST


def test_blob_head_on_cached_blob_costs_nothing_upstream(harness):
    data = os.urandom(4321)
    digest = harness.registry.add_blob(data)
    harness.get(f"/v2/library/alpine/blobs/{digest}")
    seen = len(harness.registry.seen)

    response = harness.head(f"/v2/library/alpine/blobs/{digest}")

    assert (response.status, response.headers["content-length"]) == (200, "4321")
    assert len(harness.registry.seen) == seen


DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable enough


@pytest.fixture
def cached_blob(harness):
    digest = harness.registry.add_blob(DATA)
    assert harness.get(f"/v2/library/alpine/blobs/{digest}").body == DATA
    return f"/v2/library/alpine/blobs/{digest}"


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-40", 10200, 10239),
        ("bytes=10200-99999", 10200, 10239),
        ("bytes=0-10239", 0, 10239),
        ("bytes=-99999", 0, 10239),
    ],
)
def test_range_on_cached_blob_is_206_with_exact_bytes(harness, cached_blob, header, start, end):
    response = harness.get(cached_blob, Range=header)

    assert response.status == 206
    assert response.body == DATA[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.headers["content-length"] == str(end + 1 - start)
    assert response.complete
    assert harness.registry.count("GET", "/blobs/") == 1


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0", "bytes=5-2", "bytes=", "items=0-1"])
def test_unsatisfiable_range_is_416(harness, cached_blob, header):
    response = harness.get(cached_blob, Range=header)

    assert response.status == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"
    assert error_code(response) == "RANGE_INVALID"


def test_range_on_uncached_blob_is_206_and_caches_the_whole_blob(harness):
    digest = harness.registry.add_blob(DATA)
    path = f"/v2/library/alpine/blobs/{digest}"

    partial = harness.get(path, Range="bytes=5000-5099")
    whole = harness.get(path)

    assert partial.status == 206
    assert partial.body == DATA[5000:5100]
    assert partial.headers["content-range"] == f"bytes 5000-5099/{len(DATA)}"
    assert (whole.status, whole.body, whole.headers["x-cache"]) == (200, DATA, "HIT")
    assert harness.registry.count("GET", "/blobs/") == 1
