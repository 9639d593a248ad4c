"""The TOML configuration file: everything the command line says, plus secrets.

Keys are the command-line option names (``cache-dir``, ``tag-ttl``, ...);
upstream credentials live in an ``[upstream-credentials]`` table and
timeouts in ``[timeouts]``.  Unknown keys and values of the wrong type are
errors at start, named by their key.  A file that holds a secret must not be
readable by everyone: the mirror refuses to start rather than run with a
leaked password.
"""

from __future__ import annotations

import os
import stat
import tomllib
from typing import Any

from ..cache.eviction import parse_size
from ..cache.negative import DEFAULT_NEGATIVE_TTL
from ..common.errors import ConfigError
from ..upstream.settings import DOCKER_HUB_URL, Credentials, Timeouts, UpstreamRegistry
from .clustersettings import cluster_settings_from
from .config import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_LISTEN,
    DEFAULT_TAG_TTL,
    RegistrySettings,
    Settings,
)
from .configtypes import Check, is_bool, is_number, is_str, is_str_list
from .registries import check_tables, holds_secret, proxy_has_password, registries_from

# A smaller limit is a forgotten unit, not a cache: it would evict every
# blob it fills.
MIN_CACHE_SIZE = 1 << 20


TOP_LEVEL: dict[str, tuple[Check, str]] = {
    "listen": (is_str_list, "a list of endpoint strings"),
    "upstream": (lambda v: is_str(v) or is_str_list(v), "a URL, or a list of [NAMESPACE=]URL"),
    "host": (is_str_list, "a list of NAME=REGISTRY"),
    "cache-dir": (is_str, "a directory path"),
    "tag-ttl": (is_number, "a number of seconds"),
    "upstream-proxy": (is_str, "a proxy URL"),
    "upstream-ca": (is_str, "a PEM file path"),
    "upstream-insecure": (is_bool, "true or false"),
    "htpasswd": (is_str, "an htpasswd file path"),
    "allow": (is_str_list, "a list of CIDR networks"),
    "upstream-redirect-allow": (is_str_list, "a list of CIDR networks"),
    "max-cache-size": (lambda v: is_str(v) or (is_number(v) and v > 0), "a size such as \"50G\""),
    "metrics-listen": (is_str_list, "a list of endpoint strings"),
    "drain-timeout": (is_number, "a number of seconds"),
    "negative-ttl": (is_number, "a number of seconds"),
    "max-connections": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a positive whole number"),
    "log-format": (is_str, "text, json or journal"),
    "log-level": (is_str, "debug, info, warn, error or critical"),
    "storage": (is_str, "an s3://BUCKET/PREFIX URL"),
    "s3-endpoint": (is_str, "an http(s) URL"),
    "s3-region": (is_str, "a region name"),
    "redis": (is_str, "a redis://HOST:PORT/DB URL"),
    "advertise": (is_str, "an http(s) URL"),
    "blob-redirect": (is_str, "off, presigned or a CDN's base URL"),
}
TABLES: dict[str, dict[str, tuple[Check, str]]] = {
    "s3-credentials": {
        "access-key-id": (is_str, "an access key id"),
        "secret-access-key": (is_str, "a secret access key"),
    },
    "upstream-credentials": {
        "username": (is_str, "a user name"),
        "password": (is_str, "a password"),
    },
    "timeouts": {
        "connect": (is_number, "a number of seconds"),
        "headers": (is_number, "a number of seconds"),
        "body-silence": (is_number, "a number of seconds"),
    },
}
SECRET_TABLES = frozenset({"upstream-credentials", "s3-credentials"})


def read_config(path: str) -> dict[str, Any]:
    """The file's settings, checked; ConfigError says what is wrong where."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for key, value in document.items():
        if key == "registries":
            check_tables(path, value)
        elif key in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            for inner, inner_value in value.items():
                _check(path, f"{key}.{inner}", TABLES[key].get(inner), inner_value)
        else:
            _check(path, key, TOP_LEVEL.get(key), value)
    if _holds_secret(document) and mode & stat.S_IROTH:
        raise ConfigError(
            f"config file {path} holds credentials and is readable by everyone; "
            f"chmod o-r {path}"
        )
    return document


def _check(path: str, key: str, rule: tuple[Check, str] | None, value: Any) -> None:
    if rule is None:
        raise ConfigError(f"{path}: unknown setting {key!r}")
    check, expected = rule
    if not check(value):
        raise ConfigError(f"{path}: {key} must be {expected}, not {value!r}")


def _holds_secret(document: dict[str, Any]) -> bool:
    if any(table in document for table in SECRET_TABLES):
        return True
    return (
        proxy_has_password(document.get("upstream-proxy", ""))
        or proxy_has_password(document.get("redis", ""))
        or holds_secret(document.get("registries"))
    )


def settings_from(values: dict[str, Any], environ: Any) -> Settings:
    """Settings from the merged file and command-line values (command line
    already laid over the file), defaults for the rest, secrets from the
    environment over the file's."""
    credentials = Credentials.from_environment(environ)
    if credentials is None and "upstream-credentials" in values:
        table = values["upstream-credentials"]
        if not table.get("username") or not table.get("password"):
            raise ConfigError("[upstream-credentials] needs both username and password")
        credentials = Credentials(table["username"], table["password"])
    timeouts = values.get("timeouts", {})
    tag_ttl = _seconds(values, "tag-ttl", DEFAULT_TAG_TTL)
    max_size = values.get("max-cache-size")
    try:
        max_cache_size = parse_size(str(max_size)) if max_size is not None else None
    except ValueError as e:
        raise ConfigError(f"max-cache-size: {e}") from None
    if max_cache_size is not None and max_cache_size < MIN_CACHE_SIZE:
        raise ConfigError(
            f"max-cache-size {max_size!r} is below 1 MiB (bytes, unless a unit is given: 50G, 512M)"
        )
    try:
        timeout_values = Timeouts(
            connect=float(timeouts.get("connect", Timeouts().connect)),
            headers=float(timeouts.get("headers", Timeouts().headers)),
            body_silence=float(timeouts.get("body-silence", Timeouts().body_silence)),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"timeouts: {e}") from None
    defaults = RegistrySettings(
        UpstreamRegistry.from_url(DOCKER_HUB_URL),
        None,
        tag_ttl,
        values.get("upstream-proxy"),
        values.get("upstream-ca"),
        bool(values.get("upstream-insecure", False)),
        tuple(values.get("upstream-redirect-allow") or ()),
    )
    registries, hosts = registries_from(values, defaults, credentials)
    # The single-registry fields: the default registry's (or the first's).
    default = Settings(registries=registries).default_registry() or registries[0]
    return Settings(
        listen=tuple(values.get("listen") or (DEFAULT_LISTEN,)),
        upstream=default.upstream,
        cache_dir=values.get("cache-dir", DEFAULT_CACHE_DIR),
        tag_ttl=tag_ttl,
        credentials=default.credentials,
        timeouts=timeout_values,
        max_cache_size=max_cache_size,
        metrics_listen=tuple(values.get("metrics-listen") or ()),
        upstream_proxy=values.get("upstream-proxy"),
        upstream_ca=values.get("upstream-ca"),
        upstream_insecure=bool(values.get("upstream-insecure", False)),
        htpasswd=values.get("htpasswd"),
        allow=tuple(values.get("allow") or ()),
        upstream_redirect_allow=tuple(values.get("upstream-redirect-allow") or ()),
        drain_timeout=_seconds(values, "drain-timeout", DEFAULT_DRAIN_TIMEOUT),
        max_connections=_count(values, "max-connections"),
        negative_ttl=_seconds(values, "negative-ttl", DEFAULT_NEGATIVE_TTL),
        registries=registries,
        hosts=hosts,
        cluster=cluster_settings_from(values),
    )


def _seconds(values: dict[str, Any], key: str, default: float) -> float:
    """A duration option: a number of seconds, not negative; ConfigError
    naming the option otherwise (a command-line value arrives as text)."""
    value = values.get(key, default)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number of seconds, not {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{key} must be a number of seconds, not {value!r}")
    return seconds


def _count(values: dict[str, Any], key: str) -> int | None:
    """A positive whole number option, or None when not given."""
    value = values.get(key)
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isascii() or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{key} must be a positive whole number, not {value!r}")
    return int(text)
