"""Where an upstream registry is, what it is called, how to log in to it,
and how long to wait for it: settings the upstream client is built from."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from attrs import field, frozen

from ..common.errors import ConfigError

DOCKER_HUB_URL = "https://registry-1.docker.io"
DOCKER_HUB_NAMESPACE = "docker.io"
# Hosts that mean Docker Hub, whatever the URL says.
_DOCKER_HUB_HOSTS = frozenset(
    {"registry-1.docker.io", "index.docker.io", "docker.io", "registry.hub.docker.com"}
)


@frozen
class Credentials:
    """Upstream account; kept out of reprs so it never reaches a log."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | os._Environ[str]) -> Credentials | None:
        username = environ.get("MIRRORPROXY_UPSTREAM_USERNAME")
        password = environ.get("MIRRORPROXY_UPSTREAM_PASSWORD")
        if not username and not password:
            return None
        if not username or not password:
            raise ConfigError(
                "set both MIRRORPROXY_UPSTREAM_USERNAME and MIRRORPROXY_UPSTREAM_PASSWORD, or neither"
            )
        return cls(username, password)


@frozen
class UpstreamRegistry:
    """One upstream registry: where it is and what it is called.

    `namespace` is the name clients use for it (containerd's ``?ns=``) and
    `cache_key` the directory its content lives under in the cache, so that
    several upstreams can share one cache.
    """

    scheme: str
    netloc: str
    namespace: str

    @classmethod
    def from_url(cls, url: str) -> UpstreamRegistry:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"upstream must be an http:// or https:// URL, not {url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"upstream URL must not have a path or query: {url!r}")
        if parts.username or parts.password:
            raise ConfigError(
                "upstream credentials go in the environment "
                "(MIRRORPROXY_UPSTREAM_USERNAME/PASSWORD), not in the URL"
            )
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"bad port in upstream URL {url!r}") from None
        netloc = parts.netloc.lower()
        if parts.hostname in _DOCKER_HUB_HOSTS:
            namespace = DOCKER_HUB_NAMESPACE
        else:
            namespace = netloc
        return cls(parts.scheme, netloc, namespace)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def is_docker_hub(self) -> bool:
        return self.namespace == DOCKER_HUB_NAMESPACE

    @property
    def cache_key(self) -> str:
        # ':' is legal on Linux but not everywhere a cache may be copied to.
        return self.namespace.replace(":", "_").replace("[", "").replace("]", "")


def _positive(instance: object, attribute: object, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name} must be positive, not {value}")  # type: ignore[attr-defined]


@frozen
class Timeouts:
    """Upstream timeouts, in seconds."""

    connect: float = field(default=10.0, validator=_positive)
    # Until the response headers arrive.
    headers: float = field(default=30.0, validator=_positive)
    # The longest silence tolerated in the middle of a body.
    body_silence: float = field(default=60.0, validator=_positive)
