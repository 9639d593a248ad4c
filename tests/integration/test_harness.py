"""The harness itself, against the upstream directly (no mirror).

If these fail, the mirror tests' verdicts mean nothing: the upstream must
really demand tokens, hold what we pushed byte for byte, serve real clients,
and its access log must count what they fetched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness.client import RegistryClient, parse_bearer_challenge, request
from .conftest import OTHER_SERVICE
from .harness.dockerd import DEAD_END_PROXY, Dockerd
from .harness.hubfront import PREFIX, HubFront
from .harness.oci import FOREIGN, HOST, OCI_MANIFEST, MiB
from .harness.processes import free_port
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.skopeo import Skopeo
from .harness.slowlink import SlowLink
from .harness.tokens import PUSHER, SERVICE, TokenIssuer
from .harness.verify import assert_dir_copy

pytestmark = pytest.mark.integration


def test_upstream_demands_a_bearer_token(upstream: UpstreamRegistry, issuer: TokenIssuer) -> None:
    answer = request(f"{upstream.url}/v2/")
    assert answer.status == 401
    challenge = parse_bearer_challenge(answer.headers["www-authenticate"])
    assert challenge == {"realm": issuer.realm, "service": SERVICE}

    before = issuer.count()
    assert RegistryClient(upstream.url).request("GET", "/v2/").status == 200
    assert issuer.count() == before + 1


def test_anonymous_tokens_cannot_push(
    upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    name = f"org/{unique('denied')}"
    scope = f"repository:{name}:pull,push"
    anonymous = RegistryClient(upstream.url).request(
        "POST", f"/v2/{name}/blobs/uploads/", scope=scope
    )
    assert anonymous.status == 401
    pusher = RegistryClient(upstream.url, PUSHER).request(
        "POST", f"/v2/{name}/blobs/uploads/", scope=scope
    )
    assert pusher.status == 202


def test_skopeo_pulls_what_was_pushed_and_the_log_counts_it(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    image = publisher.image(
        f"org/{unique('multi')}",
        "v1",
        {HOST: (1 * MiB, 2 * MiB), FOREIGN: (1 * MiB, 3 * MiB)},
    )
    out = tmp_path / "out"
    skopeo.pull_to_dir(upstream.host, image.reference, out)
    assert_dir_copy(out, image)
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob


def test_raw_blob_upload(
    publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    blob = publisher.blob(f"org/{unique('raw')}", 3 * MiB + 17)
    scope = f"repository:{blob.name}:pull"
    answer = RegistryClient(upstream.url).request("GET", blob.path, scope=scope)
    assert (answer.status, answer.body) == (200, blob.data)
    # The 401 challenge, then the retry with a token: one fetch.
    assert upstream.count("GET", blob.path) == 2
    assert upstream.fetches(blob.path) == 1


def test_each_registry_takes_only_tokens_for_its_own_service(
    publisher: Publisher,
    other_publisher: Publisher,
    upstream: UpstreamRegistry,
    other_upstream: UpstreamRegistry,
    issuer: TokenIssuer,
    unique: Callable[[str], str],
) -> None:
    """Two registries, one issuer: a token is for one registry's service, so
    a client (the mirror) that sent one registry's token to the other would
    be refused, as between ghcr.io and quay.io."""
    name = f"org/{unique('two')}"
    mine = publisher.image(name, "v1", {HOST: (4096,)})
    theirs = other_publisher.image(name, "v1", {HOST: (4096,)})
    path = f"/v2/{name}/manifests/v1"
    scope = f"repository:{name}:pull"
    token = RegistryClient(upstream.url).token({"realm": issuer.realm, "service": SERVICE}, scope)
    headers = {"Accept": OCI_MANIFEST, "Authorization": f"Bearer {token}"}

    accepted = request(f"{upstream.url}{path}", headers=headers)
    refused = request(f"{other_upstream.url}{path}", headers=headers)
    other = RegistryClient(other_upstream.url).request("GET", path, headers={"Accept": OCI_MANIFEST})

    assert (upstream.service, other_upstream.service) == (SERVICE, OTHER_SERVICE)
    assert (accepted.status, accepted.headers["docker-content-digest"]) == (200, mine.digest)
    assert refused.status == 401
    assert parse_bearer_challenge(refused.headers["www-authenticate"])["service"] == OTHER_SERVICE
    assert (other.status, other.headers["docker-content-digest"]) == (200, theirs.digest)
    assert mine.digest != theirs.digest


def test_hub_front_serves_under_its_prefix_and_its_cdn_refuses_credentials(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    hub_front: HubFront,
    unique: Callable[[str], str],
) -> None:
    blob = publisher.blob(f"library/{unique('front')}", 1 * MiB + 5)
    client = RegistryClient(hub_front.url)
    scope = f"repository:{blob.name}:pull"

    unprefixed = request(f"{hub_front.url}/v2/")
    challenged = request(f"{hub_front.remote_url}/v2/")
    redirected = client.request("GET", f"{PREFIX}{blob.path}", scope=scope)
    location = redirected.headers["location"]
    token = client.token(parse_bearer_challenge(challenged.headers["www-authenticate"]), scope)
    with_token = request(location, headers={"Authorization": f"Bearer {token}"})
    unsigned = request(location.partition("?")[0])
    anonymous = request(location)

    assert unprefixed.status == 404
    assert challenged.status == 401
    assert redirected.status == 307 and location.startswith(f"{hub_front.cdn.url}/blobs/")
    assert with_token.status == 403 and unsigned.status == 403
    assert (anonymous.status, anonymous.body) == (200, blob.data)
    assert hub_front.cdn.fetches(blob.digest) == 1
    # The 401, then the retry with a token answered with the redirect.
    assert [(s.path, s.status) for s in hub_front.seen()] == [
        ("/v2/", 404),
        (f"{PREFIX}/v2/", 401),
        (f"{PREFIX}{blob.path}", 401),
        (f"{PREFIX}{blob.path}", 307),
    ]
    # The registry was asked whether the blob is there, never for its bytes.
    assert upstream.fetches(blob.path) == 0


def test_slow_link_paces_the_upstream(
    publisher: Publisher, upstream: UpstreamRegistry, unique: Callable[[str], str]
) -> None:
    blob = publisher.blob(f"org/{unique('paced')}", 2 * MiB)
    with SlowLink(upstream.port, bytes_per_second=4 * MiB) as link:
        started = time.monotonic()
        answer = RegistryClient(link.url).request(
            "GET", blob.path, scope=f"repository:{blob.name}:pull"
        )
        elapsed = time.monotonic() - started
    assert answer.body == blob.data
    assert elapsed >= 0.45


def test_dockerd_pulls_from_the_upstream_directly(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_dockerd: Callable[..., Dockerd],
    unique: Callable[[str], str],
) -> None:
    """The images are real enough for dockerd (diff_ids, platforms)."""
    image = publisher.image(
        f"org/{unique('direct')}",
        "v1",
        {HOST: (1 * MiB, 2 * MiB), FOREIGN: (1 * MiB,)},
    )
    daemon = start_dockerd(insecure=[upstream.host])
    reference = f"{upstream.host}/{image.reference}"
    daemon.pull(reference)
    assert daemon.repo_digests(reference) == [f"{upstream.host}/{image.name}@{image.digest}"]
    amd64 = image.for_platform(HOST)
    for blob in amd64.layers:
        assert upstream.blob_fetches(image.name, blob.digest) == 1
    for blob in image.for_platform(FOREIGN).layers:
        assert upstream.blob_fetches(image.name, blob.digest) == 0


def test_dockerd_cannot_fall_back_to_docker_hub(start_dockerd: Callable[..., Dockerd]) -> None:
    """After a mirror fails, dockerd tries registry-1.docker.io; here that
    attempt dies at a local dead end, so no test passes by reaching out."""
    daemon = start_dockerd(mirrors=[f"http://127.0.0.1:{free_port()}"])
    pulled = daemon.run("pull", "nothing:v1", check=False, timeout=60)
    assert pulled.returncode != 0
    assert "registry-1.docker.io" in pulled.stderr
    assert DEAD_END_PROXY.removeprefix("http://") in pulled.stderr
