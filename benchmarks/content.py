"""What the upstream holds for the benchmark, generated and pushed once per
run: raw blobs for the blob workloads, a ~200 MiB image for the cold pull and
a small image for the tag workloads.

Blob bytes are random and are not kept in memory after the push: only their
names, digests and sizes.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from attrs import frozen

from tests.integration.harness.oci import HOST, Image
from tests.integration.harness.publish import Publisher
from tests.integration.harness.registry import UpstreamRegistry
from tests.integration.harness.skopeo import Skopeo

from .params import Params


@frozen
class BlobRef:
    """A blob on the upstream: where, and what it must hash to."""

    name: str
    digest: str
    size: int

    @property
    def path(self) -> str:
        return f"/v2/{self.name}/blobs/{self.digest}"


@frozen
class Content:
    # Workloads 1 and 5 share these; workload 1 reads the first few warm.
    big_blobs: tuple[BlobRef, ...]
    herd_blob: BlobRef
    pull_image: Image
    small_image: Image


def _blob(publisher: Publisher, name: str, size: int) -> BlobRef:
    raw = publisher.blob(name, size)
    return BlobRef(raw.name, raw.digest, len(raw.data))


def seed(upstream: UpstreamRegistry, skopeo: Skopeo, work_dir: Path, params: Params) -> Content:
    """Push everything the workloads read; names are unique to this run."""
    run = secrets.token_hex(3)
    publisher = Publisher(upstream, skopeo, work_dir)
    count = max(params.memory_clients, params.warm_parallel)
    big = tuple(_blob(publisher, f"bench/big-{run}", params.big_blob_size) for _ in range(count))
    herd = _blob(publisher, f"bench/herd-{run}", params.herd_blob_size)
    pull = publisher.image(
        f"bench/pull-{run}", "v1", {HOST: (params.pull_layer_size,) * params.pull_layers}
    )
    small = publisher.image(f"bench/small-{run}", "latest", {HOST: (4096, 8192)})
    return Content(big, herd, pull, small)
