"""One upstream's mirror (manifests, blobs, tag lists) and the routing to it.

Requests are routed by containerd's ``?ns=`` (and, later, by path prefix) to
the `Mirror` of one upstream registry; today there is one.
"""

from __future__ import annotations

from collections import Counter

from attrs import define, field

from .blobs import BlobCache
from .config import UpstreamRegistry
from .errors import NAME_UNKNOWN, RegistryError
from .manifests import ManifestCache
from .names import docker_hub_name
from .store import FilesystemStore, Runner
from .tagslist import TagListCache
from .upstream import UpstreamClient


@define(eq=False)
class Mirror:
    registry: UpstreamRegistry
    upstream: UpstreamClient
    manifests: ManifestCache
    blobs: BlobCache
    tags: TagListCache
    run: Runner
    store: FilesystemStore
    # Bytes sent to clients, by where they came from: "cache" or "upstream".
    served_bytes: Counter[str] = field(factory=Counter)

    def canonical_name(self, name: str) -> str:
        return docker_hub_name(name) if self.registry.is_docker_hub else name


@define(eq=False)
class Router:
    _mirrors: list[Mirror]

    def route(self, namespace: str | None) -> Mirror:
        if namespace is None:
            return self._mirrors[0]
        for mirror in self._mirrors:
            if mirror.registry.namespace == namespace.lower():
                return mirror
        raise RegistryError(404, NAME_UNKNOWN, f"this mirror does not serve registry {namespace!r}")
