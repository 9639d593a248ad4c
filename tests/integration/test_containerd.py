"""containerd's resolver (through ``ctr images pull --hosts-dir``) pulling
through a mirror that listens with TLS and wants Basic credentials: the CA and
an ``Authorization`` header come from ``hosts.toml``, as on a node."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ..testca import ServerFiles, TestCA
from .harness.containerd import Containerd
from .harness.mirror import Mirror, MirrorFactory
from .harness.oci import HOST, MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.tools import require_tool

pytestmark = pytest.mark.integration

ALICE = ("alice", "pass phrase")


@pytest.fixture
def server_files(tmp_path: Path) -> ServerFiles:
    return TestCA.generate().issue_server(tmp_path / "tls")


@pytest.fixture
def mirror(start_mirror: MirrorFactory, server_files: ServerFiles, tmp_path: Path) -> Mirror:
    htpasswd = require_tool("htpasswd", "apache2-utils")
    users = tmp_path / "htpasswd"
    subprocess.run([htpasswd, "-cbB", str(users), *ALICE], check=True, capture_output=True)
    return start_mirror(options=["--htpasswd", str(users)], tls=server_files)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_hosts_toml_with_the_ca_and_an_authorization_header(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    mirror: Mirror,
    server_files: ServerFiles,
    containerd: Containerd,
    unique: Callable[[str], str],
) -> None:
    image = publisher.image(f"org/{unique('ctr')}", "v1", {HOST: (2 * MiB, 1 * MiB)})
    # The upstream's own name: containerd sends ?ns=<it> and the mirror,
    # mirroring exactly that registry, accepts it.
    reference = f"{upstream.host}/{image.reference}"
    anonymous = containerd.write_hosts(upstream.host, mirror.url, ca=server_files.ca_certificate)
    failed = containerd.pull(reference, anonymous, check=False)

    hosts = containerd.write_hosts(
        upstream.host,
        mirror.url,
        ca=server_files.ca_certificate,
        headers={"authorization": basic(*ALICE)},
    )
    containerd.pull(reference, hosts)

    assert failed.returncode != 0
    assert "401" in failed.stderr or "unauthorized" in failed.stderr.lower(), failed.stderr
    assert containerd.image_digest(reference) == image.digest
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob


def test_ctr_user_credentials_answer_the_mirrors_challenge(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    mirror: Mirror,
    server_files: ServerFiles,
    containerd: Containerd,
    unique: Callable[[str], str],
) -> None:
    image = publisher.image(f"org/{unique('ctruser')}", "v1", {HOST: (1 * MiB,)})
    reference = f"{upstream.host}/{image.reference}"
    hosts = containerd.write_hosts(upstream.host, mirror.url, ca=server_files.ca_certificate)

    wrong = containerd.pull(reference, hosts, "--user", f"{ALICE[0]}:wrong", check=False)
    containerd.pull(reference, hosts, "--user", ":".join(ALICE))

    assert wrong.returncode != 0
    assert containerd.image_digest(reference) == image.digest


def test_a_mirror_whose_certificate_the_ca_did_not_sign_is_refused(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    mirror: Mirror,
    containerd: Containerd,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    image = publisher.image(f"org/{unique('ctrca')}", "v1", {HOST: (1 * MiB,)})
    other_ca = TestCA.generate().write_bundle(tmp_path / "other-ca.pem")
    hosts = containerd.write_hosts(
        upstream.host, mirror.url, ca=other_ca, headers={"authorization": basic(*ALICE)}
    )
    mark = upstream.mark()

    failed = containerd.pull(f"{upstream.host}/{image.reference}", hosts, check=False)

    assert failed.returncode != 0
    assert "certificate signed by unknown authority" in failed.stderr, failed.stderr
    assert [r for r in upstream.requests(mark) if image.name in r.path] == []
