"""An upstream trusted for nothing a digest does not prove.

Redirects that lead to internal addresses, downgrade to plain HTTP or carry
credentials away; manifests and tag lists that are not what they claim;
answers that are not HTTP at all.  The client gets a registry error naming
the reason, nothing is relayed or cached, and a cached tag is served stale.
"""

from __future__ import annotations

import json
import os

import pytest

from mirrorproxy.registry.mediatypes import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from mirrorproxy.upstream.settings import Credentials

from ..fakeregistry import REGISTRY_HOST, FakeRegistry, sha256
from .harness import Harness

REPO = "library/app"
SECRET = b"internal secret " * 7000


def error(response) -> tuple[int, str, str]:
    (first,) = response.json()["errors"]
    return response.status, first["code"], first["message"]


def cache_files(harness: Harness) -> list[str]:
    found = []
    for directory, _, files in os.walk(harness.cache_dir):
        found += [os.path.join(directory, f) for f in files if "spool" not in directory]
    return found


def hosts_seen(registry: FakeRegistry) -> set[str]:
    return {s.host for s in registry.seen}


def secret_behind(registry: FakeRegistry, path: str) -> None:
    """What an internal service would answer, were the mirror to ask it."""
    registry.canned[path] = (200, {"Content-Type": "text/html"}, SECRET)


# -- redirects to internal addresses ----------------------------------------------


INTERNAL = [
    "http://127.0.0.1:8500/secret",
    "http://[::1]:8500/secret",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.7/secret",
    "http://192.168.1.1/secret",
    "http://[fd00::7]/secret",
    "http://[::ffff:127.0.0.1]/secret",
    "http://0.0.0.0:8500/secret",
]


@pytest.mark.parametrize("location", INTERNAL)
def test_a_blob_redirect_to_an_internal_address_relays_nothing(harness, location):
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", location)

    response = harness.get(f"/v2/{REPO}/blobs/{digest}")

    status, code, message = error(response)
    assert (status, code) == (502, "UNAVAILABLE")
    assert "refused a redirect" in message and "internal address" in message
    assert hosts_seen(harness.registry) == {REGISTRY_HOST}
    assert cache_files(harness) == []


def test_a_ranged_blob_request_redirected_inside_gets_no_206(harness):
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", "http://127.0.0.1:8500/secret")

    response = harness.get(f"/v2/{REPO}/blobs/{digest}", range="bytes=0-99")

    assert error(response)[:2] == (502, "UNAVAILABLE")
    assert SECRET[:100] not in response.body


def test_a_tag_redirected_inside_is_refused_and_never_cached(harness):
    harness.registry.redirect(f"/v2/{REPO}/manifests/latest", "http://127.0.0.1:8500/secret")
    secret_behind(harness.registry, "/secret")

    for _ in range(2):
        response = harness.get(f"/v2/{REPO}/manifests/latest")
        assert error(response)[:2] == (502, "UNAVAILABLE")
        assert "x-cache" not in response.headers
    assert hosts_seen(harness.registry) == {REGISTRY_HOST}
    assert cache_files(harness) == []


def test_a_tag_list_redirected_inside_is_refused(harness):
    harness.registry.redirect(f"/v2/{REPO}/tags/list", "http://10.0.0.7/secret")

    response = harness.get(f"/v2/{REPO}/tags/list")

    assert error(response)[:2] == (502, "UNAVAILABLE")
    assert hosts_seen(harness.registry) == {REGISTRY_HOST}


def test_an_allowed_network_may_be_redirected_to(tmp_path):
    """--upstream-redirect-allow: a lab whose registry sends blobs to a
    storage host on the private network."""
    harness = Harness(str(tmp_path / "cache"), redirect_allow=("10.0.0.0/8",))
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", f"http://10.0.0.7:9000/data/{digest}")

    response = harness.get(f"/v2/{REPO}/blobs/{digest}")

    assert (response.status, response.body) == (200, b"layer")
    assert "10.0.0.7" in hosts_seen(harness.registry)


def test_the_upstreams_own_internal_host_may_be_redirected_to(tmp_path):
    """An upstream on a private address is trusted with its own host."""
    harness = Harness(str(tmp_path / "cache"), upstream_url="http://10.0.0.5:5000")
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", f"http://10.0.0.5:9000/data/{digest}")

    response = harness.get(f"/v2/{REPO}/blobs/{digest}")

    assert (response.status, response.body) == (200, b"layer")


def test_a_public_cdn_may_be_redirected_to(harness):
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", f"https://93.184.216.34/data/{digest}")

    response = harness.get(f"/v2/{REPO}/blobs/{digest}")

    assert (response.status, response.body) == (200, b"layer")


@pytest.mark.parametrize(
    "location, reason",
    [
        ("ftp://cdn.fake/data/x", "non-HTTP(S)"),
        ("http://user:pass@cdn.fake/data/x", "credentials in it"),
        ("http://cdn.fake:99999/data/x", "bad port"),
        ("http://[::1/data/x", "malformed URL"),
    ],
)
def test_malformed_redirects_are_a_502_naming_the_reason(harness, location, reason):
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", location)

    response = harness.get(f"/v2/{REPO}/blobs/{digest}")

    status, code, message = error(response)
    assert (status, code) == (502, "UNAVAILABLE")
    assert reason in message


# -- credentials never leave the upstream's origin ---------------------------------


def basic_harness(tmp_path, upstream_url: str) -> Harness:
    registry = FakeRegistry(basic_auth=("hub-user", "hub-pass"))
    return Harness(
        str(tmp_path / "cache"),
        registry=registry,
        upstream_url=upstream_url,
        credentials=Credentials("hub-user", "hub-pass"),
    )


def test_an_https_upstream_redirecting_to_http_is_refused(tmp_path):
    harness = basic_harness(tmp_path, "https://registry.fake")
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", f"http://registry.fake/data/{digest}")

    response = harness.get(f"/v2/{REPO}/blobs/{digest}")

    status, code, message = error(response)
    assert (status, code) == (502, "UNAVAILABLE")
    assert "from https to http" in message
    assert [s.path for s in harness.registry.seen if s.path.startswith("/data/")] == []


@pytest.mark.parametrize(
    "upstream, location",
    [
        # Another port of the same host.
        ("http://registry.fake", "http://registry.fake:8080/data/{digest}"),
        # Another scheme of the same host.
        ("http://registry.fake", "https://registry.fake/data/{digest}"),
        # Another host.
        ("http://registry.fake", "http://cdn.fake/data/{digest}"),
    ],
)
def test_credentials_are_dropped_whenever_the_origin_changes(tmp_path, upstream, location):
    harness = basic_harness(tmp_path, upstream)
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", location.format(digest=digest))

    response = harness.get(f"/v2/{REPO}/blobs/{digest}")

    assert (response.status, response.body) == (200, b"layer")
    (followed,) = [s for s in harness.registry.seen if s.path.startswith("/data/")]
    assert "authorization" not in followed.headers


def test_credentials_stay_with_a_redirect_within_the_origin(tmp_path):
    harness = basic_harness(tmp_path, "http://registry.fake")
    digest = harness.registry.add_blob(b"layer")
    harness.registry.redirect(f"/v2/{REPO}/blobs/{digest}", f"/v2/other/blobs/{digest}")

    response = harness.get(f"/v2/{REPO}/blobs/{digest}")

    assert (response.status, response.body) == (200, b"layer")
    # The first try had no credentials yet: the 401 taught it the challenge.
    followed = [s for s in harness.registry.seen if s.path == f"/v2/other/blobs/{digest}"][-1]
    assert followed.headers["authorization"].startswith("Basic ")


# -- answers that are not HTTP ------------------------------------------------------


GARBAGE = [b"garbage\r\n\r\n", b"HTTP/1.1 2", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]


@pytest.mark.parametrize("raw", GARBAGE)
@pytest.mark.parametrize("kind", ["manifests/latest", "blobs/" + sha256(b"layer"), "tags/list"])
def test_a_garbled_answer_is_a_502_naming_it(harness, raw, kind):
    harness.registry.raw[f"/v2/{REPO}/{kind}"] = raw

    response = harness.get(f"/v2/{REPO}/{kind}")

    status, code, message = error(response)
    assert (status, code) == (502, "UNAVAILABLE")
    assert "malformed answer" in message


def test_a_garbled_answer_on_revalidation_serves_the_tag_stale(tmp_path):
    harness = Harness(str(tmp_path / "cache"), tag_ttl=10)
    _, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    assert harness.get(f"/v2/{REPO}/manifests/latest").body == body
    harness.clock.advance(11)
    harness.registry.raw[f"/v2/{REPO}/manifests/latest"] = b"HTTP/1.1 2"

    response = harness.get(f"/v2/{REPO}/manifests/latest")

    assert (response.status, response.body, response.headers["x-cache"]) == (200, body, "STALE")


def test_a_redirect_with_userinfo_on_revalidation_serves_the_tag_stale(tmp_path):
    harness = Harness(str(tmp_path / "cache"), tag_ttl=10)
    _, body = harness.registry.add_image(REPO, "latest", [b"layer"])
    assert harness.get(f"/v2/{REPO}/manifests/latest").body == body
    harness.clock.advance(11)
    harness.registry.redirect(f"/v2/{REPO}/manifests/latest", "http://a:b@cdn.fake/x")

    response = harness.get(f"/v2/{REPO}/manifests/latest")

    assert (response.status, response.body, response.headers["x-cache"]) == (200, body, "STALE")


# -- manifests and tag lists are what they claim -----------------------------------


def oci_manifest(**changes: object) -> bytes:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(b"c"), "size": 1},
        "layers": [],
    }
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


@pytest.mark.parametrize(
    "body, media_type, reason",
    [
        (b"<html><body>Sign in</body></html>", "text/html", "not a manifest"),
        (b"<html><body>Sign in</body></html>", "application/json", "not a manifest"),
        (b"not json", OCI_MANIFEST, "not JSON"),
        (b"[1, 2]", OCI_MANIFEST, "not a JSON object"),
        (oci_manifest(config=None), OCI_MANIFEST, "config"),
        (oci_manifest(layers="none"), OCI_MANIFEST, "layers"),
        (oci_manifest(schemaVersion=1), OCI_MANIFEST, "schemaVersion"),
        (oci_manifest(mediaType=OCI_INDEX), OCI_MANIFEST, "says it is"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX}).encode(), OCI_INDEX, "manifests"),
    ],
)
def test_a_manifest_that_is_not_what_it_claims_is_refused_and_not_cached(harness, body, media_type, reason):
    harness.registry.add_manifest(REPO, "latest", body, media_type)

    by_tag = harness.get(f"/v2/{REPO}/manifests/latest")
    by_digest = harness.get(f"/v2/{REPO}/manifests/{sha256(body)}")

    for response in (by_tag, by_digest):
        status, code, message = error(response)
        assert (status, code) == (502, "UNAVAILABLE")
        assert reason in message
    assert cache_files(harness) == []


def test_a_manifest_of_a_type_the_client_did_not_accept_is_not_relayed(harness):
    digest, body = harness.registry.add_image(REPO, "latest", [b"layer"])

    response = harness.get(f"/v2/{REPO}/manifests/latest", accept=DOCKER_MANIFEST)

    status, code, message = error(response)
    assert (status, code) == (404, "MANIFEST_UNKNOWN")
    assert OCI_MANIFEST in message
    # What it does accept still works, and is not held up by the refusal.
    assert harness.get(f"/v2/{REPO}/manifests/latest").body == body


def test_a_head_answer_that_is_not_a_manifest_type_records_nothing(harness):
    harness.registry.add_manifest(REPO, "latest", b"<html>hello</html>", "text/html")

    response = harness.head(f"/v2/{REPO}/manifests/latest")

    assert response.status == 502
    assert cache_files(harness) == []


@pytest.mark.parametrize(
    "body",
    [
        b"<html>secret</html>",
        b'{"name": "library/app"}',
        b'{"name": "library/app", "tags": "latest"}',
        b'{"name": "library/app", "tags": [1, 2]}',
        b'["latest"]',
    ],
)
def test_a_tag_list_that_is_not_the_registrys_json_is_refused(harness, body):
    harness.registry.canned[f"/v2/{REPO}/tags/list"] = (200, {"Content-Type": "application/json"}, body)

    response = harness.get(f"/v2/{REPO}/tags/list")

    assert error(response)[:2] == (502, "UNAVAILABLE")
    assert body not in response.body


def test_a_tag_list_link_elsewhere_is_not_relayed(harness):
    body = b'{"name": "library/app", "tags": ["a"]}'
    harness.registry.canned[f"/v2/{REPO}/tags/list"] = (
        200,
        {"Content-Type": "application/json", "Link": '<http://evil.example/phish>; rel="next"'},
        body,
    )

    response = harness.get(f"/v2/{REPO}/tags/list")

    assert (response.status, response.body) == (200, body)
    assert "link" not in response.headers
