"""Settings, parsed and validated once, then frozen."""

from __future__ import annotations

from attrs import field, frozen, validators

from ..upstream.settings import DOCKER_HUB_URL, Credentials, Timeouts, UpstreamRegistry

DEFAULT_LISTEN = "tcp:5000"
DEFAULT_CACHE_DIR = "mirrorproxy-cache"
DEFAULT_TAG_TTL = 300.0
# How long in-flight responses may run on after SIGTERM.
DEFAULT_DRAIN_TIMEOUT = 30.0


@frozen
class Settings:
    """Everything the service is built from."""

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
