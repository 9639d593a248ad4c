"""dockerd with ``--registry-mirror`` pulling Docker Hub names through the
mirror: the image a user gets is the one pushed upstream, and every layer
crossed the upstream link once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .harness.dockerd import Dockerd
from .harness.oci import FOREIGN, HOST, MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry

pytestmark = pytest.mark.integration


def test_pull_official_single_platform_image(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    dockerd: Dockerd,
    unique: Callable[[str], str],
) -> None:
    name = unique("single")
    # An official image: pulled as NAME, asked of the mirror as library/NAME.
    image = publisher.image(f"library/{name}", "v1", {HOST: (1 * MiB, 3 * MiB, 8 * MiB, 2 * MiB)})

    dockerd.pull(f"{name}:v1")

    assert dockerd.repo_digests(f"{name}:v1") == [f"{name}@{image.digest}"]
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob


def test_pull_multi_platform_image(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    dockerd: Dockerd,
    unique: Callable[[str], str],
) -> None:
    image = publisher.image(
        f"org/{unique('multi')}",
        "v2",
        {HOST: (4 * MiB, 1 * MiB), FOREIGN: (2 * MiB, 1 * MiB)},
    )

    dockerd.pull(image.reference)

    # The tag's digest is the index's; dockerd unpacks its own platform.
    assert dockerd.repo_digests(image.reference) == [f"{image.name}@{image.digest}"]
    for blob in image.for_platform(HOST).blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob
    for blob in image.for_platform(FOREIGN).blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 0, blob
