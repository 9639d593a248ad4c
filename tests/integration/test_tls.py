"""The mirror on a TLS listener (``--listen ssl:PORT:privateKey=...:certKey=...``)
with clients that verify its certificate against a CA of the test's own."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from ..testca import ServerFiles, TestCA
from .harness.mirror import Mirror, MirrorFactory
from .harness.oci import FOREIGN, HOST, MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.skopeo import Skopeo
from .harness.verify import assert_dir_copy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.generate()


@pytest.fixture
def server_files(ca: TestCA, tmp_path: Path) -> ServerFiles:
    return ca.issue_server(tmp_path / "tls")


@pytest.fixture
def tls_mirror(start_mirror: MirrorFactory, server_files: ServerFiles) -> Mirror:
    return start_mirror(tls=server_files)


def cert_dir_with(ca_certificate: Path, directory: Path) -> Path:
    """A directory as skopeo's ``--src-cert-dir`` wants it: the CA as ``ca.crt``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(ca_certificate.read_bytes())
    return directory


def test_skopeo_verifying_the_certificate_pulls_through_the_tls_listener(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    tls_mirror: Mirror,
    server_files: ServerFiles,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    image = publisher.image(
        f"org/{unique('tls')}", "v1", {HOST: (2 * MiB, 1 * MiB), FOREIGN: (1 * MiB,)}
    )
    certs = cert_dir_with(server_files.ca_certificate, tmp_path / "certs")

    skopeo.run(
        "copy",
        "--all",
        "--src-tls-verify=true",
        "--src-cert-dir",
        str(certs),
        "--src-no-creds",
        f"docker://{tls_mirror.host}/{image.reference}",
        f"dir:{tmp_path / 'out'}",
    )

    assert_dir_copy(tmp_path / "out", image)
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob


def test_a_client_that_does_not_trust_the_ca_refuses_the_mirror(
    publisher: Publisher,
    tls_mirror: Mirror,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    image = publisher.image(f"org/{unique('untrusted')}", "v1", {HOST: (1 * MiB,)})
    stranger = TestCA.generate()
    certs = cert_dir_with(stranger.write_bundle(tmp_path / "other-ca.pem"), tmp_path / "certs")

    with pytest.raises(RuntimeError, match="certificate signed by unknown authority"):
        skopeo.run(
            "copy",
            "--src-tls-verify=true",
            "--src-cert-dir",
            str(certs),
            "--src-no-creds",
            f"docker://{tls_mirror.host}/{image.reference}",
            f"dir:{tmp_path / 'out'}",
        )


def test_the_listener_speaks_only_tls_with_the_issued_certificate(
    tls_mirror: Mirror, server_files: ServerFiles
) -> None:
    status, headers, body = tls_mirror.get("/v2/")
    # The same port in plain text gets no registry answer.

    plain = http.client.HTTPConnection("127.0.0.1", tls_mirror.port, timeout=10)
    try:
        plain.request("GET", "/v2/")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.getresponse().read()
    finally:
        plain.close()
    served = ssl.get_server_certificate(("127.0.0.1", tls_mirror.port))

    assert (status, body) == (200, b"{}")
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    assert served.strip() == server_files.certificate.read_text().strip()
