"""Client access control with real clients: an htpasswd file written by
Apache's ``htpasswd -B``, skopeo with ``--src-creds``, dockerd with the
credentials it holds for Docker Hub, and a network allowlist."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness.dockerd import Dockerd
from .harness.mirror import Mirror, MirrorFactory
from .harness.oci import HOST, MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.skopeo import Skopeo
from .harness.tools import require_tool
from .harness.verify import assert_dir_copy

pytestmark = pytest.mark.integration

ALICE = ("alice", "correct horse battery staple")
# What the docker CLI keys Docker Hub's credentials under in config.json.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"

@pytest.fixture
def htpasswd_file(tmp_path: Path) -> Path:
    """An htpasswd file made by Apache's own tool, as an operator would."""
    binary = require_tool("htpasswd", "apache2-utils")
    path = tmp_path / "htpasswd"
    subprocess.run([binary, "-cbB", str(path), *ALICE], check=True, capture_output=True)
    subprocess.run([binary, "-bB", str(path), "bob", "other"], check=True, capture_output=True)
    return path


@pytest.fixture
def start_secured(start_mirror: MirrorFactory) -> MirrorFactory:
    """``start_secured(*options)``: a mirror in front of the upstream."""
    return lambda *options: start_mirror(options=options)


def skopeo_copy(skopeo: Skopeo, mirror: Mirror, reference: str, out: Path, *creds: str) -> None:
    skopeo.run(
        "copy",
        "--all",
        "--src-tls-verify=false",
        *creds,
        f"docker://{mirror.host}/{reference}",
        f"dir:{out}",
    )


def test_skopeo_with_the_right_credentials_gets_the_image(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_secured: MirrorFactory,
    htpasswd_file: Path,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    image = publisher.image(f"org/{unique('auth')}", "v1", {HOST: (3 * MiB, 1 * MiB)})
    mirror = start_secured("--htpasswd", str(htpasswd_file))

    skopeo_copy(skopeo, mirror, image.reference, tmp_path / "out", "--src-creds", ":".join(ALICE))

    assert_dir_copy(tmp_path / "out", image)
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob


@pytest.mark.parametrize(
    "creds",
    [("--src-creds", f"{ALICE[0]}:wrong password"), ("--src-creds", "mallory:x"), ("--src-no-creds",)],
    ids=["wrong-password", "unknown-user", "anonymous"],
)
def test_skopeo_without_the_right_credentials_gets_401_and_nothing(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_secured: MirrorFactory,
    htpasswd_file: Path,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
    creds: tuple[str, ...],
) -> None:
    image = publisher.image(f"org/{unique('noauth')}", "v1", {HOST: (1 * MiB,)})
    mirror = start_secured("--htpasswd", str(htpasswd_file))
    mark = upstream.mark()

    with pytest.raises(RuntimeError) as failed:
        skopeo_copy(skopeo, mirror, image.reference, tmp_path / "out", *creds)

    assert "401" in str(failed.value) or "unauthorized" in str(failed.value).lower()
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert [r for r in upstream.requests(mark) if image.name in r.path] == []
    status, headers, body = mirror.get(f"/v2/{image.name}/manifests/v1", ("alice", "wrong"))
    assert status == 401
    assert headers["www-authenticate"] == 'Basic realm="mirrorproxy"'
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"


def test_a_client_outside_the_allowed_networks_is_closed_at_accept(
    publisher: Publisher,
    start_mirror: MirrorFactory,
    start_secured: MirrorFactory,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """--allow is enforced when the connection is accepted: a client from
    elsewhere cannot send the mirror a single request."""
    image = publisher.image(f"org/{unique('allow')}", "v1", {HOST: (1 * MiB,)})
    elsewhere = start_mirror(options=["--allow", "10.0.0.0/8", "--allow", "fd00::/8"], answers_us=False)
    here = start_secured("--allow", "10.0.0.0/8", "--allow", "127.0.0.0/8")

    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        elsewhere.get("/v2/")
    with pytest.raises(RuntimeError, match="(?i)EOF|reset|closed"):
        skopeo_copy(skopeo, elsewhere, image.reference, tmp_path / "refused", "--src-no-creds")
    skopeo_copy(skopeo, here, image.reference, tmp_path / "out", "--src-no-creds")

    assert_dir_copy(tmp_path / "out", image)
    assert "1 from networks not allowed" in elsewhere.process.tail()


def test_an_htpasswd_file_with_a_non_bcrypt_entry_stops_the_start(
    upstream: UpstreamRegistry, htpasswd_file: Path, tmp_path: Path
) -> None:
    md5 = subprocess.run(
        ["htpasswd", "-nbm", "carol", "pw"], check=True, capture_output=True, text=True
    ).stdout.strip()
    htpasswd_file.write_text(htpasswd_file.read_text() + md5 + "\n")

    with pytest.raises(RuntimeError, match="exited with 1"):
        Mirror.start(
            upstream.url,
            tmp_path / "cache",
            tmp_path / "mirror.log",
            options=["--htpasswd", str(htpasswd_file)],
        )

    log = (tmp_path / "mirror.log").read_text()
    assert f"{htpasswd_file}, line 3: user 'carol' does not have a bcrypt hash" in log
    assert md5.partition(":")[2] not in log
    assert "Traceback" not in log


# -- dockerd -------------------------------------------------------------------------
#
# dockerd sends a mirror the credentials the docker CLI holds for Docker Hub
# (config.json "auths" under https://index.docker.io/v1/, passed to the
# daemon in X-Registry-Auth with each pull), answering the mirror's Basic
# challenge with them. `docker login` itself always goes to Docker Hub, never
# to a mirror, so here (offline) the entry is written as `docker login`
# would write it.


def store_docker_hub_credentials(daemon: Dockerd, username: str, password: str) -> None:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = {"auths": {DOCKER_HUB_AUTH_KEY: {"auth": auth}}}
    (daemon.config_dir / "config.json").write_text(json.dumps(config))


def test_dockerd_authenticates_to_the_mirror_with_its_docker_hub_credentials(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_secured: MirrorFactory,
    start_dockerd: Callable[..., Dockerd],
    htpasswd_file: Path,
    unique: Callable[[str], str],
) -> None:
    name = unique("dockerauth")
    image = publisher.image(f"library/{name}", "v1", {HOST: (2 * MiB, 1 * MiB)})
    mirror = start_secured("--htpasswd", str(htpasswd_file))
    daemon = start_dockerd(mirrors=[mirror.url])

    # Anonymous: the mirror says 401, dockerd falls back to Docker Hub,
    # which (here, as behind a firewall) cannot be reached.
    anonymous = daemon.run("pull", "--quiet", f"{name}:v1", check=False)
    assert anonymous.returncode != 0
    assert upstream.fetches(f"/v2/{image.name}/manifests/v1") == 0

    store_docker_hub_credentials(daemon, "alice", "not the password")
    wrong = daemon.run("pull", "--quiet", f"{name}:v1", check=False)
    assert wrong.returncode != 0
    assert "wrong user name or password for 'alice'" in mirror.process.tail(200)

    store_docker_hub_credentials(daemon, *ALICE)
    daemon.pull(f"{name}:v1")

    assert daemon.repo_digests(f"{name}:v1") == [f"{name}@{image.digest}"]
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob
