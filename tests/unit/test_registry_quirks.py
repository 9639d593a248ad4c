"""What each registry does differently, through the mirror, with the fake
registry playing it: Docker Hub's CDN that refuses credentials,
registry.k8s.io's redirects (relative ones too), ghcr.io's anonymous tokens,
nvcr.io's token realm on a path of its own, ``ratelimit-*`` per registry.
Credentials go to the registry and its token service, never to a redirect's
target."""

from __future__ import annotations

import pytest

from treq.testing import StubTreq

from mirrorproxy.upstream.settings import Credentials

from ..fakeregistry import CDN_HOST, REGISTRY_HOST, FakeRegistry
from .harness import Harness
from .test_auth import basic

REPO = "library/alpine"
ACCOUNT = Credentials("hub-user", "hub-pass")


def manifest_path(reference: str, repository: str = REPO) -> str:
    return f"/v2/{repository}/manifests/{reference}"


def blob_path(digest: str, repository: str = REPO) -> str:
    return f"/v2/{repository}/blobs/{digest}"


# -- Docker Hub: blobs from a CDN that refuses credentials --------------------------


@pytest.mark.parametrize(
    "registry, credentials",
    [
        pytest.param(FakeRegistry(require_token=True), None, id="anonymous-token"),
        pytest.param(FakeRegistry(require_token=True), ACCOUNT, id="account-token"),
        pytest.param(FakeRegistry(basic_auth=("hub-user", "hub-pass")), ACCOUNT, id="basic"),
    ],
)
def test_a_cdn_that_refuses_credentials_gets_none_and_serves_the_blob(tmp_path, registry, credentials):
    registry.redirect_blobs = True
    registry.cdn_refuses_credentials = True
    harness = Harness(str(tmp_path / "cache"), registry=registry, credentials=credentials)
    data = b"layer" * 1000
    digest = registry.add_blob(data)

    response = harness.get(blob_path(digest))

    assert (response.status, response.body) == (200, data)
    (cdn,) = [s for s in registry.seen if s.host == CDN_HOST]
    assert "authorization" not in cdn.headers
    # The registry itself had them.
    assert [s.headers.get("authorization") is not None for s in registry.seen if s.host == REGISTRY_HOST] == [False, True]


def test_the_fakes_cdn_refuses_a_request_with_credentials():
    """The habit the tests above rely on: a request that carries credentials
    is refused, so a mirror that sent them would fail those tests."""
    registry = FakeRegistry(redirect_blobs=True, cdn_refuses_credentials=True)
    digest = registry.add_blob(b"layer")
    stub = StubTreq(registry)
    answers: list[int] = []

    for headers in ({"Authorization": "Bearer tok-1"}, {}):
        stub.get(f"http://{CDN_HOST}/data/{digest}", headers=headers).addCallback(lambda r: answers.append(r.code))
        stub.flush()
        registry.tick()
        stub.flush()

    assert answers == [400, 200]


# -- registry.k8s.io: manifests and blobs elsewhere --------------------------------


@pytest.mark.parametrize(
    "moved_to, target_host",
    [
        pytest.param("http://k8s-artifacts.fake/artifacts-prod", "k8s-artifacts.fake", id="absolute"),
        pytest.param("/artifacts-prod", REGISTRY_HOST, id="relative"),
    ],
)
def test_manifests_and_blobs_redirected_elsewhere_are_followed(tmp_path, moved_to, target_host):
    registry = FakeRegistry(moved_to=moved_to)
    harness = Harness(str(tmp_path / "cache"), registry=registry)
    layer = b"k8s layer" * 100
    digest, manifest = registry.add_image("pause", "3.9", [layer])

    head = harness.head(manifest_path("3.9", "pause"))
    got = harness.get(manifest_path("3.9", "pause"))
    blob = harness.get(blob_path(registry.add_blob(layer), "pause"))

    assert (head.status, head.headers["docker-content-digest"]) == (200, digest)
    assert (got.status, got.body) == (200, manifest)
    assert (blob.status, blob.body) == (200, layer)
    followed = [s for s in registry.seen if s.path.startswith("/artifacts-prod/v2/pause/")]
    assert {s.host for s in followed} == {target_host}
    assert sorted((s.method, s.path.split("/")[4]) for s in followed) == [
        ("GET", "blobs"),
        ("GET", "manifests"),
        ("HEAD", "manifests"),
    ]


def test_credentials_stay_with_the_registry_when_it_redirects_to_another_host(tmp_path):
    registry = FakeRegistry(
        basic_auth=("hub-user", "hub-pass"), moved_to="http://k8s-artifacts.fake/artifacts-prod", cdn_refuses_credentials=True
    )
    harness = Harness(str(tmp_path / "cache"), registry=registry, credentials=ACCOUNT)
    _, manifest = registry.add_image("pause", "3.9", [b"layer"])

    assert harness.get(manifest_path("3.9", "pause")).body == manifest
    assert harness.get(blob_path(registry.add_blob(b"layer"), "pause")).body == b"layer"

    to_registry = [s.headers.get("authorization") for s in registry.seen if s.host == REGISTRY_HOST]
    assert to_registry == [None, basic("hub-user", "hub-pass"), basic("hub-user", "hub-pass")]
    assert [s.headers.get("authorization") for s in registry.seen if s.host == "k8s-artifacts.fake"] == [None, None]


# -- ghcr.io: anonymous tokens for public images ------------------------------------


def ghcr(**habits) -> FakeRegistry:
    return FakeRegistry(require_token=True, realm="http://ghcr.fake/token", service="ghcr.io", **habits)


def test_a_public_ghcr_image_is_pulled_with_an_anonymous_token(tmp_path):
    fake = ghcr()
    harness = Harness(str(tmp_path / "cache"), credentials=ACCOUNT, others={"ghcr.io=http://ghcr.fake": fake})
    digest, manifest = fake.add_image("owner/app", "1", [b"app layer"])

    response = harness.get(manifest_path("1", "ghcr.io/owner/app"))

    assert (response.status, response.body) == (200, manifest)
    (token_request,) = [s for s in fake.seen if s.path == "/token"]
    assert token_request.host == "ghcr.fake"
    # The credentials configured for the first registry are that registry's alone.
    assert "authorization" not in token_request.headers
    assert "scope=repository%3Aowner%2Fapp%3Apull" in token_request.uri
    assert "service=ghcr.io" in token_request.uri
    assert [s.headers.get("authorization", "")[:10] for s in fake.seen if s.path.startswith("/v2/")] == ["", "Bearer tok"]
    assert harness.registry.seen == []


# -- nvcr.io: a token realm on a path of its own ------------------------------------


def test_a_token_realm_on_the_registrys_own_path_gets_the_credentials(tmp_path):
    registry = FakeRegistry(require_token=True, realm="http://nvcr.fake/proxy_auth", service="ngc")
    harness = Harness(str(tmp_path / "cache"), registry=registry, upstream_url="http://nvcr.fake", credentials=ACCOUNT)
    digest, manifest = registry.add_image("nvidia/cuda", "12", [b"cuda layer"])

    response = harness.get(manifest_path("12", "nvidia/cuda"))

    assert (response.status, response.body) == (200, manifest)
    (token_request,) = [s for s in registry.seen if s.path == "/proxy_auth"]
    assert token_request.host == "nvcr.fake"
    assert token_request.headers["authorization"] == basic("hub-user", "hub-pass")
    assert [s.path for s in registry.seen] == [
        "/v2/nvidia/cuda/manifests/12",
        "/proxy_auth",
        "/v2/nvidia/cuda/manifests/12",
    ]


# -- ratelimit-* per registry ---------------------------------------------------------


def test_each_registrys_client_keeps_its_own_ratelimit_remaining(tmp_path):
    quay = FakeRegistry(ratelimit_remaining="12;w=21600")
    ghcr_fake = FakeRegistry()
    harness = Harness(
        str(tmp_path / "cache"),
        registry=FakeRegistry(ratelimit_remaining="97;w=21600"),
        others={"quay.io=http://quay.fake": quay, "ghcr.io=http://ghcr.fake": ghcr_fake},
    )
    harness.registry.add_image(REPO, "latest", [b"a"])
    quay.add_image("org/app", "1", [b"b"])
    ghcr_fake.add_image("owner/app", "1", [b"c"])

    for path in (
        manifest_path("latest", f"{REGISTRY_HOST}/{REPO}"),
        manifest_path("1", "quay.io/org/app"),
        manifest_path("1", "ghcr.io/owner/app"),
    ):
        assert harness.get(path).status == 200

    remaining = {cache.registry.namespace: cache.upstream.ratelimit_remaining for cache in harness.mirrors}
    assert remaining == {REGISTRY_HOST: 97, "quay.io": 12, "ghcr.io": None}

    quay.ratelimit_remaining = "11;w=21600"
    quay.add_image("org/app", "2", [b"d"])
    assert harness.get(manifest_path("2", "quay.io/org/app")).status == 200
    assert [cache.upstream.ratelimit_remaining for cache in harness.mirrors] == [97, 11, None]

