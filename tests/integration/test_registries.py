"""Many registries through one mirror, with real clients.

Two reference registries stand for ghcr.io and quay.io: each with token auth
under its own service name, both holding the same repository name with
different content.  The mirror is told their names as an operator tells it
the real ones (``--upstream ghcr.io=http://127.0.0.1:P``), and the clients
are set up as the README says: containerd with a ``hosts.toml`` per registry
(it sends ``?ns=``), podman with a ``registries.conf`` mirror in the
path-prefix form, skopeo with a path-prefix reference, dockerd with
``registry-mirrors`` (Docker Hub only), here through a chained Hub-like
remote with a path prefix and a CDN.  Wherever a client would fall back to
the registry itself the fallback is a dead end, so nothing leaves this host
and a pull that works went through the mirror.
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


def blob_gets(image: Image) -> list[str]:
    return [f"GET /v2/NAME/blobs/{blob.digest} 200" for blob in image.blobs()]


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
            if sample.name == "mirrorproxy_upstream_requests_total" and sample.labels[
                "kind"
            ] in ("manifest", "blob"):
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
    # Each registry was asked for its own content once, and for nothing else:
    # the tag (meeting the token challenge first), the manifest by digest,
    # each blob; 6 requests of one, 5 of the other (3 and 2 blobs).
    for registry, image, mark in ((upstream, ghcr, marks[0]), (other_upstream, quay, marks[1])):
        assert sorted(asked_for(registry, name, mark)) == sorted(
            [
                "HEAD /v2/NAME/manifests/v1 401",
                "HEAD /v2/NAME/manifests/v1 200",
                f"GET /v2/NAME/manifests/{image.digest} 200",
                *blob_gets(image),
            ]
        )
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


def test_a_registry_the_mirror_does_not_serve_is_name_unknown_and_goes_nowhere(
    upstream: UpstreamRegistry,
    other_upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    containerd: Containerd,
    unique: Callable[[str], str],
) -> None:
    name = f"org/{unique('nowhere')}"
    mirror = ghcr_and_quay(start_mirror, upstream, other_upstream)
    marks = upstream.mark(), other_upstream.mark()
    hosts = containerd.write_hosts("registry.k8s.io", mirror.url)

    pulled = containerd.pull(f"registry.k8s.io/{name}:v1", hosts, check=False)
    unserved = mirror.get(f"/v2/{name}/manifests/v1?ns=registry.k8s.io")
    unnamed = mirror.get(f"/v2/{name}/manifests/v1")

    # ctr got the mirror's 404, tried the next host (the dead end), failed.
    assert pulled.returncode != 0
    assert "response was http.StatusNotFound" in pulled.stderr, pulled.stderr
    assert unserved[0] == 404
    assert error_of(unserved[2]) == ("NAME_UNKNOWN", "this mirror does not serve registry 'registry.k8s.io'")
    assert unnamed[0] == 404
    assert error_of(unnamed[2])[0] == "NAME_UNKNOWN"
    assert "name one" in error_of(unnamed[2])[1]
    # (The mirror's readiness probes of /v2/ may come and go meanwhile.)
    assert [r for r in upstream.requests(marks[0]) if r.path != "/v2/"] == []
    assert [r for r in other_upstream.requests(marks[1]) if r.path != "/v2/"] == []


def registries_conf(mirror: Mirror, *registries: str) -> str:
    """The README's registries.conf: each registry's pulls go to the mirror
    in the path-prefix form first; the registry itself is a dead end here."""
    blocks = []
    for registry in registries:
        blocks.append(
            "[[registry]]\n"
            f'prefix = "{registry}"\n'
            f'location = "{DEAD_END.removeprefix("http://")}"\n'
            "\n"
            "[[registry.mirror]]\n"
            f'location = "{mirror.host}/{registry}"\n'
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
    ghcr, quay = same_name_twice(publisher, other_publisher, name)
    mirror = ghcr_and_quay(start_mirror, upstream, other_upstream)
    marks = upstream.mark(), other_upstream.mark()
    podman.registries_conf.write_text(registries_conf(mirror, "ghcr.io", "quay.io"))

    # No --tls-verify=false: the registries.conf's `insecure = true` is
    # what lets podman reach a plain-HTTP mirror.
    podman.pull(f"ghcr.io/{name}:v1")
    podman.pull(f"quay.io/{name}:v1")
    # skopeo names the mirror and the registry in the reference itself.
    skopeo.pull_to_dir(mirror.host, f"ghcr.io/{name}:v1", tmp_path / "ghcr")
    skopeo.pull_to_dir(mirror.host, f"quay.io/{name}:v1", tmp_path / "quay")

    assert podman.image_digest(f"ghcr.io/{name}:v1") == ghcr.digest
    assert podman.image_digest(f"quay.io/{name}:v1") == quay.digest
    assert_dir_copy(tmp_path / "ghcr", ghcr)
    assert_dir_copy(tmp_path / "quay", quay)
    # podman's pulls filled each registry's cache: the tag (meeting the
    # token challenge first), each blob; skopeo's came from the caches.
    for registry, image, mark in ((upstream, ghcr, marks[0]), (other_upstream, quay, marks[1])):
        assert sorted(asked_for(registry, name, mark)) == sorted(
            ["GET /v2/NAME/manifests/v1 401", "GET /v2/NAME/manifests/v1 200", *blob_gets(image)]
        )


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
    from a CDN), beside another registry named by its host and port."""
    name = unique("hub")
    # An official image: pulled as NAME, asked of the mirror as library/NAME.
    hub = publisher.image(f"library/{name}", "v1", {HOST: (1 * MiB, 2 * MiB)})
    other = other_publisher.image(f"library/{name}", "v1", {HOST: (1 * MiB,)})
    mirror = start_mirror(
        upstream_url=f"docker.io={hub_front.remote_url}",
        options=["--upstream", other_upstream.url],
    )
    other_mark = other_upstream.mark()
    dockerd = start_dockerd(mirrors=[mirror.url])

    dockerd.pull(f"{name}:v1")
    # The brief's path-prefix form with a port, as a plain HTTP client sends it.
    by_path = request(
        f"{mirror.url}/v2/{other_upstream.host}/library/{name}/manifests/v1",
        headers={"Accept": ACCEPT_MANIFESTS},
    )

    assert dockerd.repo_digests(f"{name}:v1") == [f"{name}@{hub.digest}"]
    assert (by_path.status, by_path.headers["docker-content-digest"]) == (200, other.digest)
    # Every blob crossed from the CDN once, and the CDN saw no credentials.
    for blob in hub.blobs():
        assert hub_front.cdn.fetches(blob.digest) == 1, blob
    assert [s for s in hub_front.cdn.seen() if s.authorization or s.status != 200] == []
    # The mirror asked the remote under its path prefix only (its readiness
    # probes of /v2/ too), each thing once: 6 requests, 3 of them answered
    # with the CDN.
    assert {s.path.startswith(f"{PREFIX}/v2/") for s in hub_front.seen()} == {True}
    asked = [
        f"{s.method} {s.path.removeprefix(PREFIX).replace(hub.name, 'NAME')} {s.status}"
        for s in hub_front.seen()
        if hub.name in s.path
    ]
    assert sorted(asked) == sorted(
        [
            "HEAD /v2/NAME/manifests/v1 401",
            "HEAD /v2/NAME/manifests/v1 200",
            f"GET /v2/NAME/manifests/{hub.digest} 200",
            *(f"GET /v2/NAME/blobs/{blob.digest} 307" for blob in hub.blobs()),
        ]
    )
    # The other registry was asked for the manifest asked of it by path
    # (meeting the token challenge first), and for nothing of dockerd's pull.
    assert asked_for(other_upstream, f"library/{name}", other_mark) == [
        "GET /v2/NAME/manifests/v1 401",
        "GET /v2/NAME/manifests/v1 200",
    ]
