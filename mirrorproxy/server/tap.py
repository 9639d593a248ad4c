"""`twistd mirrorproxy`: command-line options and makeService.

Every option can also be set in the TOML file named by ``--config``, under
the same name; the command line wins over the file.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from ..api.guard import AccessSettings
from ..common.errors import ConfigError
from ..common.networks import parse_networks
from ..storage.values import CacheDirError
from ..upstream.egress import proxy_settings, tls_policy
from .config import DEFAULT_DRAIN_TIMEOUT, DEFAULT_TAG_TTL, Settings
from .configfile import TOP_LEVEL, read_config, settings_from
from .logs import (
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    LOG_FORMATS,
    LOG_LEVELS,
    WithLogObserver,
    destination_problem,
    log_observer,
)

# Options that take one value, by their command-line (and config-file) name.
_SINGLE = ("cache-dir", "tag-ttl", "max-cache-size", "upstream-proxy",
           "upstream-ca", "htpasswd", "drain-timeout", "max-connections", "negative-ttl",
           "log-format", "log-level", "storage", "s3-endpoint", "s3-region", "redis", "advertise",
           "blob-redirect")
_REPEATED = ("listen", "allow", "metrics-listen", "upstream-redirect-allow", "upstream", "host")
# Options whose values are server endpoint strings, checked before start.
_ENDPOINTS = ("listen", "metrics-listen")


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT]... [--upstream [NAMESPACE=]URL]... [--cache-dir DIR] ..."
    longdesc = (
        "A Docker Hub pull-through cache. Point dockerd's registry-mirrors (or "
        "containerd's hosts.toml) at it. Upstream credentials come from the config "
        "file's [upstream-credentials] or from MIRRORPROXY_UPSTREAM_USERNAME and "
        "MIRRORPROXY_UPSTREAM_PASSWORD, never from the command line."
    )
    optParameters = [
        ["config", None, None, "TOML config file: any option below, plus credentials."],
        ["cache-dir", None, None, "Cache directory; created if missing. Default ./mirrorproxy-cache."],
        ["tag-ttl", None, None, f"Seconds a tag is served without asking upstream. Default {DEFAULT_TAG_TTL:g}."],
        ["max-cache-size", None, None, "Evict least recently used blobs beyond this size (e.g. 50G). Default: no limit."],
        ["upstream-proxy", None, None, "HTTP proxy for upstream (http://[user:pass@]host:port). Default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY."],
        ["upstream-ca", None, None, "Extra CA bundle (PEM) trusted for upstream and TLS-intercepting proxies."],
        ["htpasswd", None, None, "Require Basic credentials matching this htpasswd file (bcrypt: htpasswd -B)."],
        ["drain-timeout", None, None, f"Seconds in-flight responses may run on after SIGTERM. Default {DEFAULT_DRAIN_TIMEOUT:g}."],
        ["negative-ttl", None, None, "Seconds upstream's 404 for a name or tag is remembered (0: not at all). Default 30."],
        ["max-connections", None, None, "Client connections held at most (idle ones are closed to make room). Default: what the file descriptor limit allows."],
        ["log-format", None, None, "text (twistd's lines), json (one object a line on stdout, for containers) or journal (json after a syslog priority, for systemd). Default text."],
        ["log-level", None, None, "Leave out events below this level: debug, info, warn, error or critical. Default info."],
        ["storage", None, None, "Share the cache with other nodes in an S3 bucket: s3://BUCKET/PREFIX (the cache dir becomes a first tier). Keys the AWS way (AWS_ACCESS_KEY_ID..., AWS_PROFILE) or the config file's [s3-credentials]. Default: the cache dir alone."],
        ["s3-endpoint", None, None, "The S3-compatible server's URL (Ceph RGW, SeaweedFS, MinIO, R2). Default: AWS."],
        ["s3-region", None, None, "The region requests to the bucket are signed for. Default us-east-1."],
        ["redis", None, None, "Coordinate with the other nodes through this Redis: redis://HOST:PORT/DB (a password only in the config file). Needs --storage and --advertise."],
        ["advertise", None, None, "The URL other nodes reach this one by, e.g. http://10.0.0.5:5000."],
        ["blob-redirect", None, None, "Cached blob GETs: off (served by this node), presigned (a 307 to a presigned URL on the bucket) or a CDN's base URL in front of the bucket. Default off."],
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

    def opt_upstream(self, entry: str) -> None:
        """A registry to mirror: [NAMESPACE=]URL, e.g. ghcr.io=https://ghcr.io or docker.io=https://artifactory.example/api/docker/hub (repeatable). Default https://registry-1.docker.io."""
        self["upstream"].append(entry)

    def opt_host(self, entry: str) -> None:
        """NAME=REGISTRY: requests to the mirror by this host name are for that registry (repeatable)."""
        self["host"].append(entry)

    def opt_upstream_redirect_allow(self, network: str) -> None:
        """An internal network (CIDR) upstream's redirects may lead to, besides its own host (repeatable). Default: none."""
        self["upstream-redirect-allow"].append(network)

    def opt_metrics_listen(self, endpoint: str) -> None:
        """Endpoint for /metrics, /healthz and /readyz (repeatable), e.g. tcp:9100:interface=127.0.0.1. Default: off."""
        self["metrics-listen"].append(endpoint)

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            # Under twistd (our parent), whose handler would print its
            # whole usage before the error: the error alone.
            usage_exit(e)

    def postOptions(self) -> None:
        try:
            values = read_config(self["config"]) if self["config"] else {}
            given: dict[str, Any] = {
                name: _as_in_config_file(name, self[name]) for name in _SINGLE if self[name] is not None
            }
            given.update({name: self[name] for name in _REPEATED if self[name]})
            if self["upstream-insecure"]:
                given["upstream-insecure"] = True
            if "@" in str(given.get("redis", "")):
                raise ConfigError("redis: a password goes in the config file, not on the command line (where ps shows it)")
            values.update(given)
            self["settings"] = settings = settings_from(values, os.environ)
            for name in _ENDPOINTS:
                for endpoint in values.get(name, ()):
                    _check_endpoint(name, endpoint)
            self["log-format"] = _one_of("log-format", values.get("log-format", DEFAULT_LOG_FORMAT), LOG_FORMATS)
            self["log-level"] = _one_of("log-level", values.get("log-level", DEFAULT_LOG_LEVEL), LOG_LEVELS)
            problem = destination_problem(self["log-format"], self.parent)
            if problem:
                raise ConfigError(problem)
            # Bad networks, proxies and CA bundles are usage errors now, not
            # surprises at start.
            self["access"] = AccessSettings.from_options(settings.htpasswd, settings.allow)
            for registry in settings.served():
                parse_networks(registry.upstream_redirect_allow, "--upstream-redirect-allow")
                proxy_settings(registry.upstream_proxy, os.environ)
                tls_policy(ca_file=registry.upstream_ca, verify=not registry.upstream_insecure)
        except ConfigError as e:
            raise usage.UsageError(str(e))


def usage_exit(error: usage.UsageError) -> NoReturn:
    """A bad command line: one line on stderr, exit status 2."""
    sys.stderr.write(f"mirrorproxy: {error}\n")
    raise SystemExit(2)


def _as_in_config_file(name: str, text: str) -> Any:
    """A command-line value as the config file would hold it (a number for
    a number of seconds), so that one rule checks both."""
    rule = TOP_LEVEL.get(name)
    if rule is None:
        return text
    check, expected = rule
    for convert in (str, int, float):
        try:
            value = convert(text)
        except ValueError:
            continue
        if check(value):
            return value
    raise ConfigError(f"{name} must be {expected}, not {text!r}")


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}")
    return value


def _check_endpoint(name: str, description: str) -> None:
    """Parse a server endpoint string as the service will, without listening."""
    from twisted.internet import reactor

    try:
        serverFromString(reactor, description)
    except Exception as e:
        # Whatever the parser raises (unknown type, bad port, unreadable
        # key file...), the string is what the operator must fix.
        raise ConfigError(f"{name}: bad endpoint {description!r}: {e}") from None


def makeService(options: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor
    from .service import make_mirror_service

    settings: Settings = options["settings"]
    try:
        service = make_mirror_service(settings, reactor)
    except (CacheDirError, ConfigError) as e:
        # A clear message and exit status, not a traceback, for the operator.
        sys.stderr.write(f"mirrorproxy: {e}\n")
        raise SystemExit(1)
    observer = log_observer(options["log-format"], options["log-level"], options.parent)
    return service if observer is None else WithLogObserver(service, observer)
