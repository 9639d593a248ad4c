"""Where an upstream registry is, what it is called, how to log in to it,
and how long to wait for it: settings the upstream client is built from."""

from __future__ import annotations

import os
import re
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


# A registry's name as clients give it (containerd's ``?ns=``, a reference's
# first component): a host name or address, with a port perhaps.
_NAMESPACE = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def looks_like_registry(component: str) -> bool:
    """Whether a reference's first component names a registry rather than a
    repository, as distribution/reference splits names: it has a dot or a
    port, or is ``localhost``."""
    return "." in component or ":" in component or component == "localhost"


def parse_namespace(text: str) -> str:
    """A registry's name, normalised (Docker Hub's aliases are docker.io);
    ConfigError if it cannot be one."""
    name = text.strip().lower()
    if not _NAMESPACE.fullmatch(name):
        raise ConfigError(f"{text!r} is not a registry name (a host, with a port perhaps)")
    return DOCKER_HUB_NAMESPACE if name.partition(":")[0] in _DOCKER_HUB_HOSTS and ":" not in name else name


@frozen
class UpstreamRegistry:
    """One upstream registry: where it is and what it is called.

    `namespace` is the name clients use for it (containerd's ``?ns=``, the
    first component of a reference) and `cache_key` the directory its content
    lives under in the cache; both come from the namespace, not the URL, so
    the URL can change (say, to a chained mirror) and the cache stays.  The
    URL may carry a path (an Artifactory or Nexus remote): the registry API is
    under it.
    """

    scheme: str
    netloc: str
    namespace: str
    path: str = ""

    @classmethod
    def from_url(cls, url: str, namespace: str | None = None) -> UpstreamRegistry:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"upstream must be an http:// or https:// URL, not {url!r}")
        if parts.query or parts.fragment:
            raise ConfigError(f"upstream URL must not have a query: {url!r}")
        if parts.username or parts.password:
            raise ConfigError(
                "upstream credentials go in the config file or the environment, not in the URL"
            )
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"bad port in upstream URL {url!r}") from None
        netloc = parts.netloc.lower()
        # The API lives under <path>/v2/; a URL given with its /v2 means the same.
        path = parts.path.rstrip("/").removesuffix("/v2").rstrip("/")
        if namespace is None:
            namespace = DOCKER_HUB_NAMESPACE if parts.hostname in _DOCKER_HUB_HOSTS else netloc
        return cls(parts.scheme, netloc, parse_namespace(namespace), path)

    @classmethod
    def from_entry(cls, entry: str) -> UpstreamRegistry:
        """``[NAMESPACE=]URL``, as ``--upstream`` takes it."""
        namespace, sep, url = entry.partition("=")
        if sep and "://" not in namespace:
            return cls.from_url(url.strip(), namespace)
        return cls.from_url(entry.strip())

    @property
    def url(self) -> str:
        """Where the registry API is: requests go to ``<url>/v2/...``."""
        return f"{self.scheme}://{self.netloc}{self.path}"

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
