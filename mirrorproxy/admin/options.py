"""The admin command's shared options: --config and what it supplies,
--cache-dir/--registry, --grace/--dry-run, durations, platforms, and the
wrapper that turns expected failures into one line and an exit status."""


from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click
from attrs import frozen

from ..registry.descriptors import Platform
from ..server.config import DEFAULT_CACHE_DIR
from ..upstream.settings import UpstreamRegistry
from . import display
from .bucketsource import BucketSource, bucket_for
from .contents import UnknownRepository
from .directorysource import DirectorySource
from .gc import DEFAULT_GRACE, NothingToPurge
from .inventory import Inventory, UnknownRegistry, scan
from .pullclient import PullFailed
from .serviceconfig import (
    ServiceConfig,
    ServiceConfigError,
    ServiceConfigUnreadable,
    read_service_config,
)

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(ctx: click.Context, param: click.Parameter, value: str | float) -> float:
    """``0``, ``90``, ``30s``, ``15m``, ``1h``, ``2d`` -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.fullmatch(value.strip().lower())
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 0, 90s, 15m, 1h, 2d)", ctx, param)
    return float(match.group(1)) * _SECONDS[match.group(2)]


def platforms(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[Platform, ...]:
    try:
        return tuple(Platform.parse(v) for v in values)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None


class ConfigFileProblem(click.ClickException):
    """A config file that cannot be used: one line, exit status 2."""

    exit_code = 2


def config_option(supplies: str) -> Callable[[F], F]:
    return click.option(
        "--config",
        "config_path",
        metavar="FILE",
        default=None,
        help=f"The service's TOML config file (twistd mirrorproxy --config): {supplies} from it, "
        "unless given here.",
    )


def service_config(path: str | None, instead: str) -> ServiceConfig | None:
    if path is None:
        return None
    try:
        return read_service_config(path)
    except ServiceConfigUnreadable as e:
        raise ConfigFileProblem(
            f"{e}; run this as a user who may read it (root, or the service's), "
            f"or give {instead} instead of --config"
        ) from None
    except ServiceConfigError as e:
        raise ConfigFileProblem(str(e)) from None


@frozen
class CacheChoice:
    """The cache a command works on, and the service's config if given.

    `root` is the cache directory; when `in_bucket`, the config's shared
    bucket is what the command works on, and `root` is only the node's
    first tier in front of it (named in the output, never read)."""

    root: str
    registry: str | None
    service: ServiceConfig | None
    in_bucket: bool = False

    @property
    def where(self) -> str:
        if self.in_bucket:
            assert self.service is not None
            return f"bucket {self.service.settings.cluster.storage}"
        return f"cache {self.root}"

    @property
    def first_tier(self) -> str | None:
        """The node's own directory, when the command works on its bucket."""
        return self.root if self.in_bucket else None

    def source(self) -> DirectorySource | BucketSource:
        if self.in_bucket:
            assert self.service is not None
            return BucketSource(bucket_for(self.service.settings.cluster))
        return DirectorySource(self.root)

    def only(self, registry: str) -> CacheChoice:
        """The same, restricted to a registry a name named (``ghcr.io/...``)."""
        key = UpstreamRegistry.from_url("http://x", registry).cache_key
        if self.registry is not None and self.registry != key:
            raise click.UsageError(f"the name is for {registry}, --registry says {self.registry}")
        return attrs.evolve(self, registry=key)

    def scan(self, on_found: Callable[[int], None] = lambda n: None) -> Inventory:
        # Explicit --registry, else the service's registries, else all.
        configured = None
        if self.service is not None:
            configured = [r.cache_key for r in self.service.registries()]
        try:
            return scan(self.source(), self.registry, configured, on_found)
        except UnknownRegistry as e:
            raise click.BadParameter(str(e.args[0]), param_hint="'--registry'") from None


def _cache_choice(service: ServiceConfig | None, cache_dir: str | None, registry: str | None) -> CacheChoice:
    root = cache_dir or (service.cache_dir if service is not None else DEFAULT_CACHE_DIR)
    if cache_dir is None and service is not None and service.settings.cluster.shared:
        # A node's cache directory is only its first tier: the bucket is the cache.
        return CacheChoice(root, registry, service, in_bucket=True)
    if os.path.isdir(root):
        return CacheChoice(root, registry, service)
    if cache_dir is None and service is not None:
        relative = "" if os.path.isabs(root) else (
            "; a relative path is taken from the directory this command runs in, "
            "as the service takes it from its own"
        )
        raise ConfigFileProblem(f"no cache directory {root!r} (the cache-dir of {service.path}{relative})")
    raise click.BadParameter(
        f"no cache directory {root!r} (give the service's --cache-dir; "
        f"its default is {DEFAULT_CACHE_DIR!r} in the directory it runs in)",
        param_hint="'--cache-dir'",
    )


def cache_options(supplies: str = "the cache directory (or shared bucket) and registries") -> Callable[[F], F]:
    """--config, --cache-dir and --registry, for the commands that read the
    cache; the command gets them as `cache`, a CacheChoice."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(
            *args: Any, config_path: str | None, cache_dir: str | None, registry: str | None, **kwargs: Any
        ) -> Any:
            service = service_config(config_path, "--cache-dir")
            return command(*args, cache=_cache_choice(service, cache_dir, registry), **kwargs)

        decorated: Any = click.option(
            "--registry",
            metavar="NAME",
            default=None,
            help="Only this upstream's part of the cache (its directory name, e.g. docker.io). "
            "Default: the config file's registries, else all.",
        )(wrapper)
        decorated = click.option(
            "--cache-dir",
            metavar="DIR",
            default=None,
            help="The service's cache directory (for a node sharing a bucket, its first tier). "
            "Default: the config file's storage bucket, else its cache-dir, "
            f"else ./{DEFAULT_CACHE_DIR}.",
        )(decorated)
        decorated = config_option(supplies)(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate


def removal_options(grace_help: str) -> Callable[[F], F]:
    """--grace and --dry-run, for the commands that remove content."""

    def decorate(command: F) -> F:
        command = click.option(
            "--dry-run", is_flag=True, help="Say what would be removed; remove nothing."
        )(command)
        command = click.option(
            "--grace",
            metavar="DURATION",
            default=display.human_duration(DEFAULT_GRACE),
            show_default=True,
            callback=duration,
            help=grace_help,
        )(command)
        return command

    return decorate


def plain_errors(command: F) -> F:
    """Expected failures become one line and exit status 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (NothingToPurge, UnknownRepository, PullFailed) as e:
            raise click.ClickException(str(e.args[0] if e.args else e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None

    return wrapper  # type: ignore[return-value]
