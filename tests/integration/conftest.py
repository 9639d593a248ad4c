"""Fixtures for the integration tests: real processes on 127.0.0.1.

Session scope for what is shared and slow to set up: the token issuer, the
upstream registry (and a second one, another registry with a token service
of its own, for tests of a mirror of several), skopeo's private
configuration. Function scope for the mirror (a fresh cache per test),
dockerd and containerd (they start in about a second, and their mirror is
the test's own mirror), podman's private storage and the Hub-like front
(its records are the test's). Each test names its repositories uniquely, so
counts at the shared upstreams never mix between tests.

When a test fails, the tails of the logs of the processes it used are added
to its report.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import pytest

from ..testca import ServerFiles
from .harness.ceph import CephPrograms, CephRgw
from .harness.containerd import Containerd
from .harness.dockerd import Dockerd
from .harness.hubfront import BlobCdn, HubFront
from .harness.mirror import Mirror, MirrorFactory
from .harness.podman import Podman
from .harness.processes import tail
from .harness.publish import Publisher
from .harness.redisserver import RedisServer
from .harness.registry import UpstreamRegistry
from .harness.s3service import S3Service
from .harness.seaweedfs import SeaweedFS, weed_binary
from .harness.skopeo import Skopeo
from .harness.tokens import TokenIssuer
from .harness.tools import require_root, require_tool

# Plain asserts in the harness's checking helpers report like test asserts
# (registered before any test module imports harness.verify).
pytest.register_assert_rewrite(f"{__package__}.harness.verify")

_LOGS = pytest.StashKey[list[tuple[str, Path]]]()


def show_log_on_failure(request: pytest.FixtureRequest, title: str, path: Path) -> None:
    """Attach the tail of ``path`` to the report if the current test fails."""
    request.node.stash.setdefault(_LOGS, []).append((title, path))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for title, path in item.stash.get(_LOGS, []):
            report.sections.append((f"{title}: {path}", tail(path)))
    return report


@pytest.fixture(scope="session")
def issuer() -> Iterator[TokenIssuer]:
    """Docker Hub's token service, as a thread in this process."""
    service = TokenIssuer()
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def upstream_registry(
    issuer: TokenIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpstreamRegistry]:
    binary = require_tool("docker-registry", "docker-registry")
    registry = UpstreamRegistry.start(binary, issuer, tmp_path_factory.mktemp("upstream"))
    yield registry
    registry.stop()


@pytest.fixture
def upstream(
    upstream_registry: UpstreamRegistry, request: pytest.FixtureRequest
) -> UpstreamRegistry:
    """The shared upstream registry, its access log shown if this test fails."""
    show_log_on_failure(request, "upstream access log", upstream_registry.access_log)
    return upstream_registry


# The second registry's token service: tokens for the first one's
# (tokens.SERVICE) are refused there, and the other way round.
OTHER_SERVICE = "other-registry.test"


@pytest.fixture(scope="session")
def other_registry(
    issuer: TokenIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpstreamRegistry]:
    binary = require_tool("docker-registry", "docker-registry")
    registry = UpstreamRegistry.start(
        binary, issuer, tmp_path_factory.mktemp("other-upstream"), service=OTHER_SERVICE
    )
    yield registry
    registry.stop()


@pytest.fixture
def other_upstream(
    other_registry: UpstreamRegistry, request: pytest.FixtureRequest
) -> UpstreamRegistry:
    """A second registry, its own token service and content, its access log
    shown if this test fails."""
    show_log_on_failure(request, "other upstream access log", other_registry.access_log)
    return other_registry


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    binary = require_tool("skopeo", "skopeo")
    return Skopeo.prepare(binary, tmp_path_factory.mktemp("skopeo"))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """SeaweedFS's S3 gateway: buckets of their own for each test (`new_bucket`)."""
    server = SeaweedFS.start(weed_binary(), tmp_path_factory.mktemp("seaweedfs"))
    yield server.service
    server.stop()


@pytest.fixture
def publisher(upstream: UpstreamRegistry, skopeo: Skopeo, tmp_path: Path) -> Publisher:
    """Pushes random images and blobs to the upstream."""
    return Publisher(upstream, skopeo, tmp_path / "publish")


@pytest.fixture
def other_publisher(other_upstream: UpstreamRegistry, skopeo: Skopeo, tmp_path: Path) -> Publisher:
    """Pushes random images to the second registry."""
    return Publisher(other_upstream, skopeo, tmp_path / "publish-other")


@pytest.fixture
def hub_front(upstream: UpstreamRegistry) -> Iterator[HubFront]:
    """The upstream behind a Hub-like front: the API under a path prefix,
    blob GETs redirected to a CDN that refuses credentials."""
    cdn = BlobCdn(upstream).start()
    front = HubFront(upstream, cdn).start()
    yield front
    front.stop()
    cdn.stop()


@pytest.fixture
def redis_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test's own, on a free port of 127.0.0.1."""
    binary = require_tool("redis-server", "redis-server")
    server = RedisServer.start(binary, tmp_path / "redis")
    show_log_on_failure(request, "redis-server", server.log_path)
    yield server
    server.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("multi")`` -> a repository name component no other test uses."""
    return lambda prefix: f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def start_mirror(
    upstream: UpstreamRegistry, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[MirrorFactory]:
    """Start a mirror: ``start_mirror(cache_dir=..., upstream_url=...,
    credentials=..., options=[...], tls=..., command_prefix=[...])``;
    defaults are this test's
    cache dir and the upstream, no extra options, plain HTTP. Starting again
    with the same cache dir is how a test restarts it."""
    started: list[Mirror] = []

    def start(
        cache_dir: Path | None = None,
        upstream_url: str | None = None,
        credentials: tuple[str, str] | None = None,
        *,
        options: Sequence[str] = (),
        tls: ServerFiles | None = None,
        command_prefix: Sequence[str] = (),
        answers_us: bool = True,
        port: int | None = None,
    ) -> Mirror:
        log_path = tmp_path / f"mirror-{len(started)}.log"
        show_log_on_failure(request, f"mirror #{len(started)} log", log_path)
        mirror = Mirror.start(
            upstream_url or upstream.url,
            cache_dir or tmp_path / "cache",
            log_path,
            credentials,
            options=options,
            tls=tls,
            command_prefix=command_prefix,
            answers_us=answers_us,
            port=port,
        )
        started.append(mirror)
        return mirror

    yield start
    errors = []
    for mirror in started:
        try:
            mirror.stop()
        except RuntimeError as error:
            errors.append(str(error))
    assert not errors, "\n".join(errors)


@pytest.fixture
def mirror(start_mirror: MirrorFactory) -> Mirror:
    """A mirror with an empty cache in front of the upstream."""
    return start_mirror()


@pytest.fixture
def start_dockerd(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Dockerd]]:
    """Start a private dockerd: ``start_dockerd(mirrors=[url], insecure=[host])``."""
    require_root("dockerd")
    dockerd_binary = require_tool("dockerd", "docker.io")
    docker_binary = require_tool("docker", "docker.io")
    started: list[Dockerd] = []

    def start(mirrors: Sequence[str] = (), insecure: Sequence[str] = ()) -> Dockerd:
        work_dir = tmp_path / f"dockerd-{len(started)}"
        show_log_on_failure(request, f"dockerd #{len(started)} log", work_dir / "dockerd.log")
        daemon = Dockerd.start(dockerd_binary, docker_binary, mirrors, insecure, work_dir)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def containerd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Containerd]:
    """A private containerd; ``ctr`` pulls through hosts directories."""
    require_root("containerd")
    binary = require_tool("containerd", "containerd")
    ctr = require_tool("ctr", "containerd")
    show_log_on_failure(request, "containerd log", tmp_path / "containerd" / "containerd.log")
    daemon = Containerd.start(binary, ctr, tmp_path / "containerd")
    yield daemon
    daemon.stop()


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    """podman with storage, configuration and registries.conf of its own."""
    require_root("podman")
    binary = require_tool("podman", "podman")
    client = Podman.prepare(binary, tmp_path / "podman")
    yield client
    client.remove()


@pytest.fixture
def dockerd(start_dockerd: Callable[..., Dockerd], mirror: Mirror) -> Dockerd:
    """A dockerd whose Docker Hub mirror is this test's mirror."""
    return start_dockerd(mirrors=[mirror.url])


@pytest.fixture(scope="session")
def ceph_rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """Ceph's S3 gateway (one monitor, one in-memory OSD, radosgw, cephx)
    and one S3 user's keys: the strict S3 server of the storage contract
    tests."""
    cluster = CephRgw.start(CephPrograms.require(), tmp_path_factory.mktemp("ceph"))
    yield cluster.service
    cluster.stop()
