"""The admin command against a running mirror: ``python -m mirrorproxy.cli``
as a subprocess, as an operator runs it beside the service.

Every subcommand, judged by what an operator would notice: requests counted
at the upstream, files in the cache directory, the command's exit status and
what it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from attrs import frozen
from twisted.internet.defer import maybeDeferred

from mirrorproxy.admin.display import human_size
from mirrorproxy.cache.manifests import TAGS_STAMP_INTERVAL
from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.filesystem import FilesystemStore
from mirrorproxy.upstream.settings import UpstreamRegistry as UpstreamName

from .harness.client import request
from .harness.mirror import Mirror, MirrorFactory
from .harness.oci import FOREIGN, HOST, Image, MiB, Platform
from .harness.processes import child_env, free_port
from .harness.publish import ACCEPT_MANIFESTS, Publisher
from .harness.registry import LogMark, UpstreamRegistry
from .harness.tools import require_tool

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT = 120.0


@frozen
class Ran:
    status: int
    stdout: str
    stderr: str


def admin(*args: str, prefix: Sequence[str] = ()) -> Ran:
    """``mirrorproxy ARGS...``, run as the operator would, in a process of its own
    (through ``prefix``, a command that runs another, if given)."""
    completed = subprocess.run(
        [*prefix, sys.executable, "-m", "mirrorproxy.admin.cli", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return Ran(completed.returncode, completed.stdout, completed.stderr)


def platform_text(platform: Platform) -> str:
    return "/".join(p for p in (platform.os, platform.architecture, platform.variant) if p)


def blob_fetches(upstream: UpstreamRegistry, image: Image, since: LogMark) -> dict[str, int]:
    return {b.digest: upstream.blob_fetches(image.name, b.digest, since) for b in image.blobs()}


@frozen
class Cache:
    """The mirror's cache directory, seen through the store's own layout."""

    root: Path
    registry: str

    @classmethod
    def of(cls, mirror: Mirror, upstream: UpstreamRegistry) -> Cache:
        return cls(mirror.cache_dir, UpstreamName.from_url(upstream.url).cache_key)

    @property
    def store(self) -> FilesystemStore:
        return FilesystemStore(str(self.root), maybeDeferred)

    def blob(self, digest: str) -> Path:
        return Path(self.store.blob_path(self.registry, Digest.parse(digest)))

    def manifest(self, digest: str) -> Path:
        return Path(self.store.manifest_path(self.registry, Digest.parse(digest)))

    def quarantined(self, path: Path) -> Path:
        return self.root / "quarantine" / self.registry / path.relative_to(self.root / self.registry)

    def files_of(self, image: Image) -> list[Path]:
        """Every file pulling `image` put in the cache: manifests (with
        their types) and blobs."""
        manifests = {image.digest} | {p.manifest.digest for p in image.platforms}
        paths = [self.manifest(d) for d in manifests]
        paths += [p.with_name(p.name + ".type") for p in paths]
        return paths + [self.blob(b.digest) for b in image.blobs()]


def index_size(mirror: Mirror, image: Image) -> int:
    answer = request(
        f"{mirror.url}/v2/{image.name}/manifests/{image.digest}", headers={"Accept": ACCEPT_MANIFESTS}
    )
    assert answer.status == 200
    return len(answer.body)


@pytest.fixture
def two_platforms(publisher: Publisher, unique: Callable[[str], str]) -> Image:
    return publisher.image(
        f"org/{unique('admin')}", "1", {HOST: (1 * MiB, 300_000), FOREIGN: (700_000,)}
    )


def test_prefetch_pulls_every_platform_once_and_then_costs_upstream_nothing(
    two_platforms: Image, upstream: UpstreamRegistry, start_mirror: MirrorFactory
) -> None:
    image = two_platforms
    mirror = start_mirror()
    mark = upstream.mark()

    first = admin("prefetch", image.reference, "--mirror", mirror.url)

    assert first.status == 0, first
    assert blob_fetches(upstream, image, mark) == {b.digest: 1 for b in image.blobs()}
    assert f"resolved {image.reference} to {image.digest}" in first.stdout
    assert f"(MISS {len(image.blobs())})" in first.stdout

    again = upstream.mark()
    second = admin("prefetch", image.reference, "--mirror", mirror.url)

    assert second.status == 0, second
    # Not a blob, not even a manifest: the tag is fresh, the rest by digest
    # (the readiness probe's GET /v2/ may come meanwhile).
    assert [f"{r.method} {r.path}" for r in upstream.requests(again) if r.path != "/v2/"] == []
    assert f"(HIT {len(image.blobs())})" in second.stdout


def test_prefetch_of_one_platform_pulls_only_its_blobs(
    two_platforms: Image, upstream: UpstreamRegistry, start_mirror: MirrorFactory
) -> None:
    image = two_platforms
    mirror = start_mirror()
    mark = upstream.mark()

    foreign = platform_text(FOREIGN)
    ran = admin("prefetch", f"docker.io/{image.reference}", "--platform", foreign, "--mirror", mirror.url)

    assert ran.status == 0, ran
    wanted = {b.digest for b in image.for_platform(FOREIGN).blobs()}
    assert blob_fetches(upstream, image, mark) == {
        b.digest: 1 if b.digest in wanted else 0 for b in image.blobs()
    }


def test_ls_and_stats_show_what_was_pulled(
    two_platforms: Image, upstream: UpstreamRegistry, start_mirror: MirrorFactory
) -> None:
    image = two_platforms
    mirror = start_mirror()
    assert admin("prefetch", image.reference, "--mirror", mirror.url).status == 0
    cache_dir = str(mirror.cache_dir)
    content = (
        index_size(mirror, image)
        + sum(p.manifest.size for p in image.platforms)
        + sum(b.size for b in image.blobs())
    )

    listing = admin("ls", image.name, "--cache-dir", cache_dir)
    assert listing.status == 0, listing
    (row,) = [line.split() for line in listing.stdout.splitlines() if line.startswith(image.name)]
    assert row[:3] == [image.name, image.tag, image.digest]
    assert " ".join(row[3:]) == human_size(content)

    as_json = json.loads(admin("ls", image.name, "--cache-dir", cache_dir, "--json").stdout)
    (tag,) = as_json["repositories"][0]["tags"]
    assert (tag["digest"], tag["size"]) == (image.digest, content)

    unreachable = f"http://127.0.0.1:{free_port()}/metrics"
    stats = admin("stats", "--cache-dir", cache_dir, "--metrics", unreachable)
    assert stats.status == 0, stats
    entries = 1 + len(image.platforms) + len(image.blobs())
    lines = stats.stdout.splitlines()
    assert lines[0] == f"cache {cache_dir}: {human_size(content)} in {entries} entries"
    registry = Cache.of(mirror, upstream).registry
    assert lines[1].startswith(f"  {registry}: 1 repository, 1 tag, {1 + len(image.platforms)} manifests")
    assert lines[-1].startswith(f"hit ratio: unknown, no metrics at {unreachable}")


def test_verify_finds_a_flipped_bit_and_the_mirror_then_fetches_a_good_copy(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    image = publisher.image(f"org/{unique('rot')}", "1", {HOST: (1 * MiB, 200_000)})
    mirror = start_mirror()
    assert admin("prefetch", image.reference, "--mirror", mirror.url).status == 0
    cache = Cache.of(mirror, upstream)
    layer = image.platforms[0].layers[0]
    path = cache.blob(layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(data)

    ran = admin("verify", "--cache-dir", str(cache.root))

    assert ran.status == 1, ran
    (line,) = [line for line in ran.stdout.splitlines() if line.startswith("CORRUPT")]
    assert layer.digest in line and str(path) in line
    assert not path.exists()
    assert cache.quarantined(path).read_bytes() == data
    assert "1 corrupt" in ran.stdout

    # The mirror, still running, sees a miss and fetches that blob again.
    mark = upstream.mark()
    assert admin("prefetch", image.reference, "--mirror", mirror.url).status == 0
    refetched = {b.digest: int(b.digest == layer.digest) for b in image.blobs()}
    assert blob_fetches(upstream, image, mark) == refetched
    assert admin("verify", "--cache-dir", str(cache.root)).status == 0


def test_purge_then_gc_frees_the_bytes_and_the_next_pull_fetches_again(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    kept = publisher.image(f"org/{unique('kept')}", "1", {HOST: (300_000,)})
    image = publisher.image(f"org/{unique('purged')}", "1", {HOST: (1 * MiB, 400_000)})
    mirror = start_mirror()
    for pulled in (kept, image):
        assert admin("prefetch", pulled.reference, "--mirror", mirror.url).status == 0
    cache = Cache.of(mirror, upstream)
    files = cache.files_of(image)
    freed = sum(f.stat().st_size for f in files)
    root = str(cache.root)

    purged = admin("purge", image.reference, "--cache-dir", root)
    purged_at = time.monotonic()
    assert purged.status == 0, purged
    assert f"removed tag {image.reference}" in purged.stdout
    # Just pulled: within the default grace period nothing goes.
    young = admin("gc", "--cache-dir", root)
    assert "freed 0 B" in young.stdout and all(f.exists() for f in files)
    dry = admin("gc", "--cache-dir", root, "--grace", "0", "--dry-run")
    assert f"would free {human_size(freed)} ({len(files)} files)" in dry.stdout
    assert all(f.exists() for f in files)

    collected = admin("gc", "--cache-dir", root, "--grace", "0")

    assert collected.status == 0, collected
    assert f"freed {human_size(freed)} ({len(files)} files)" in collected.stdout
    for blob in image.blobs():
        assert f"removed blob {blob.digest}" in collected.stdout
    assert not any(f.exists() for f in files)
    assert all(f.exists() for f in cache.files_of(kept))

    # The running mirror forgets purged tags within TAGS_STAMP_INTERVAL (the
    # gc runs above usually take longer than that already).
    time.sleep(max(0.0, purged_at + TAGS_STAMP_INTERVAL - time.monotonic()))
    mark = upstream.mark()
    again = admin("prefetch", image.reference, "--mirror", mirror.url)
    assert again.status == 0, again
    assert blob_fetches(upstream, image, mark) == {b.digest: 1 for b in image.blobs()}
    assert upstream.fetches(f"/v2/{image.name}/manifests/{image.tag}", mark) == 1


def test_clear_errors_for_an_unreachable_mirror_and_a_missing_cache(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    ran = admin("prefetch", "alpine", "--mirror", nowhere)
    assert ran.status == 1
    assert ran.stderr.strip() == f"Error: cannot connect to the mirror at {nowhere}: Connection refused"

    missing = admin("stats", "--cache-dir", os.fspath(tmp_path / "absent"))
    assert missing.status == 2
    assert "no cache directory" in missing.stderr and "Traceback" not in missing.stderr


def test_stats_reads_the_hit_ratio_from_a_running_mirrors_metrics(
    two_platforms: Image, start_mirror: MirrorFactory
) -> None:
    image = two_platforms
    port = free_port()
    mirror = start_mirror(options=["--metrics-listen", f"tcp:{port}:interface=127.0.0.1"])
    assert admin("prefetch", image.reference, "--mirror", mirror.url).status == 0  # all misses
    assert admin("prefetch", image.reference, "--mirror", mirror.url).status == 0  # all hits

    stats = admin(
        "stats", "--cache-dir", str(mirror.cache_dir), "--metrics", f"http://127.0.0.1:{port}/metrics", "--json"
    )

    assert stats.status == 0, stats
    answered = 2 * (1 + len(image.platforms) + len(image.blobs()))
    ratio = json.loads(stats.stdout)["metrics"]["hitRatio"]
    assert ratio == pytest.approx(0.5, abs=1 / answered)


def test_after_purge_with_gc_under_a_running_mirror_the_next_pull_puts_everything_back(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
) -> None:
    # The report: after `purge library/multi --gc --grace 0` the next pull
    # was a MISS yet wrote no manifest (the mirror trusted the body it held
    # in memory), so `ls` showed no size, `gc` would have collected the live
    # tag's blobs, and `verify` saw nothing wrong.
    image = publisher.image(
        f"library/{unique('multi')}", "1", {HOST: (400_000, 100_000), FOREIGN: (300_000,)}
    )
    mirror = start_mirror()
    assert admin("prefetch", image.reference, "--mirror", mirror.url).status == 0
    cache = Cache.of(mirror, upstream)
    root = str(cache.root)
    files = cache.files_of(image)
    assert all(f.exists() for f in files)

    purged = admin("purge", image.reference, "--gc", "--grace", "0", "--cache-dir", root)
    purged_at = time.monotonic()
    assert purged.status == 0, purged
    assert not any(f.exists() for f in files)

    # The documented promise: a running mirror looks at cache-stamp at most
    # TAGS_STAMP_INTERVAL apart, so a pull that long after the purge sees it.
    time.sleep(max(0.0, purged_at + TAGS_STAMP_INTERVAL - time.monotonic()))
    mark = upstream.mark()
    again = admin("prefetch", image.reference, "--mirror", mirror.url)

    assert again.status == 0, again
    assert upstream.fetches(f"/v2/{image.name}/manifests/{image.tag}", mark) == 1
    assert [f for f in files if not f.exists()] == []
    content = (
        index_size(mirror, image)
        + sum(p.manifest.size for p in image.platforms)
        + sum(b.size for b in image.blobs())
    )
    listing = admin("ls", image.name, "--cache-dir", root)
    (row,) = [line.split() for line in listing.stdout.splitlines() if line.startswith(image.name)]
    assert row[:3] == [image.name, image.tag, image.digest]
    assert " ".join(row[3:]) == human_size(content)
    dry = admin("gc", "--cache-dir", root, "--grace", "0", "--dry-run")
    assert (dry.status, dry.stdout, dry.stderr) == (0, "would free 0 B (0 files)\n", "")
    verified = admin("verify", "--cache-dir", root)
    assert (verified.status, verified.stderr) == (0, ""), verified
    assert verified.stdout.rstrip().endswith(": all good")


def test_the_admin_command_reads_the_config_file_the_service_started_from(
    two_platforms: Image, upstream: UpstreamRegistry, start_mirror: MirrorFactory, tmp_path: Path
) -> None:
    image = two_platforms
    cache_dir = tmp_path / "cache"
    metrics_port = free_port()
    config = tmp_path / "mirrorproxy.toml"
    config.write_text(
        f'upstream = "{upstream.url}"\ncache-dir = "{cache_dir}"\n'
        f'metrics-listen = ["tcp:{metrics_port}:interface=127.0.0.1"]\n'
    )
    mirror = start_mirror(cache_dir, options=["--config", str(config)])
    assert admin("prefetch", image.reference, "--mirror", mirror.url).status == 0

    listing = admin("ls", "--config", str(config))
    stats = admin("stats", "--config", str(config), "--json")

    assert listing.status == 0, listing
    assert [image.name, image.tag, image.digest] in [line.split()[:3] for line in listing.stdout.splitlines()]
    assert stats.status == 0, stats
    metrics = json.loads(stats.stdout)["metrics"]
    assert metrics["url"] == f"http://127.0.0.1:{metrics_port}/metrics"
    assert metrics["outcomes"]["MISS"] == 1 + len(image.platforms) + len(image.blobs())


def test_a_config_file_the_operator_may_not_read_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # As the service's config is kept: it holds credentials, so only its
    # owner (root, or the service's user) may read it.
    config = tmp_path / "mirrorproxy.toml"
    config.write_text(
        'cache-dir = "/var/cache/mirrorproxy"\n[upstream-credentials]\nusername = "u"\npassword = "p"\n'
    )
    config.chmod(0o000)
    prefix: list[str] = []
    if os.geteuid() == 0:
        # Root reads any file: without these capabilities, only what its mode allows.
        caps = "-dac_override,-dac_read_search"
        prefix = [require_tool("setpriv", "util-linux"), f"--inh-caps={caps}", f"--bounding-set={caps}"]

    ran = admin("ls", "--config", str(config), prefix=prefix)

    assert ran.status == 2, ran
    assert ran.stderr == (
        f"Error: cannot read config file {config}: Permission denied; run this as a user who may read it "
        "(root, or the service's), or give --cache-dir instead of --config\n"
    )
