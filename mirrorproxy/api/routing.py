"""Which registry a request is for, and the repository name within it.

In this order: containerd's ``?ns=<registry>``; a first path component that
names a registry the way the reference grammar splits names (it has a dot or
a port, or is ``localhost``), as in ``/v2/ghcr.io/owner/app/manifests/1``
for podman, skopeo and ``mirror.example/ghcr.io/owner/app`` references; the
host name the client reached the mirror by (``--host``); then the default
registry.  A registry the mirror does not serve is ``NAME_UNKNOWN`` naming
it, and nothing goes upstream.
"""

from __future__ import annotations

from attrs import define, field

from ..cache.registrycache import RegistryCache
from ..upstream.settings import looks_like_registry, parse_namespace
from .errors import NAME_INVALID, NAME_UNKNOWN, RegistryError


@define(eq=False)
class Router:
    _caches: list[RegistryCache]
    # The registry for requests that name none; None: they must name one.
    default: str | None = None
    # Host name the client used -> registry.
    _hosts: dict[str, str] = field(factory=dict)
    _by_namespace: dict[str, RegistryCache] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._by_namespace = {cache.registry.namespace: cache for cache in self._caches}

    @property
    def caches(self) -> list[RegistryCache]:
        return list(self._caches)

    def route(self, name: str, ns: str | None = None, host: str | None = None) -> tuple[RegistryCache, str]:
        """The cache a request for repository `name` is for, and the name
        within that registry."""
        if ns is not None:
            return self._named(ns), name
        first, sep, rest = name.partition("/")
        if sep and looks_like_registry(first):
            return self._named(first), rest
        if host is not None:
            namespace = self._hosts.get(host.lower().rstrip("."))
            if namespace is not None:
                return self._by_namespace[namespace], name
        if self.default is None:
            raise RegistryError(
                404,
                NAME_UNKNOWN,
                "this mirror serves several registries: name one (?ns=REGISTRY, or "
                "/v2/REGISTRY/NAME/...)",
            )
        return self._by_namespace[self.default], name

    def _named(self, text: str) -> RegistryCache:
        try:
            namespace = parse_namespace(text)
        except ValueError:
            raise RegistryError(400, NAME_INVALID, f"{text[:100]!r} is not a registry name") from None
        cache = self._by_namespace.get(namespace)
        if cache is None:
            raise RegistryError(404, NAME_UNKNOWN, f"this mirror does not serve registry {namespace!r}")
        return cache
