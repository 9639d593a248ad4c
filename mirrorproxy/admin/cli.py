"""``mirrorproxy``: the admin command, over a cache directory or a cluster's
bucket, running service or not.

Only the command line lives here: options parsed, errors turned into one
clear line and an exit status, the work handed to `inventory`, `contents`,
`verify`, `gc`, `prefetch` and `scrape`, and the results to
`display`.

Every subcommand takes ``--config FILE``, the service's own config file:
the cache directory (or, for a cluster node's, the shared bucket and the
Redis its nodes listen on), the registries, and where the mirror and its
metrics listen come from it, unless given on the command line.

Exit status: 0 done; 1 the work found a problem (corrupt files, an image that
could not be pulled, nothing to purge with --strict, an unreachable mirror);
2 a usage error (bad option, missing cache directory, bad image name, a config
file that cannot be used).
"""

from __future__ import annotations

import os
import time

import click

from ..cluster.events import CacheStampChanged, ClusterEvent, Purge
from ..registry.descriptors import Platform
from . import display
from .clusternotice import NodesNotTold, tell_nodes
from .contents import list_cache
from .gc import NothingToPurge, collect, purge
from .imagerefs import BadImageName, ImageName, parse_image
from .inventory import Inventory
from .options import (
    CacheChoice,
    ConfigFileProblem,
    cache_options,
    config_option,
    duration,
    plain_errors,
    platforms,
    removal_options,
    service_config,
)
from .prefetch import DEFAULT_JOBS, prefetch
from .pullclient import DEFAULT_TIMEOUT, BadMirrorURL, MirrorClient
from .scrape import (
    DEFAULT_METRICS_URL,
    CacheOutcomes,
    MetricsUnavailable,
    read_outcomes,
)
from .serviceconfig import EndpointUnusable, ServiceConfig
from .verify import DEFAULT_JOBS as DEFAULT_VERIFY_JOBS
from .verify import content_bytes, verify

DEFAULT_MIRROR_URL = "http://127.0.0.1:5000"
USERNAME_VARIABLE = "MIRRORPROXY_MIRROR_USERNAME"
PASSWORD_VARIABLE = "MIRRORPROXY_MIRROR_PASSWORD"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mirrorproxy", prog_name="mirrorproxy", message="%(prog)s %(version)s")
def main() -> None:
    """Inspect, check, clean and warm a mirrorproxy cache.

    Safe while the service runs: content is only ever renamed or unlinked,
    never rewritten in place.
    """


@main.command()
@cache_options(
    "the cache directory (or shared bucket), registries and metrics URL (its first metrics-listen endpoint)"
)
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
    output = display.Output()
    inventory = _scan(cache, output)
    outcomes: CacheOutcomes | str | None = None
    url: str | None = None
    if not no_metrics:
        url, outcomes = _metrics_url(cache.service, metrics_url)
    if url is not None:
        try:
            outcomes = read_outcomes(url)
        except MetricsUnavailable as e:
            outcomes = str(e)
    document = display.stats_document(inventory, url, outcomes, cache.first_tier)
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
        name = _parse(repository, "repository", default_tag=None, allow_digest=False)
        repository = name.repository
        if name.registry is not None:
            cache = cache.only(name.registry)
    output = display.Output()
    inventory = _scan(cache, output)
    listing = list_cache(inventory, repository)
    if as_json:
        output.json(display.listing_document(listing))
    else:
        display.show_source(output, inventory.source, cache.first_tier)
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

    On a shared bucket (a config file with storage = "s3://..."), corrupt
    objects are deleted instead: the next pull fetches them again.  Exits 1
    if anything corrupt was found, or could not be checked.
    """
    output = display.Output()
    inventory = _scan(cache, output)
    display.show_source(output, inventory.source, cache.first_tier)
    with output.byte_progress("verifying") as progress:
        progress.set_total(content_bytes(inventory))
        report = verify(inventory, jobs, progress.advance)
    display.show_verify(output, report, inventory.source.unit)
    if any(f.outcome for f in report.findings):
        _tell_nodes(cache, output, [CacheStampChanged()])
    if report.findings or report.unchecked:
        raise SystemExit(1)


@main.command(name="gc")
@cache_options()
@removal_options(grace_help="Keep unreferenced content written or used more recently than this.")
@plain_errors
def gc_command(cache: CacheChoice, grace: float, dry_run: bool) -> None:
    """Remove manifests and blobs that no tag references."""
    output = display.Output()
    inventory = _scan(cache, output)
    display.show_source(output, inventory.source, cache.first_tier)
    with output.count_progress("removing" if not dry_run else "judging", inventory.source.unit + "s") as gone:
        report = collect(inventory, grace, time.time(), dry_run, gone)
    display.show_gc(output, report, grace, dry_run, inventory.source.unit)
    if report.removed and not dry_run:
        _tell_nodes(cache, output, [CacheStampChanged()])


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
    if name.registry is not None:
        cache = cache.only(name.registry)
    output = display.Output()
    inventory = _scan(cache, output)
    display.show_source(output, inventory.source, cache.first_tier)
    try:
        report = purge(inventory, name.repository, tag, grace, time.time(), with_content, dry_run)
    except NothingToPurge as e:
        if strict:
            raise
        output.note(f"{e}; nothing purged")
        return
    display.show_purge(output, report, grace, dry_run, inventory.source.unit)
    if not dry_run:
        purged = {r.registry for r in report.tags}
        events: list[ClusterEvent] = [
            Purge(r.name, r.canonical(name.repository), tag) for r in inventory.registries if r.name in purged
        ]
        _tell_nodes(cache, output, [*events, CacheStampChanged()])


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
    callback=platforms,
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
    callback=duration,
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
    service = service_config(config_path, "--mirror")
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


def _scan(cache: CacheChoice, output: display.Output) -> Inventory:
    with output.count_progress(f"reading {cache.where}", "found") as found:
        return cache.scan(found)


def _tell_nodes(cache: CacheChoice, output: display.Output, events: list[ClusterEvent]) -> None:
    """After removals from a bucket: tell its nodes, through their Redis if the config names one."""
    if not cache.in_bucket or cache.service is None:
        return
    try:
        told = tell_nodes(cache.service.settings.cluster, events)
    except NodesNotTold as e:
        output.warn(f"{e}; running nodes keep what they hold in memory until they next revalidate")
        return
    if told is not None:
        listening = "1 node listening" if told.listeners == 1 else f"{told.listeners} nodes listening"
        output.line(f"told the cluster through {told.address} ({listening})")


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
