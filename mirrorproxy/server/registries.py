"""The registries a mirror serves, from its options and config file.

``--upstream [NAMESPACE=]URL`` (repeatable; the file's ``upstream``, a URL or
a list) names each registry's upstream; a ``[registries."NAMESPACE"]`` table
gives one its own ``url``, ``credentials``, ``tag-ttl`` and egress settings,
the top level's being every registry's defaults.  A registry's namespace is
what clients call it (``docker.io``, ``ghcr.io``): without one, it comes
from the URL's host.  ``--host NAME=NAMESPACE`` (repeatable) maps a host
name clients reach the mirror by to a registry.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve

from ..common.errors import ConfigError
from ..upstream.settings import (
    DOCKER_HUB_URL,
    Credentials,
    UpstreamRegistry,
    parse_namespace,
)
from .config import RegistrySettings, Settings
from .configtypes import Check, is_bool, is_number, is_str, is_str_list

# What a [registries."NAMESPACE"] table may hold: key -> (check, expected).
REGISTRY_KEYS: dict[str, tuple[Check, str]] = {
    "url": (is_str, "a URL"),
    "tag-ttl": (is_number, "a number of seconds"),
    "upstream-proxy": (is_str, "a proxy URL"),
    "upstream-ca": (is_str, "a PEM file path"),
    "upstream-insecure": (is_bool, "true or false"),
    "upstream-redirect-allow": (is_str_list, "a list of CIDR networks"),
}
CREDENTIAL_KEYS: dict[str, tuple[Check, str]] = {
    "username": (is_str, "a user name"),
    "password": (is_str, "a password"),
}


def check_tables(path: str, tables: Any) -> None:
    """ConfigError naming the key unless ``registries`` is tables of the
    known keys."""
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [registries] must hold a table per registry")
    for namespace, table in tables.items():
        where = f"registries.{namespace!r}"
        try:
            parse_namespace(namespace)
        except ConfigError as e:
            raise ConfigError(f"{path}: [{where}]: {e}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        for key, value in table.items():
            if key == "credentials":
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: [{where}.credentials] must be a table")
                for inner, inner_value in value.items():
                    _check(path, f"{where}.credentials.{inner}", CREDENTIAL_KEYS.get(inner), inner_value)
            else:
                _check(path, f"{where}.{key}", REGISTRY_KEYS.get(key), value)


def _check(path: str, key: str, rule: tuple[Check, str] | None, value: Any) -> None:
    if rule is None:
        raise ConfigError(f"{path}: unknown setting {key}")
    check, expected = rule
    if not check(value):
        raise ConfigError(f"{path}: {key} must be {expected}, not {value!r}")


def holds_secret(tables: Any) -> bool:
    """Whether the registries' tables hold a password."""
    if not isinstance(tables, dict):
        return False
    for table in tables.values():
        if not isinstance(table, dict):
            continue
        if "credentials" in table or proxy_has_password(table.get("upstream-proxy", "")):
            return True
    return False


def proxy_has_password(proxy: str) -> bool:
    # user:password@ in a proxy URL is a secret too.
    return "@" in proxy.partition("://")[2].partition("/")[0]


def registries_from(
    values: dict[str, Any], defaults: RegistrySettings, credentials: Credentials | None
) -> tuple[tuple[RegistrySettings, ...], tuple[tuple[str, str], ...]]:
    """The registries served, in order, and the host map.  `defaults` holds
    the top level's settings; `credentials` (the environment's, else the
    file's top level) go to the registry that requests naming none reach."""
    entries = values.get("upstream")
    if entries is None:
        entries = [] if values.get("registries") else [DOCKER_HUB_URL]
    upstreams = [entries] if isinstance(entries, str) else list(entries)
    served: dict[str, RegistrySettings] = {}
    for entry in upstreams:
        upstream = UpstreamRegistry.from_entry(entry)
        if upstream.namespace in served:
            raise ConfigError(f"--upstream: registry {upstream.namespace} is given twice")
        served[upstream.namespace] = evolve(defaults, upstream=upstream)
    for namespace_text, table in (values.get("registries") or {}).items():
        namespace = parse_namespace(namespace_text)
        known = served.get(namespace)
        if known is None:
            if "url" not in table:
                raise ConfigError(f"[registries.{namespace_text!r}] needs a url")
            known = evolve(defaults, upstream=UpstreamRegistry.from_url(table["url"], namespace))
        # Else the registry's `upstream` entry (or --upstream) names its URL,
        # which wins over the table's: the table still gives the rest.
        served[namespace] = _overlaid(known, table, namespace_text)
    if not served:
        raise ConfigError("no registry to mirror: give --upstream or a [registries] table")
    default = Settings(registries=tuple(served.values())).default_registry()
    if credentials is not None and default is not None and default.credentials is None:
        served[default.namespace] = evolve(default, credentials=credentials)
    return tuple(served.values()), _hosts(values.get("host") or [], served)


def _overlaid(settings: RegistrySettings, table: dict[str, Any], name: str) -> RegistrySettings:
    changes: dict[str, Any] = {}
    if "credentials" in table:
        given = table["credentials"]
        if not given.get("username") or not given.get("password"):
            raise ConfigError(f"[registries.{name!r}.credentials] needs both username and password")
        changes["credentials"] = Credentials(given["username"], given["password"])
    if "tag-ttl" in table:
        ttl = float(table["tag-ttl"])
        if not ttl >= 0:
            raise ConfigError(f"[registries.{name!r}] tag-ttl must not be negative")
        changes["tag_ttl"] = ttl
    for key, attribute in (
        ("upstream-proxy", "upstream_proxy"),
        ("upstream-ca", "upstream_ca"),
        ("upstream-insecure", "upstream_insecure"),
    ):
        if key in table:
            changes[attribute] = table[key]
    if "upstream-redirect-allow" in table:
        changes["upstream_redirect_allow"] = tuple(table["upstream-redirect-allow"])
    return evolve(settings, **changes)


def _hosts(entries: list[str], served: dict[str, RegistrySettings]) -> tuple[tuple[str, str], ...]:
    hosts = []
    for entry in entries:
        name, sep, namespace_text = entry.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--host {entry!r}: not NAME=REGISTRY")
        namespace = parse_namespace(namespace_text)
        if namespace not in served:
            raise ConfigError(f"--host {entry!r}: registry {namespace} is not one the mirror serves")
        hosts.append((name.strip().lower().rstrip("."), namespace))
    return tuple(hosts)
