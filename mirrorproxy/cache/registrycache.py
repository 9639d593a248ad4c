"""One upstream registry's caches: its manifests, blobs and tag lists, the
client that fills them, and the bytes they have served.  The API routes each
request to one of these (`api.routing`)."""

from __future__ import annotations

from collections import Counter

from attrs import define, field

from ..common.runner import Runner
from ..registry.names import docker_hub_name
from ..storage import ICacheStore
from ..upstream.client import UpstreamClient
from ..upstream.settings import UpstreamRegistry
from .blobs import BlobCache
from .manifests import ManifestCache
from .taglists import TagListCache


@define(eq=False)
class RegistryCache:
    registry: UpstreamRegistry
    upstream: UpstreamClient
    manifests: ManifestCache
    blobs: BlobCache
    tags: TagListCache
    run: Runner
    store: ICacheStore
    # Bytes sent to clients, by where they came from: "cache" or "upstream".
    served_bytes: Counter[str] = field(factory=Counter)

    def canonical_name(self, name: str) -> str:
        return docker_hub_name(name) if self.registry.is_docker_hub else name
