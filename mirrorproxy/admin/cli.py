"""``mirrorproxy``: the admin command, over a cache directory, running service or not.

Only the command line lives here: options parsed, errors turned into one
clear line and an exit status, the work handed to `inventory`, `contents`,
`verify`, `gc`, `prefetch` and `scrape`, and the results to
`display`.

Every subcommand takes ``--config FILE``, the service's own config file:
the cache directory, the registries, and where the mirror and its metrics
listen come from it, unless given on the command line.

Exit status: 0 done; 1 the work found a problem (corrupt files, an image that
could not be pulled, nothing to purge with --strict, an unreachable mirror);
2 a usage error (bad option, missing cache directory, bad image name, a config
file that cannot be used).
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from attrs import frozen

from ..registry.descriptors import Platform
from ..server.config import DEFAULT_CACHE_DIR
from . import display
from .contents import UnknownRepository, list_cache
from .gc import DEFAULT_GRACE, NothingToPurge, collect, purge
from .imagerefs import BadImageName, ImageName, parse_image
from .inventory import Inventory, UnknownRegistry, scan
from .prefetch import DEFAULT_JOBS, prefetch
from .pullclient import DEFAULT_TIMEOUT, BadMirrorURL, MirrorClient, PullFailed
from .scrape import (
    DEFAULT_METRICS_URL,
    CacheOutcomes,
    MetricsUnavailable,
    read_outcomes,
)
from .serviceconfig import (
    EndpointUnusable,
    ServiceConfig,
    ServiceConfigError,
    ServiceConfigUnreadable,
    read_service_config,
)
from .verify import DEFAULT_JOBS as DEFAULT_VERIFY_JOBS
from .verify import content_bytes, verify

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MIRROR_URL = "http://127.0.0.1:5000"
USERNAME_VARIABLE = "MIRRORPROXY_MIRROR_USERNAME"
PASSWORD_VARIABLE = "MIRRORPROXY_MIRROR_PASSWORD"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(ctx: click.Context, param: click.Parameter, value: str | float) -> float:
    """``0``, ``90``, ``30s``, ``15m``, ``1h``, ``2d`` -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.fullmatch(value.strip().lower())
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 0, 90s, 15m, 1h, 2d)", ctx, param)
    return float(match.group(1)) * _SECONDS[match.group(2)]


def _platforms(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[Platform, ...]:
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


def _service_config(path: str | None, instead: str) -> ServiceConfig | None:
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
    """The cache a command works on, and the service's config if given."""

    root: str
    registry: str | None
    service: ServiceConfig | None

    def scan(self) -> Inventory:
        # Explicit --registry, else the service's registries, else all.
        configured = None
        if self.service is not None:
            configured = [r.cache_key for r in self.service.registries()]
        try:
            return scan(self.root, self.registry, configured)
        except UnknownRegistry as e:
            raise click.BadParameter(str(e.args[0]), param_hint="'--registry'") from None


def _cache_choice(service: ServiceConfig | None, cache_dir: str | None, registry: str | None) -> CacheChoice:
    root = cache_dir or (service.cache_dir if service is not None else DEFAULT_CACHE_DIR)
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


def cache_options(supplies: str = "the cache directory and registries") -> Callable[[F], F]:
    """--config, --cache-dir and --registry, for the commands that read the
    cache; the command gets them as `cache`, a CacheChoice."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(
            *args: Any, config_path: str | None, cache_dir: str | None, registry: str | None, **kwargs: Any
        ) -> Any:
            service = _service_config(config_path, "--cache-dir")
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
            help="The service's cache directory. "
            f"Default: the config file's cache-dir, else ./{DEFAULT_CACHE_DIR}.",
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
            callback=_duration,
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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mirrorproxy", prog_name="mirrorproxy", message="%(prog)s %(version)s")
def main() -> None:
    """Inspect, check, clean and warm a mirrorproxy cache.

    Safe while the service runs: content is only ever renamed or unlinked,
    never rewritten in place.
    """


@main.command()
@cache_options("the cache directory, registries and metrics URL (its first metrics-listen endpoint)")
@click.option(
    "--metrics",
    "metrics_url",
    metavar="URL",
    default=None,
    help="The service's Prometheus endpoint, for the hit ratio. Default: the config file's "
    f"metrics-listen, else {DEFAULT_METRICS_URL} if it answers.",
)
@click.option("--no-metrics", is_flag=True, help="Do not ask the service for its hit ratio.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@plain_errors
def stats(cache: CacheChoice, metrics_url: str | None, no_metrics: bool, as_json: bool) -> None:
    """Size and entries of the cache; the hit ratio if the service is reachable."""
    inventory = cache.scan()
    outcomes: CacheOutcomes | str | None = None
    url: str | None = None
    if not no_metrics:
        url, outcomes = _metrics_url(cache.service, metrics_url)
    if url is not None:
        try:
            outcomes = read_outcomes(url)
        except MetricsUnavailable as e:
            outcomes = str(e)
    document = display.stats_document(inventory, url, outcomes)
    output = display.Output()
    if as_json:
        output.json(document)
    else:
        display.show_stats(output, document)


@main.command(name="ls")
@cache_options()
@click.argument("repository", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (sizes in bytes).")
@plain_errors
def ls_command(cache: CacheChoice, repository: str | None, as_json: bool) -> None:
    """Cached repositories, their tags, digests and sizes.

    A tag's size is its manifests and the blobs they reference that are cached;
    totals count content shared between tags once.
    """
    if repository is not None:
        repository = _parse(repository, "repository", default_tag=None, allow_digest=False).repository
    listing = list_cache(cache.scan(), repository)
    output = display.Output()
    if as_json:
        output.json(display.listing_document(listing))
    else:
        display.show_listing(output, listing)


@main.command(name="verify")
@cache_options()
@click.option(
    "--jobs",
    default=DEFAULT_VERIFY_JOBS,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Files hashed at once.",
)
@plain_errors
def verify_command(cache: CacheChoice, jobs: int) -> None:
    """Re-hash every cached blob and manifest; move corrupt ones to quarantine/.

    Exits 1 if any corrupt file was found.
    """
    inventory = cache.scan()
    output = display.Output()
    with output.byte_progress("verifying") as progress:
        progress.set_total(content_bytes(inventory))
        report = verify(inventory, jobs, progress.advance)
    display.show_verify(output, report)
    if report.findings:
        raise SystemExit(1)


@main.command(name="gc")
@cache_options()
@removal_options(grace_help="Keep unreferenced content written or used more recently than this.")
@plain_errors
def gc_command(cache: CacheChoice, grace: float, dry_run: bool) -> None:
    """Remove manifests and blobs that no tag references."""
    report = collect(cache.scan(), grace, time.time(), dry_run)
    display.show_gc(display.Output(), report, grace, dry_run)


@main.command(name="purge")
@cache_options()
@click.argument("target", metavar="REPOSITORY[:TAG]")
@click.option("--gc", "with_content", is_flag=True, help="Also remove what only these tags referenced.")
@removal_options(grace_help="With --gc: keep content written or used more recently than this.")
@click.option("--strict", is_flag=True, help="Exit 1 if there is nothing to purge (default: a note, exit 0).")
@plain_errors
def purge_command(
    cache: CacheChoice,
    target: str,
    with_content: bool,
    grace: float,
    dry_run: bool,
    strict: bool,
) -> None:
    """Remove a tag, or every tag of a repository, from the cache.

    The next pull of it asks upstream again.  Without --gc, what the tags
    referenced stays until `mirrorproxy gc`.  Purging what is not in the
    cache is done already: a note, exit 0 (exit 1 with --strict).
    """
    name = _parse(target, "REPOSITORY[:TAG]", default_tag=None, allow_digest=False)
    tag = name.reference if isinstance(name.reference, str) else None
    inventory = cache.scan()
    output = display.Output()
    try:
        report = purge(inventory, name.repository, tag, grace, time.time(), with_content, dry_run)
    except NothingToPurge as e:
        if strict:
            raise
        output.note(f"{e}; nothing purged")
        return
    display.show_purge(output, report, grace, dry_run)


@main.command(name="prefetch")
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True)
@config_option("the mirror URL (its first tcp: or ssl: listen endpoint)")
@click.option(
    "--mirror",
    "mirror_url",
    metavar="URL",
    default=None,
    help=f"The running mirror to pull through. Default: the config file's listen, else {DEFAULT_MIRROR_URL}.",
)
@click.option(
    "--platform",
    "platforms",
    metavar="OS/ARCH[/VARIANT]",
    multiple=True,
    callback=_platforms,
    help="Only this platform (repeatable): of an index, only its manifests for it; a single-platform "
    "image of another is not pulled. Default: all.",
)
@click.option(
    "--jobs",
    default=DEFAULT_JOBS,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Blobs pulled at once.",
)
@click.option(
    "--timeout",
    metavar="DURATION",
    default=f"{DEFAULT_TIMEOUT:g}s",
    show_default=True,
    callback=_duration,
    help="Give up on a request silent this long.",
)
@click.option(
    "--username",
    metavar="NAME",
    envvar=USERNAME_VARIABLE,
    default=None,
    help=f"For a mirror with an htpasswd file; the password comes from ${PASSWORD_VARIABLE}. "
    f"Default: ${USERNAME_VARIABLE}.",
)
@plain_errors
def prefetch_command(
    images: tuple[str, ...],
    config_path: str | None,
    mirror_url: str | None,
    platforms: tuple[Platform, ...],
    jobs: int,
    timeout: float,
    username: str | None,
) -> None:
    """Pull images through a running mirror, as a client would, to warm its cache.

    IMAGE is NAME[:TAG] or NAME@DIGEST (alpine, library/alpine:3.19,
    org/img@sha256:...); a docker.io/ prefix is dropped.  With --platform, an
    image lacking some of them is a warning, one lacking them all is not
    pulled.  Exits 1 if any image could not be pulled, or had none of the
    platforms.
    """
    names = [_parse(text, "IMAGE") for text in images]
    service = _service_config(config_path, "--mirror")
    if mirror_url is None:
        try:
            mirror_url = service.mirror_url() if service is not None else DEFAULT_MIRROR_URL
        except EndpointUnusable as e:
            raise ConfigFileProblem(f"{e}; give --mirror URL") from None
    try:
        client = MirrorClient(mirror_url, timeout, _credentials(username))
    except BadMirrorURL as e:
        raise click.BadParameter(str(e), param_hint="'--mirror'") from None
    output = display.Output()
    with output.byte_progress("pulling") as progress:
        results = prefetch(client, names, display.PrefetchDisplay(progress), platforms, jobs)
    display.show_prefetch_summary(output, results)
    if not all(r.ok for r in results):
        raise SystemExit(1)


def _metrics_url(service: ServiceConfig | None, explicit: str | None) -> tuple[str | None, str | None]:
    """--metrics, else the config file's metrics-listen, else the default;
    or no URL, and why."""
    if explicit is not None:
        return explicit, None
    if service is None:
        return DEFAULT_METRICS_URL, None
    try:
        url = service.metrics_url()
    except EndpointUnusable as e:
        return None, str(e)
    if url is None:
        return None, f"the service has no metrics-listen in {service.path}"
    return url, None


def _credentials(username: str | None) -> tuple[str, str] | None:
    # Passwords never on the command line, where ps and shell history see them.
    password = os.environ.get(PASSWORD_VARIABLE)
    if not username and not password:
        return None
    if not username or not password:
        raise click.UsageError(
            f"give both --username (or ${USERNAME_VARIABLE}) and ${PASSWORD_VARIABLE}, or neither"
        )
    return username, password


def _parse(text: str, what: str, default_tag: str | None = "latest", allow_digest: bool = True) -> ImageName:
    try:
        return parse_image(text, default_tag, allow_digest)
    except BadImageName as e:
        raise click.BadParameter(str(e), param_hint=what) from None


if __name__ == "__main__":
    main(prog_name="mirrorproxy")
