"""Many registries through one mirror, with real clients.

Two reference registries, each with token auth under its own service name,
both holding the same repository name with different content, stand for
registries such as ghcr.io and quay.io: the mirror is told those names as an
operator tells it the real ones (``--upstream ghcr.io=http://127.0.0.1:P``).
The clients are set up as the README says: containerd with a ``hosts.toml``
per registry (it sends ``?ns=``), podman with a ``registries.conf`` mirror
in the path-prefix form, skopeo and dockerd with path-prefix references,
dockerd's ``registry-mirrors`` (Docker Hub only) here through a chained
Hub-like remote with a path prefix and a CDN.  Wherever a client would fall
back to the registry itself the fallback is a dead end, so nothing leaves
this host and a pull that works went through the mirror.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness.client import request
from .harness.containerd import DEAD_END, Containerd
from .harness.dockerd import Dockerd
from .harness.hubfront import PREFIX, HubFront
from .harness.mirror import Mirror, MirrorFactory
from .harness.oci import HOST, Image, MiB
from .harness.processes import free_port
from .harness.podman import Podman
from .harness.publish import ACCEPT_MANIFESTS, Publisher
from .harness.registry import LogMark, UpstreamRegistry
from .harness.skopeo import Skopeo
from .harness.tokens import TokenIssuer
from .harness.verify import assert_dir_copy

pytestmark = pytest.mark.integration


def same_name_twice(
    publisher: Publisher, other_publisher: Publisher, name: str
) -> tuple[Image, Image]:
    """``name:v1`` on each registry, different content."""
    return (
        publisher.image(name, "v1", {HOST: (1 * MiB, 256 * 1024)}),
        other_publisher.image(name, "v1", {HOST: (512 * 1024,)}),
    )


def ghcr_and_quay(
    start_mirror: MirrorFactory,
    upstream: UpstreamRegistry,
    other_upstream: UpstreamRegistry,
    *options: str,
) -> Mirror:
    """A mirror of the two registries, by the names clients know them by."""
    return start_mirror(
        upstream_url=f"ghcr.io={upstream.url}",
        options=["--upstream", f"quay.io={other_upstream.url}", *options],
    )


def error_of(body: bytes) -> tuple[str, str]:
    """A registry JSON error's code and message."""
    (error,) = json.loads(body)["errors"]
    return error["code"], error["message"]


def asked_for(registry: UpstreamRegistry, name: str, since: LogMark | None = None) -> list[str]:
    """``METHOD PATH STATUS`` of every request for repository ``name``."""
    return [
        f"{r.method} {r.path.replace(name, 'NAME')} {r.status}"
        for r in registry.requests(since)
        if r.path.startswith(f"/v2/{name}/")
    ]


def resolved_then_fetched(image: Image, blob_status: int = 200) -> list[str]:
    """What a cold mirror asks upstream for (sorted, as `asked_for` words
    it) when a client resolves ``image``'s tag with a HEAD and fetches the
    manifest by digest (containerd, dockerd): the tag, meeting the token
    challenge first; the manifest by digest; each blob once."""
    return sorted(
        [
            "HEAD /v2/NAME/manifests/v1 401",
            "HEAD /v2/NAME/manifests/v1 200",
            f"GET /v2/NAME/manifests/{image.digest} 200",
            *(f"GET /v2/NAME/blobs/{blob.digest} {blob_status}" for blob in image.blobs()),
        ]
    )


def fetched_by_tag(image: Image) -> list[str]:
    """The same when a client GETs the manifest by tag (podman): the tag,
    meeting the token challenge first; each blob once."""
    return sorted(
        [
            "GET /v2/NAME/manifests/v1 401",
            "GET /v2/NAME/manifests/v1 200",
            *(f"GET /v2/NAME/blobs/{blob.digest} 200" for blob in image.blobs()),
        ]
    )


def access_events(mirror: Mirror) -> list[dict[str, object]]:
    """The access-log events of a mirror started with ``--log-format json``."""
    events = []
    for line in mirror.process.log_path.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("namespace") == "mirrorproxy.access":
                events.append(event)
    return events


def upstream_requests_by_registry(metrics_url: str) -> dict[str, float]:
    """``mirrorproxy_upstream_requests_total`` for manifests and blobs (not
    the readiness probes of ``/v2/``), summed per registry label."""
    answer = request(metrics_url)
    assert answer.status == 200
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            if sample.name != "mirrorproxy_upstream_requests_total":
                continue
            if sample.labels["kind"] in ("manifest", "blob"):
                registry = sample.labels["registry"]
                totals[registry] = totals.get(registry, 0) + sample.value
    return totals


def test_ctr_pulls_one_name_from_two_registries_through_one_mirror(
    publisher: Publisher,
    other_publisher: Publisher,
    upstream: UpstreamRegistry,
    other_upstream: UpstreamRegistry,
    issuer: TokenIssuer,
    start_mirror: MirrorFactory,
    containerd: Containerd,
    unique: Callable[[str], str],
) -> None:
    name = f"org/{unique('app')}"
    ghcr, quay = same_name_twice(publisher, other_publisher, name)
    metrics_port = free_port()
    mirror = ghcr_and_quay(
        start_mirror,
        upstream,
        other_upstream,
        "--log-format", "json",
        "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1",
    )
    tokens_before = len(issuer.requests())
    marks = upstream.mark(), other_upstream.mark()
    # The README's hosts.toml, one per registry, the fallback a dead end.
    hosts = containerd.write_hosts("ghcr.io", mirror.url)
    containerd.write_hosts("quay.io", mirror.url)

    containerd.pull(f"ghcr.io/{name}:v1", hosts)
    containerd.pull(f"quay.io/{name}:v1", hosts)

    assert containerd.image_digest(f"ghcr.io/{name}:v1") == ghcr.digest
    assert containerd.image_digest(f"quay.io/{name}:v1") == quay.digest
    assert ghcr.digest != quay.digest
    # Each registry was asked for its own content once, and for nothing
    # else: 6 requests of one, 5 of the other (3 and 2 blobs).
    assert sorted(asked_for(upstream, name, marks[0])) == resolved_then_fetched(ghcr)
    assert sorted(asked_for(other_upstream, name, marks[1])) == resolved_then_fetched(quay)
    # One token for each, from each registry's own service.
    tokens = [(t.service, t.scopes) for t in issuer.requests()[tokens_before:]]
    assert sorted(tokens) == sorted(
        [
            (upstream.service, (f"repository:{name}:pull",)),
            (other_upstream.service, (f"repository:{name}:pull",)),
        ]
    )
    # A cache directory per registry.
    for registry, image in (("ghcr.io", ghcr), ("quay.io", quay)):
        for blob in image.blobs():
            hex_digest = blob.digest.removeprefix("sha256:")
            path = mirror.cache_dir / registry / "blobs" / "sha256" / hex_digest[:2] / hex_digest
            assert path.is_file(), path
    # The access log names each request's registry; the metrics count what
    # went upstream per registry as the registries' own logs do.
    routed = {(e["registry"], e["path"]) for e in access_events(mirror) if name in str(e["path"])}
    assert {registry for registry, _ in routed} == {"ghcr.io", "quay.io"}
    assert all(f"ns={registry}" in str(path) for registry, path in routed), routed
    counted = upstream_requests_by_registry(f"http://127.0.0.1:{metrics_port}/metrics")
    assert counted == {"ghcr.io": 6, "quay.io": 5}


def test_an_unserved_registry_is_name_unknown_and_reaches_no_upstream(
    other_publisher: Publisher,
    upstream: UpstreamRegistry,
    other_upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    containerd: Containerd,
    start_dockerd: Callable[..., Dockerd],
    unique: Callable[[str], str],
) -> None:
    name = f"org/{unique('routes')}"
    image = other_publisher.image(name, "v1", {HOST: (4096,)})
    # The other registry named by its host and port, as a bare --upstream
    # names it; no docker.io, so no default registry.
    mirror = start_mirror(
        upstream_url=f"ghcr.io={upstream.url}", options=["--upstream", other_upstream.url]
    )
    marks = upstream.mark(), other_upstream.mark()
    hosts = containerd.write_hosts("registry.k8s.io", mirror.url)

    pulled = containerd.pull(f"registry.k8s.io/{name}:v1", hosts, check=False)
    # dockerd's requests name no registry, and this mirror has no default.
    hub_pull = start_dockerd(mirrors=[mirror.url]).run("pull", f"{name}:v1", check=False)
    unserved = mirror.get(f"/v2/{name}/manifests/v1?ns=registry.k8s.io")
    unnamed = mirror.get(f"/v2/{name}/manifests/v1")
    # A registry with a port as the first path component: no image
    # reference can spell it, a plain HTTP client can.
    by_path = request(
        f"{mirror.url}/v2/{other_upstream.host}/{name}/manifests/v1",
        headers={"Accept": ACCEPT_MANIFESTS},
    )

    # ctr got the mirror's 404, tried the next host (the dead end), failed.
    assert pulled.returncode != 0
    assert "response was http.StatusNotFound" in pulled.stderr, pulled.stderr
    # dockerd got NAME_UNKNOWN, tried Docker Hub (the dead end), failed.
    assert hub_pull.returncode != 0
    assert f"HEAD /v2/{name}/manifests/v1 404" in mirror.process.log_path.read_text()
    assert "registry-1.docker.io" in hub_pull.stderr, hub_pull.stderr
    assert unserved[0] == 404
    assert error_of(unserved[2]) == (
        "NAME_UNKNOWN",
        "this mirror does not serve registry 'registry.k8s.io'",
    )
    assert unnamed[0] == 404
    assert error_of(unnamed[2])[0] == "NAME_UNKNOWN"
    assert "name one" in error_of(unnamed[2])[1]
    assert (by_path.status, by_path.headers["docker-content-digest"]) == (200, image.digest)
    # Only the request by path went upstream (the mirror's readiness probes
    # of /v2/ may come and go meanwhile).
    assert [r.path for r in upstream.requests(marks[0]) if r.path != "/v2/"] == []
    assert [
        f"{r.method} {r.path} {r.status}" for r in other_upstream.requests(marks[1]) if r.path != "/v2/"
    ] == [f"GET /v2/{name}/manifests/v1 401", f"GET /v2/{name}/manifests/v1 200"]


def registries_conf(mirror: Mirror, registries: dict[str, str]) -> str:
    """The README's registries.conf: pulls of each registry (a prefix of
    image names) go first to the mirror, in the path-prefix form with the
    name the mirror knows it by; the registry itself is a dead end here."""
    blocks = []
    for prefix, namespace in registries.items():
        blocks.append(
            "[[registry]]\n"
            f'prefix = "{prefix}"\n'
            f'location = "{DEAD_END.removeprefix("http://")}"\n'
            "\n"
            "[[registry.mirror]]\n"
            f'location = "{mirror.host}/{namespace}"\n'
            "insecure = true\n"
        )
    return "\n".join(blocks)


def test_podman_and_skopeo_pull_through_the_path_prefix_form(
    publisher: Publisher,
    other_publisher: Publisher,
    upstream: UpstreamRegistry,
    other_upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    podman: Podman,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    name = f"org/{unique('prefix')}"
    ghcr, other = same_name_twice(publisher, other_publisher, name)
    # A registry with a port cannot be named in a path (mirror:5000/
    # host:5001/app is no reference), so the mirror knows the other one by
    # its host alone, as the README says to.
    mirror = start_mirror(
        upstream_url=f"ghcr.io={upstream.url}",
        options=["--upstream", f"127.0.0.1={other_upstream.url}"],
    )
    marks = upstream.mark(), other_upstream.mark()
    podman.registries_conf.write_text(
        registries_conf(mirror, {"ghcr.io": "ghcr.io", other_upstream.host: "127.0.0.1"})
    )

    # No --tls-verify=false: the registries.conf's `insecure = true` is
    # what lets podman reach a plain-HTTP mirror.
    podman.pull(f"ghcr.io/{name}:v1")
    podman.pull(f"{other_upstream.host}/{name}:v1")
    # skopeo names the mirror and the registry in the reference itself.
    skopeo.pull_to_dir(mirror.host, f"ghcr.io/{name}:v1", tmp_path / "ghcr")
    skopeo.pull_to_dir(mirror.host, f"127.0.0.1/{name}:v1", tmp_path / "other")

    assert podman.image_digest(f"ghcr.io/{name}:v1") == ghcr.digest
    assert podman.image_digest(f"{other_upstream.host}/{name}:v1") == other.digest
    assert_dir_copy(tmp_path / "ghcr", ghcr)
    assert_dir_copy(tmp_path / "other", other)
    # podman's pulls filled each registry's cache (5 requests of one, 4 of
    # the other); skopeo's came from the caches.
    assert sorted(asked_for(upstream, name, marks[0])) == fetched_by_tag(ghcr)
    assert sorted(asked_for(other_upstream, name, marks[1])) == fetched_by_tag(other)


def test_dockerd_pulls_docker_hub_names_through_a_chained_remote_and_its_cdn(
    publisher: Publisher,
    other_publisher: Publisher,
    upstream: UpstreamRegistry,
    other_upstream: UpstreamRegistry,
    hub_front: HubFront,
    start_mirror: MirrorFactory,
    start_dockerd: Callable[..., Dockerd],
    unique: Callable[[str], str],
) -> None:
    """Docker Hub served by an Artifactory-like remote (a path prefix, blobs
    from a CDN) for dockerd's registry-mirrors, beside quay.io, which dockerd
    reaches only by naming the mirror in the image (the path-prefix form)."""
    name = unique("hub")
    # An official image: pulled as NAME, asked of the mirror as library/NAME.
    hub = publisher.image(f"library/{name}", "v1", {HOST: (1 * MiB, 2 * MiB)})
    quay = other_publisher.image(f"library/{name}", "v1", {HOST: (1 * MiB,)})
    mirror = start_mirror(
        upstream_url=f"docker.io={hub_front.remote_url}",
        options=["--upstream", f"quay.io={other_upstream.url}"],
    )
    other_mark = other_upstream.mark()
    dockerd = start_dockerd(mirrors=[mirror.url], insecure=[mirror.host])
    by_path = f"{mirror.host}/quay.io/library/{name}:v1"

    dockerd.pull(f"{name}:v1")
    dockerd.pull(by_path)

    assert dockerd.repo_digests(f"{name}:v1") == [f"{name}@{hub.digest}"]
    assert dockerd.repo_digests(by_path) == [f"{mirror.host}/quay.io/library/{name}@{quay.digest}"]
    # Every blob crossed from the CDN once, and the CDN saw no credentials.
    for blob in hub.blobs():
        assert hub_front.cdn.fetches(blob.digest) == 1, blob
    assert [s for s in hub_front.cdn.seen() if s.authorization or s.status != 200] == []
    # The mirror asked the remote under its path prefix only (its readiness
    # probes of /v2/ too), each thing once: 6 requests, the 3 blob GETs
    # answered with the CDN.
    assert {s.path.startswith(f"{PREFIX}/v2/") for s in hub_front.seen()} == {True}
    asked = [
        f"{s.method} {s.path.removeprefix(PREFIX).replace(hub.name, 'NAME')} {s.status}"
        for s in hub_front.seen()
        if hub.name in s.path
    ]
    assert sorted(asked) == resolved_then_fetched(hub, blob_status=307)
    # quay.io was asked for its own image once (5 requests), for nothing of
    # Docker Hub's.
    assert sorted(asked_for(other_upstream, quay.name, other_mark)) == resolved_then_fetched(quay)
