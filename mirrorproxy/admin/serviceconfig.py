"""The service's config file, as the admin command reads it.

The very TOML file ``twistd mirrorproxy --config`` starts from, read by the
service's own reader (`configfile`), so a file that works for one works for
the other.  The admin command takes from it the cache directory, the
registries the service mirrors, and where the service listens: the URL of
the mirror (for `prefetch`) and of its metrics (for `stats`), worked out from
Twisted endpoint strings.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from ..common.errors import ConfigError
from ..server.config import Settings
from ..server.configfile import read_config, settings_from
from ..upstream.settings import UpstreamRegistry

# Endpoint types served over TCP, and the scheme a client speaks to them.
_SCHEMES = {"tcp": "http", "tcp6": "http", "ssl": "https"}
# A listener on every address is reached on the loopback one.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "::0": "::1"}


class ServiceConfigError(ValueError):
    """The config file cannot be used, with why (one line)."""


class ServiceConfigUnreadable(ServiceConfigError):
    """The config file may not be read by this user (it may hold credentials)."""


class EndpointUnusable(ValueError):
    """No URL reaches the service at these endpoints, with why."""


@frozen
class ServiceConfig:
    path: str
    settings: Settings

    @property
    def cache_dir(self) -> str:
        return self.settings.cache_dir

    def registries(self) -> tuple[UpstreamRegistry, ...]:
        """The upstream registries the service mirrors, each with the name of
        its directory in the cache (`cache_key`)."""
        return tuple(r.upstream for r in self.settings.served())

    def mirror_url(self) -> str:
        """Where the mirror answers clients: its first TCP or TLS listener."""
        return _first_url(self.settings.listen, "listen", self.path)

    def metrics_url(self) -> str | None:
        """Where the service's metrics are; None if it serves none."""
        if not self.settings.metrics_listen:
            return None
        return _first_url(self.settings.metrics_listen, "metrics-listen", self.path) + "/metrics"


def read_service_config(path: str) -> ServiceConfig:
    """Read and check the file as the service would; ServiceConfigError if it cannot be used."""
    try:
        with open(path, "rb"):
            pass
    except PermissionError as e:
        raise ServiceConfigUnreadable(f"cannot read config file {path}: {e.strerror}") from None
    except OSError:
        pass  # read_config says what is wrong, in the service's words.
    try:
        values = read_config(path)
    except ConfigError as e:
        raise ServiceConfigError(str(e)) from None
    try:
        # The admin command never talks to upstream: the upstream
        # credentials in the environment are none of its business.
        settings = settings_from(values, {})
    except ValueError as e:
        raise ServiceConfigError(f"{path}: {e}") from None
    return ServiceConfig(path, settings)


def endpoint_url(description: str) -> str:
    """``tcp:9100:interface=127.0.0.1`` -> ``http://127.0.0.1:9100``: how a
    client on this host reaches a server listening at `description`."""
    args, kwargs = _endpoint_parts(description)
    kind = args[0] if args else ""
    if kind == "unix":
        raise EndpointUnusable(f"{description!r} is a unix socket; the admin command speaks HTTP over TCP")
    scheme = _SCHEMES.get(kind)
    if scheme is None:
        raise EndpointUnusable(f"cannot tell the URL of {description!r} (not a tcp:, tcp6: or ssl: endpoint)")
    port_text = kwargs.get("port", args[1] if len(args) > 1 else "")
    # tcp:PORT:INTERFACE, but ssl:PORT:PRIVATEKEY.
    positional_interface = args[2] if kind != "ssl" and len(args) > 2 else ""
    interface = kwargs.get("interface", positional_interface)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EndpointUnusable(f"cannot tell the port of {description!r}")
    host = _LOOPBACK.get(interface, interface)
    if kind == "tcp6" and not interface:
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{int(port_text)}"


def _first_url(endpoints: Sequence[str], key: str, path: str) -> str:
    reasons = []
    for description in endpoints:
        try:
            return endpoint_url(description)
        except EndpointUnusable as e:
            reasons.append(str(e))
    raise EndpointUnusable(f"no {key} endpoint in {path} can be reached: {'; '.join(reasons)}")


def _endpoint_parts(description: str) -> tuple[list[str], dict[str, str]]:
    """Twisted's endpoint string grammar: ``:``-separated positional and
    ``key=value`` arguments, ``\\`` escaping the next character."""
    args: list[str] = []
    kwargs: dict[str, str] = {}
    key: str | None = None
    current = ""
    characters = iter(description)
    for character in characters:
        if character == "\\":
            current += next(characters, "")
        elif character == ":":
            _add(args, kwargs, key, current)
            key, current = None, ""
        elif character == "=" and key is None:
            key, current = current, ""
        else:
            current += character
    _add(args, kwargs, key, current)
    return args, kwargs


def _add(args: list[str], kwargs: dict[str, str], key: str | None, value: str) -> None:
    if key is None:
        args.append(value)
    else:
        kwargs[key] = value
