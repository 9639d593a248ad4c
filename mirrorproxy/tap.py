"""`twistd mirrorproxy`: command-line options and makeService."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application import strports
from twisted.application.service import IService
from twisted.python import usage

from .access import AccessSettings
from .config import (
    DEFAULT_CACHE_DIR,
    DEFAULT_LISTEN,
    DEFAULT_TAG_TTL,
    DOCKER_HUB_URL,
    ConfigError,
    Credentials,
    Settings,
    UpstreamRegistry,
)
from .store import CacheDirError


class Options(usage.Options):
    synopsis = "[--listen ENDPOINT]... [--upstream URL] [--cache-dir DIR] [--tag-ttl SECONDS]"
    longdesc = (
        "A Docker Hub pull-through cache. Point dockerd's registry-mirrors (or "
        "containerd's hosts.toml) at it. Upstream credentials, if any, come from "
        "MIRRORPROXY_UPSTREAM_USERNAME and MIRRORPROXY_UPSTREAM_PASSWORD."
    )
    optParameters = [
        ["upstream", None, DOCKER_HUB_URL, "Upstream registry URL (http:// or https://)."],
        ["cache-dir", None, DEFAULT_CACHE_DIR, "Cache directory; created if missing."],
        ["tag-ttl", None, str(int(DEFAULT_TAG_TTL)), "Seconds a tag is served without asking upstream."],
        ["htpasswd", None, None, "Require Basic credentials matching this htpasswd file (bcrypt: htpasswd -B)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to listen on (repeatable), e.g. tcp:5000 or ssl:443:privateKey=KEY:certKey=CERT. Default tcp:5000."""
        self["listen"].append(endpoint)

    def opt_allow(self, network: str) -> None:
        """Accept clients from this network only (CIDR, IPv4 or IPv6; repeatable). Default: any."""
        self["allow"].append(network)

    def postOptions(self) -> None:
        try:
            ttl = float(self["tag-ttl"])
        except ValueError:
            raise usage.UsageError(f"--tag-ttl must be a number of seconds, not {self['tag-ttl']!r}")
        if not ttl >= 0:
            raise usage.UsageError("--tag-ttl must not be negative")
        try:
            self["settings"] = Settings(
                listen=tuple(self["listen"]) or (DEFAULT_LISTEN,),
                upstream=UpstreamRegistry.from_url(self["upstream"]),
                cache_dir=self["cache-dir"],
                tag_ttl=ttl,
                credentials=Credentials.from_environment(os.environ),
            )
        except ConfigError as e:
            raise usage.UsageError(str(e))
        try:
            self["access"] = AccessSettings.from_options(self["htpasswd"], self["allow"])
        except ConfigError as e:
            raise usage.UsageError(str(e))


def makeService(options: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    from .service import make_mirror_service

    settings: Settings = options["settings"]
    try:
        top, site = make_mirror_service(settings, reactor, options.get("access"))
    except (CacheDirError, ConfigError) as e:
        # A clear message and exit status, not a traceback, for the operator.
        sys.stderr.write(f"mirrorproxy: {e}\n")
        raise SystemExit(1)
    for endpoint in settings.listen:
        strports.service(endpoint, site, reactor=reactor).setServiceParent(top)
    return top
