"""`twistd mirrorproxy`: command-line options and makeService.

Every option can also be set in the TOML file named by ``--config``, under
the same name; the command line wins over the file.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from .access import AccessSettings
from .config import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_TAG_TTL,
    DOCKER_HUB_URL,
    ConfigError,
    Settings,
    parse_networks,
)
from .configfile import read_config, settings_from
from .egress import proxy_settings, tls_policy
from .store import CacheDirError

# Options that take one value, by their command-line (and config-file) name.
_SINGLE = ("upstream", "cache-dir", "tag-ttl", "max-cache-size", "upstream-proxy",
           "upstream-ca", "htpasswd", "drain-timeout", "max-connections", "negative-ttl")
_REPEATED = ("listen", "allow", "metrics-listen", "upstream-redirect-allow")


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT]... [--upstream URL] [--cache-dir DIR] [--tag-ttl SECONDS] ..."
    longdesc = (
        "A Docker Hub pull-through cache. Point dockerd's registry-mirrors (or "
        "containerd's hosts.toml) at it. Upstream credentials come from the config "
        "file's [upstream-credentials] or from MIRRORPROXY_UPSTREAM_USERNAME and "
        "MIRRORPROXY_UPSTREAM_PASSWORD, never from the command line."
    )
    optParameters = [
        ["config", None, None, "TOML config file: any option below, plus credentials."],
        ["upstream", None, None, f"Upstream registry URL (http:// or https://). Default {DOCKER_HUB_URL}."],
        ["cache-dir", None, None, "Cache directory; created if missing. Default ./mirrorproxy-cache."],
        ["tag-ttl", None, None, f"Seconds a tag is served without asking upstream. Default {DEFAULT_TAG_TTL:g}."],
        ["max-cache-size", None, None, "Evict least recently used blobs beyond this size (e.g. 50G). Default: no limit."],
        ["upstream-proxy", None, None, "HTTP proxy for upstream (http://[user:pass@]host:port). Default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY."],
        ["upstream-ca", None, None, "Extra CA bundle (PEM) trusted for upstream and TLS-intercepting proxies."],
        ["htpasswd", None, None, "Require Basic credentials matching this htpasswd file (bcrypt: htpasswd -B)."],
        ["drain-timeout", None, None, f"Seconds in-flight responses may run on after SIGTERM. Default {DEFAULT_DRAIN_TIMEOUT:g}."],
        ["negative-ttl", None, None, "Seconds upstream's 404 for a name or tag is remembered (0: not at all). Default 30."],
        ["max-connections", None, None, "Client connections held at most (idle ones are closed to make room). Default: what the file descriptor limit allows."],
    ]
    optFlags = [
        ["upstream-insecure", None, "Do not verify upstream's TLS certificate (logged loudly; never the default)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        for name in _REPEATED:
            self[name] = []

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to listen on (repeatable), e.g. tcp:5000 or ssl:443:privateKey=KEY:certKey=CERT. Default tcp:5000."""
        self["listen"].append(endpoint)

    def opt_allow(self, network: str) -> None:
        """Accept clients from this network only (CIDR, IPv4 or IPv6; repeatable). Default: any."""
        self["allow"].append(network)

    def opt_upstream_redirect_allow(self, network: str) -> None:
        """An internal network (CIDR) upstream's redirects may lead to, besides its own host (repeatable). Default: none."""
        self["upstream-redirect-allow"].append(network)

    def opt_metrics_listen(self, endpoint: str) -> None:
        """Endpoint for /metrics, /healthz and /readyz (repeatable), e.g. tcp:9100:interface=127.0.0.1. Default: off."""
        self["metrics-listen"].append(endpoint)

    def postOptions(self) -> None:
        try:
            values = read_config(self["config"]) if self["config"] else {}
            given: dict[str, Any] = {name: self[name] for name in _SINGLE if self[name] is not None}
            given.update({name: self[name] for name in _REPEATED if self[name]})
            if self["upstream-insecure"]:
                given["upstream-insecure"] = True
            values.update(given)
            self["settings"] = settings = settings_from(values, os.environ)
            # Bad networks, proxies and CA bundles are usage errors now, not
            # surprises at start.
            self["access"] = AccessSettings.from_options(settings.htpasswd, settings.allow)
            parse_networks(settings.upstream_redirect_allow, "--upstream-redirect-allow")
            proxy_settings(settings.upstream_proxy, os.environ)
            tls_policy(ca_file=settings.upstream_ca, verify=not settings.upstream_insecure)
        except ConfigError as e:
            raise usage.UsageError(str(e))


def makeService(options: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    from .service import make_mirror_service

    settings: Settings = options["settings"]
    try:
        return make_mirror_service(settings, reactor)
    except (CacheDirError, ConfigError) as e:
        # A clear message and exit status, not a traceback, for the operator.
        sys.stderr.write(f"mirrorproxy: {e}\n")
        raise SystemExit(1)
