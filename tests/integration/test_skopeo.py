"""skopeo through the mirror: every platform of an image, byte for byte, and
a warm mirror that no longer needs the upstream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .harness.mirror import Mirror
from .harness.oci import FOREIGN, HOST, MiB
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry
from .harness.skopeo import Skopeo
from .harness.tokens import TokenIssuer
from .harness.verify import assert_dir_copy

pytestmark = pytest.mark.integration


def test_multi_platform_copy_through_the_mirror(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    issuer: TokenIssuer,
    mirror: Mirror,
    skopeo: Skopeo,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    image = publisher.image(
        f"org/{unique('multi')}",
        "v1",
        {HOST: (2 * MiB, 5 * MiB, 1 * MiB), FOREIGN: (3 * MiB, 1 * MiB)},
    )
    scope = f"repository:{image.name}:pull"
    tokens_before = issuer.count(scope=scope)

    skopeo.pull_to_dir(mirror.host, image.reference, tmp_path / "cold")

    assert_dir_copy(tmp_path / "cold", image)
    for blob in image.blobs():
        assert upstream.blob_fetches(image.name, blob.digest) == 1, blob
    assert issuer.count(scope=scope) - tokens_before == 1, "the mirror reuses its token"

    mark = upstream.mark()
    skopeo.pull_to_dir(mirror.host, image.reference, tmp_path / "warm")

    assert_dir_copy(tmp_path / "warm", image)
    asked = upstream.requests(mark)
    assert [r for r in asked if r.method == "GET" and "/blobs/" in r.path] == []
    # Within --tag-ttl the tag's digest is fresh, and everything else is
    # immutable: a warm pull needs nothing from upstream at all.
    assert asked == []
