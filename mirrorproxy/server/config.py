"""Settings, parsed and validated once, then frozen."""

from __future__ import annotations

from attrs import field, frozen, validators

from ..upstream.settings import (
    DOCKER_HUB_NAMESPACE,
    DOCKER_HUB_URL,
    Credentials,
    Timeouts,
    UpstreamRegistry,
)
from .clustersettings import ClusterSettings

DEFAULT_LISTEN = "tcp:5000"
DEFAULT_CACHE_DIR = "mirrorproxy-cache"
DEFAULT_TAG_TTL = 300.0
# How long in-flight responses may run on after SIGTERM.
DEFAULT_DRAIN_TIMEOUT = 30.0


@frozen
class RegistrySettings:
    """One upstream registry the mirror serves, and how to reach it."""

    upstream: UpstreamRegistry
    credentials: Credentials | None = None
    tag_ttl: float = field(default=DEFAULT_TAG_TTL, validator=validators.ge(0))
    upstream_proxy: str | None = None
    upstream_ca: str | None = None
    upstream_insecure: bool = False
    upstream_redirect_allow: tuple[str, ...] = ()

    @property
    def namespace(self) -> str:
        return self.upstream.namespace


@frozen
class Settings:
    """Everything the service is built from.

    The registries served are `registries`; without any, the one upstream the
    single-registry fields describe (`upstream`, `credentials`, `tag_ttl`, the
    `upstream_*` ones), which are also every registry's defaults.
    """

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    upstream: UpstreamRegistry = field(factory=lambda: UpstreamRegistry.from_url(DOCKER_HUB_URL))
    cache_dir: str = DEFAULT_CACHE_DIR
    tag_ttl: float = field(default=DEFAULT_TAG_TTL, validator=validators.ge(0))
    credentials: Credentials | None = None
    timeouts: Timeouts = field(factory=Timeouts)
    # Evict least recently used blobs beyond this many bytes; None: no limit.
    max_cache_size: int | None = None
    # Endpoints for /metrics, /healthz and /readyz; none by default.
    metrics_listen: tuple[str, ...] = ()
    # Egress: an HTTP proxy for upstream (else HTTPS_PROXY etc.), an extra CA
    # bundle, or (explicitly, logged) no TLS verification at all.
    upstream_proxy: str | None = None
    upstream_ca: str | None = None
    upstream_insecure: bool = False
    # Internal networks (CIDRs) upstream's redirects may lead to, besides the
    # upstream's own host.
    upstream_redirect_allow: tuple[str, ...] = ()
    # Client access: an htpasswd file (bcrypt), networks allowed in.
    htpasswd: str | None = None
    allow: tuple[str, ...] = ()
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    # How long upstream's 404 for a name or tag is remembered (0: not at all).
    negative_ttl: float = field(default=30.0, validator=validators.ge(0))
    # Client connections held at most; None: what the descriptor limit
    # leaves room for.
    max_connections: int | None = None
    registries: tuple[RegistrySettings, ...] = ()
    # Host names clients reach the mirror by -> the registry they mean.
    hosts: tuple[tuple[str, str], ...] = ()
    # Shared storage and coordination: one node of several, or (default)
    # a mirror on its own.
    cluster: ClusterSettings = field(factory=ClusterSettings)

    def served(self) -> tuple[RegistrySettings, ...]:
        """The registries the mirror serves, in the order given."""
        if self.registries:
            return self.registries
        return (
            RegistrySettings(
                self.upstream,
                self.credentials,
                self.tag_ttl,
                self.upstream_proxy,
                self.upstream_ca,
                self.upstream_insecure,
                self.upstream_redirect_allow,
            ),
        )

    def default_registry(self) -> RegistrySettings | None:
        """The registry for requests that name none: the first docker.io
        entry, or the only entry; None when several registries and none is
        Docker Hub (requests must then name theirs)."""
        served = self.served()
        for registry in served:
            if registry.namespace == DOCKER_HUB_NAMESPACE:
                return registry
        return served[0] if len(served) == 1 else None
