"""Several registries through one mirror: which one a request is for, and
that the same repository name in two of them never mixes.

Two fake registries, each behind its own StubTreq, hold the same repository
name with different content; the mirror serves docker.io (the default, the
harness's own fake) and ghcr.io.
"""

from __future__ import annotations

import json
import os

import pytest

from ..fakeregistry import FakeRegistry
from .harness import Harness

GHCR = "ghcr.io=http://ghcr.fake"
HUB_URL = "https://registry-1.docker.io"


@pytest.fixture
def two(tmp_path) -> Harness:
    return Harness(str(tmp_path / "cache"), upstream_url=HUB_URL, others={GHCR: FakeRegistry()})


def image_in_both(harness: Harness, repository: str = "owner/app") -> tuple[bytes, bytes]:
    """The same repository and tag in both registries, different content."""
    hub = harness.registry.add_image(repository, "1", [b"hub layer"])[1]
    ghcr = harness.fakes["ghcr.io"].add_image(repository, "1", [b"ghcr layer"])[1]
    return hub, ghcr


def seen(fake: FakeRegistry) -> list[str]:
    return [s.path for s in fake.seen if s.path != "/v2/"]


def test_ns_picks_the_registry(two):
    hub, ghcr = image_in_both(two)

    assert two.get("/v2/owner/app/manifests/1?ns=ghcr.io").body == ghcr
    assert two.get("/v2/owner/app/manifests/1?ns=docker.io").body == hub
    assert two.get("/v2/owner/app/manifests/1").body == hub  # the default


def test_a_registry_as_the_first_path_component_picks_it(two):
    hub, ghcr = image_in_both(two)

    response = two.get("/v2/ghcr.io/owner/app/manifests/1")

    assert response.body == ghcr
    assert seen(two.fakes["ghcr.io"]) == ["/v2/owner/app/manifests/1"]
    assert two.get("/v2/docker.io/owner/app/manifests/1").body == hub


def test_docker_hubs_short_names_work_through_the_path_prefix(two):
    digest, body = two.registry.add_image("library/alpine", "3", [b"x"])

    assert two.get("/v2/docker.io/alpine/manifests/3").body == body
    assert seen(two.registry) == ["/v2/library/alpine/manifests/3"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/owner/app/manifests/1?ns=quay.io",
        "/v2/quay.io/owner/app/manifests/1",
        "/v2/localhost:5000/owner/app/blobs/sha256:" + "a" * 64,
        "/v2/quay.io/owner/app/tags/list",
    ],
)
def test_a_registry_not_served_is_name_unknown_and_nothing_goes_upstream(two, path):
    response = two.get(path)

    (error,) = response.json()["errors"]
    assert (response.status, error["code"]) == (404, "NAME_UNKNOWN")
    assert "quay.io" in error["message"] or "localhost:5000" in error["message"]
    assert seen(two.registry) == [] and seen(two.fakes["ghcr.io"]) == []


def test_with_ns_a_dotted_first_component_is_a_repository(two):
    """quay.io's `org.name/app` is a repository, not a registry, when the
    client already said which registry it means."""
    body = two.fakes["ghcr.io"].add_image("org.name/app", "1", [b"x"])[1]

    assert two.get("/v2/org.name/app/manifests/1?ns=ghcr.io").body == body


def test_the_host_name_maps_to_a_registry(tmp_path):
    harness = Harness(
        str(tmp_path / "cache"),
        upstream_url=HUB_URL,
        others={GHCR: FakeRegistry()},
        hosts=(("ghcr.mirror.example", "ghcr.io"),),
    )
    hub, ghcr = image_in_both(harness)

    by_host = harness.get("/v2/owner/app/manifests/1", host="ghcr.mirror.example:5000")
    other_host = harness.get("/v2/owner/app/manifests/1", host="mirror.example")

    assert (by_host.body, other_host.body) == (ghcr, hub)


def test_without_a_default_a_request_must_name_its_registry(tmp_path):
    harness = Harness(
        str(tmp_path / "cache"), upstream_url="http://registry.fake", others={GHCR: FakeRegistry()}
    )

    response = harness.get("/v2/owner/app/manifests/1")

    (error,) = response.json()["errors"]
    assert (response.status, error["code"]) == (404, "NAME_UNKNOWN")
    assert "name one" in error["message"]


# -- isolation ------------------------------------------------------------------------


def test_the_same_repository_in_two_registries_never_mixes(two):
    hub, ghcr = image_in_both(two)
    for _ in range(2):
        assert two.get("/v2/owner/app/manifests/1?ns=docker.io").body == hub
        assert two.get("/v2/owner/app/manifests/1?ns=ghcr.io").body == ghcr

    # Each registry asked once; each answer cached apart.
    assert seen(two.registry) == ["/v2/owner/app/manifests/1"]
    assert seen(two.fakes["ghcr.io"]) == ["/v2/owner/app/manifests/1"]
    tags = sorted(p.relative_to(two.cache_dir).as_posix() for p in _files(two.cache_dir) if "_tags" in p.parts)
    assert tags == ["docker.io/repositories/owner/app/_tags/1", "ghcr.io/repositories/owner/app/_tags/1"]


def test_a_404_in_one_registry_is_not_remembered_for_another(two):
    body = two.fakes["ghcr.io"].add_image("owner/only", "1", [b"x"])[1]

    assert two.get("/v2/owner/only/manifests/1?ns=docker.io").status == 404
    assert two.get("/v2/owner/only/manifests/1?ns=ghcr.io").body == body


def test_a_blob_is_fetched_from_the_registry_asked(two):
    data = os.urandom(1000)
    digest = two.fakes["ghcr.io"].add_blob(data)

    assert two.get(f"/v2/owner/app/blobs/{digest}?ns=docker.io").status == 404
    assert two.get(f"/v2/ghcr.io/owner/app/blobs/{digest}").body == data
    # Cached for ghcr.io, not served to a docker.io request from there.
    assert two.get(f"/v2/owner/app/blobs/{digest}?ns=docker.io").status == 404


def test_the_cache_is_keyed_by_namespace_not_by_upstream_url(tmp_path):
    """Changing docker.io's upstream (from the Hub to an approved chained
    mirror) keeps its cache."""
    hub = Harness(str(tmp_path / "cache"), upstream_url="docker.io=http://registry.fake")
    digest, body = hub.registry.add_image("library/alpine", "3", [b"x"])
    assert hub.get(f"/v2/library/alpine/manifests/{digest}").headers["x-cache"] == "MISS"

    chained = Harness(
        str(tmp_path / "cache"), upstream_url="docker.io=http://artifactory.fake/api/docker/hub-remote"
    )
    response = chained.get(f"/v2/library/alpine/manifests/{digest}")

    assert (response.body, response.headers["x-cache"]) == (body, "HIT")
    assert seen(chained.registry) == []


def test_a_chained_upstreams_path_prefix_is_where_the_api_is(tmp_path):
    harness = Harness(str(tmp_path / "cache"), upstream_url="docker.io=http://artifactory.fake/api/docker/hub-remote")
    harness.registry.add_image("library/alpine", "3", [b"x"])

    harness.get("/v2/alpine/manifests/3?ns=docker.io")

    assert [s.path for s in harness.registry.seen] == ["/api/docker/hub-remote/v2/library/alpine/manifests/3"]


# -- what clients and operators see -----------------------------------------------------


def test_the_access_log_names_the_registry(two):
    from twisted.logger import globalLogPublisher

    image_in_both(two)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        two.get("/v2/ghcr.io/owner/app/manifests/1")
    finally:
        globalLogPublisher.removeObserver(events.append)

    [event] = [e for e in events if e.get("log_namespace") == "mirrorproxy.access"]
    assert (event["registry"], event["repository"]) == ("ghcr.io", "ghcr.io/owner/app")


def test_a_tag_lists_next_page_keeps_the_registry_the_client_named(two):
    fake = two.fakes["ghcr.io"]
    for tag in ("a", "b", "c"):
        fake.add_image("owner/app", tag, [tag.encode()])

    response = two.get("/v2/ghcr.io/owner/app/tags/list?n=2")

    assert json.loads(response.body)["tags"] == ["a", "b"]
    assert response.headers["link"] == '</v2/ghcr.io/owner/app/tags/list?n=2&last=b>; rel="next"'


def _files(root: str):
    from pathlib import Path

    return [p for p in Path(root).rglob("*") if p.is_file()]
