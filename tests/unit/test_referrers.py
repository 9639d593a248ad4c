"""The OCI 1.1 referrers API through the mirror, and OCI-Subject: what
signature and SBOM tools (cosign, notation, oras) ask for.

``GET /v2/<name>/referrers/<digest>[?artifactType=...]`` is passed through
to the registry, checked to be an image index, kept per (repository,
digest, artifactType) for the tag TTL and served stale when upstream fails; a
registry without the API answers 404, which clients are told (they fall back
to ``sha256-<hex>`` tags) and the mirror remembers for the negative TTL.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from mirrorproxy.registry.mediatypes import OCI_INDEX

from ..fakeregistry import FakeRegistry, sha256
from .harness import Harness

REPO = "library/app"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
TTL = 300.0
NEGATIVE_TTL = 30.0


def referrers_path(subject: str, repository: str = REPO, artifact_type: str | None = None) -> str:
    query = "?" + urlencode({"artifactType": artifact_type}) if artifact_type else ""
    return f"/v2/{repository}/referrers/{subject}{query}"


def upstream_referrers(harness: Harness) -> list[str]:
    """The query of every referrers request upstream got, in order."""
    return [urlsplit(s.uri).query for s in harness.registry.seen if "/referrers/" in s.path]


def digests(response) -> list[str]:
    return [d["digest"] for d in response.json()["manifests"]]


@pytest.fixture
def signed(tmp_path) -> tuple[Harness, str, str, str]:
    """An image with a signature and an SBOM, at a registry with the API:
    the harness, the image's digest, the signature's and the SBOM's."""
    harness = Harness(str(tmp_path / "cache"), registry=FakeRegistry(referrers_api=True), tag_ttl=TTL)
    image, _ = harness.registry.add_image(REPO, "1", [b"layer"])
    signature = harness.registry.add_referrer(REPO, image, SIGNATURE, b"signature")
    sbom = harness.registry.add_referrer(REPO, image, SBOM, b'{"spdxVersion": "SPDX-2.3"}')
    return harness, image, signature, sbom


def test_referrers_are_upstreams_index_byte_for_byte(signed):
    harness, image, signature, sbom = signed

    response = harness.get(referrers_path(image))

    assert response.status == 200
    assert response.headers["content-type"] == OCI_INDEX
    assert response.headers["x-cache"] == "MISS"
    assert sorted(digests(response)) == sorted([signature, sbom])
    (asked,) = [s for s in harness.registry.seen if "/referrers/" in s.path]
    assert asked.path == referrers_path(image)
    assert asked.headers["accept"] == OCI_INDEX
    assert response.headers["content-length"] == str(len(response.body))
    assert "oci-filters-applied" not in response.headers


def test_referrers_within_the_ttl_cost_nothing_upstream(signed):
    harness, image, _, _ = signed
    first = harness.get(referrers_path(image))
    harness.clock.advance(TTL - 1)

    second = harness.get(referrers_path(image))

    assert (second.body, second.headers["x-cache"]) == (first.body, "HIT")
    assert upstream_referrers(harness) == [""]


def test_a_filtered_answer_relays_oci_filters_applied_and_is_kept_apart(signed):
    harness, image, signature, _ = signed

    filtered = harness.get(referrers_path(image, artifact_type=SIGNATURE))
    everything = harness.get(referrers_path(image))
    filtered_again = harness.get(referrers_path(image, artifact_type=SIGNATURE))

    assert digests(filtered) == [signature]
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert len(digests(everything)) == 2 and "oci-filters-applied" not in everything.headers
    assert (filtered_again.body, filtered_again.headers["x-cache"]) == (filtered.body, "HIT")
    assert filtered_again.headers["oci-filters-applied"] == "artifactType"
    queries = [parse_qs(q) for q in upstream_referrers(harness)]
    assert queries == [{"artifactType": [SIGNATURE]}, {}]


def test_an_upstream_that_does_not_filter_is_not_said_to(signed):
    """The client then filters the index itself, as the spec tells it to."""
    harness, image, _, _ = signed
    harness.registry.filters = False

    response = harness.get(referrers_path(image, artifact_type=SIGNATURE))

    assert len(digests(response)) == 2
    assert "oci-filters-applied" not in response.headers


def test_new_referrers_are_seen_after_the_ttl(signed):
    harness, image, signature, sbom = signed
    harness.get(referrers_path(image))
    attestation = harness.registry.add_referrer(REPO, image, "application/vnd.in-toto+json", b"{}")

    assert len(digests(harness.get(referrers_path(image)))) == 2  # still fresh
    harness.clock.advance(TTL + 1)
    response = harness.get(referrers_path(image))

    assert (sorted(digests(response)), response.headers["x-cache"]) == (sorted([signature, sbom, attestation]), "MISS")


@pytest.mark.parametrize("status", [503, 429])
def test_referrers_are_served_stale_when_upstream_fails(signed, status):
    harness, image, _, _ = signed
    kept = harness.get(referrers_path(image))
    harness.clock.advance(TTL + 1)
    harness.registry.status_override = lambda seen: status

    response = harness.get(referrers_path(image))

    assert (response.status, response.body, response.headers["x-cache"]) == (200, kept.body, "STALE")


def test_referrers_upstream_cannot_give_are_an_error(signed):
    harness, image, _, _ = signed
    harness.registry.status_override = lambda seen: 503

    response = harness.get(referrers_path(image))

    assert (response.status, response.json()["errors"][0]["code"]) == (502, "UNAVAILABLE")


def test_a_head_has_the_gets_headers_and_no_body(signed):
    harness, image, _, _ = signed
    get = harness.get(referrers_path(image, artifact_type=SBOM))

    head = harness.head(referrers_path(image, artifact_type=SBOM))

    assert (head.status, head.body) == (200, b"")
    for name in ("content-type", "content-length", "oci-filters-applied"):
        assert head.headers[name] == get.headers[name]
    assert head.headers["x-cache"] == "HIT"


def test_a_subject_nobody_refers_to_has_an_empty_index(signed):
    harness, _, _, _ = signed

    response = harness.get(referrers_path(sha256(b"nothing")))

    assert (response.status, digests(response)) == (200, [])


# -- registries without the API ----------------------------------------------------


def test_a_registry_without_the_api_is_a_remembered_404(harness):
    """Docker Hub has no referrers API: clients fall back to tags."""
    image, _ = harness.registry.add_image(REPO, "1", [b"layer"])

    first = harness.get(referrers_path(image))
    second = harness.get(referrers_path(image))

    assert (first.status, first.json()["errors"][0]["code"]) == (404, "MANIFEST_UNKNOWN")
    assert (second.status, second.json()) == (404, first.json())
    assert len(upstream_referrers(harness)) == 1
    harness.clock.advance(NEGATIVE_TTL + 1)
    assert harness.get(referrers_path(image)).status == 404
    assert len(upstream_referrers(harness)) == 2


def test_a_referrers_404_never_makes_the_repository_missing(harness):
    """Even one that says NAME_UNKNOWN: a registry without the API says
    nothing about the repository's manifests."""
    image, body = harness.registry.add_image(REPO, "1", [b"layer"])
    harness.registry.canned[referrers_path(image)] = (
        404,
        {"Content-Type": "application/json"},
        b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}',
    )

    assert harness.get(referrers_path(image)).status == 404
    manifest = harness.get(f"/v2/{REPO}/manifests/1")

    assert (manifest.status, manifest.body) == (200, body)


def test_the_tag_schema_fallback_is_served_as_ordinary_tags(harness):
    """cosign's `sha256-<hex>.sig` tags, the fallback where there is no API."""
    image, _ = harness.registry.add_image(REPO, "1", [b"layer"])
    fallback = "sha256-" + image.removeprefix("sha256:")
    signature = harness.registry.add_referrer(REPO, image, SIGNATURE, b"signature")
    harness.registry.tags[(REPO, fallback + ".sig")] = signature

    response = harness.get(f"/v2/{REPO}/manifests/{fallback}.sig")

    assert (response.status, response.headers["docker-content-digest"]) == (200, signature)


# -- what upstream must answer -------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, body",
    [
        pytest.param("text/html", b"<html>login</html>", id="a-login-page"),
        pytest.param("application/vnd.oci.image.manifest.v1+json", b'{"schemaVersion":2,"config":{},"layers":[]}', id="a-manifest"),
        pytest.param(OCI_INDEX, b'{"schemaVersion":2,"manifests":{}}', id="an-index-without-a-manifests-array"),
    ],
)
def test_an_answer_that_is_not_an_index_is_a_502_and_not_kept(harness, content_type, body):
    image, _ = harness.registry.add_image(REPO, "1", [b"layer"])
    harness.registry.canned[referrers_path(image)] = (200, {"Content-Type": content_type}, body)

    response = harness.get(referrers_path(image))
    del harness.registry.canned[referrers_path(image)]
    harness.registry.referrers_api = True
    again = harness.get(referrers_path(image))

    assert (response.status, response.json()["errors"][0]["code"]) == (502, "UNAVAILABLE")
    assert "referrers" in response.json()["errors"][0]["message"]
    assert (again.status, again.headers["x-cache"]) == (200, "MISS")


def test_an_index_sent_as_plain_json_is_served_as_an_index(harness):
    """Some registries say application/json; the body says what it is."""
    image, _ = harness.registry.add_image(REPO, "1", [b"layer"])
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    harness.registry.canned[referrers_path(image)] = (200, {"Content-Type": "application/json"}, index)

    response = harness.get(referrers_path(image))

    assert (response.status, response.body, response.headers["content-type"]) == (200, index, OCI_INDEX)


@pytest.mark.parametrize(
    "path, status, code",
    [
        pytest.param(referrers_path("sha256:abc"), 400, "DIGEST_INVALID", id="bad-digest"),
        pytest.param(referrers_path(sha256(b"x"), artifact_type="not a type"), 400, "UNSUPPORTED", id="bad-type"),
        pytest.param(referrers_path(sha256(b"x")) + "?" + urlencode([("artifactType", SBOM), ("artifactType", SIGNATURE)]), 400, "UNSUPPORTED", id="two-types"),
    ],
)
def test_bad_requests_are_400_and_reach_nothing_upstream(harness, path, status, code):
    response = harness.get(path)

    assert (response.status, response.json()["errors"][0]["code"]) == (status, code)
    assert harness.registry.seen == []


# -- through another registry, with its tokens ----------------------------------------


def test_referrers_of_another_registry_with_its_own_token(tmp_path):
    ghcr = FakeRegistry(require_token=True, realm="http://ghcr.fake/token", service="ghcr.io", referrers_api=True)
    harness = Harness(str(tmp_path / "cache"), others={"ghcr.io=http://ghcr.fake": ghcr})
    image, _ = ghcr.add_image("owner/app", "1", [b"layer"])
    signature = ghcr.add_referrer("owner/app", image, SIGNATURE)

    response = harness.get(referrers_path(image, "ghcr.io/owner/app", artifact_type=SIGNATURE))

    assert (response.status, digests(response)) == (200, [signature])
    (token,) = [s for s in ghcr.seen if s.path == "/token"]
    assert "scope=repository%3Aowner%2Fapp%3Apull" in token.uri
    assert harness.registry.seen == []


# -- OCI-Subject ------------------------------------------------------------------------


def test_a_manifest_with_a_subject_says_it_in_oci_subject_on_a_miss_and_a_hit(signed):
    harness, image, signature, _ = signed

    miss = harness.get(f"/v2/{REPO}/manifests/{signature}")
    hit = harness.get(f"/v2/{REPO}/manifests/{signature}")
    head = harness.head(f"/v2/{REPO}/manifests/{signature}")

    assert [(r.headers["x-cache"], r.headers["oci-subject"]) for r in (miss, hit, head)] == [
        ("MISS", image),
        ("HIT", image),
        ("HIT", image),
    ]


def test_a_tag_of_a_manifest_with_a_subject_says_it_on_head_and_get(signed):
    harness, image, signature, _ = signed
    harness.registry.tags[(REPO, "signed")] = signature

    head_miss = harness.head(f"/v2/{REPO}/manifests/signed")  # upstream's HEAD says it
    get = harness.get(f"/v2/{REPO}/manifests/signed")
    head_hit = harness.head(f"/v2/{REPO}/manifests/signed")

    assert [r.headers["oci-subject"] for r in (head_miss, get, head_hit)] == [image] * 3


def test_a_manifest_without_a_subject_has_no_oci_subject(signed):
    harness, image, _, _ = signed

    assert "oci-subject" not in harness.get(f"/v2/{REPO}/manifests/1").headers
    assert "oci-subject" not in harness.head(f"/v2/{REPO}/manifests/{image}").headers
