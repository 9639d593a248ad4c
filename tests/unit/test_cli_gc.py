"""``mirrorproxy gc`` and ``purge``: what no tag needs goes, after a grace period."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mirrorproxy.admin.display import human_size
from mirrorproxy.admin.gc import collect
from mirrorproxy.admin.inventory import scan

from .cachebuilder import Built, BuiltImage, CacheBuilder
from .clirunner import invoke

HOUR = 3600.0


@pytest.fixture
def cache(tmp_path: Path) -> CacheBuilder:
    return CacheBuilder(str(tmp_path / "cache"))


def paths(cache: CacheBuilder, image: BuiltImage) -> list[str]:
    return [cache.manifest_path(m) for m in image.manifests] + [cache.blob_path(b) for b in image.blobs]


def untag(cache: CacheBuilder, repository: str, tag: str) -> None:
    os.unlink(cache.tag_path(repository, tag))


def all_exist(files: list[str]) -> bool:
    return all(os.path.exists(f) for f in files)


def none_exist(files: list[str]) -> bool:
    return not any(os.path.exists(f) for f in files)


def test_unreferenced_content_goes_and_tagged_content_stays(cache: CacheBuilder) -> None:
    kept = cache.index("org/app", "1", {"linux/amd64": [os.urandom(100)], "linux/arm64": [os.urandom(100)]})
    dropped = cache.image("org/old", "1", os.urandom(4000))
    untag(cache, "org/old", "1")

    result = invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert result.exit_code == 0, result.output
    assert all_exist(paths(cache, kept))
    assert none_exist(paths(cache, dropped))
    assert not os.path.exists(cache.manifest_path(dropped.top) + ".type")
    assert f"removed manifest {dropped.digest}" in result.stdout
    for blob in dropped.blobs:
        assert f"removed blob {blob.digest}" in result.stdout
    type_size = len(dropped.top.media_type)
    assert f"freed {human_size(dropped.size + type_size)} (4 files)" in result.stdout


def test_a_blob_shared_with_a_tagged_image_stays(cache: CacheBuilder) -> None:
    base = cache.blob(os.urandom(100))
    kept = cache.image("org/app", "1", base)
    dropped = cache.image("org/old", "1", base, os.urandom(100))
    untag(cache, "org/old", "1")

    invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert all_exist(paths(cache, kept))
    assert not os.path.exists(cache.blob_path(dropped.blobs[2]))


def test_the_grace_period_keeps_what_was_written_or_used_lately(cache: CacheBuilder) -> None:
    old = cache.image("org/old", "1", os.urandom(100))
    young = cache.image("org/young", "1", os.urandom(100))
    untag(cache, "org/old", "1")
    untag(cache, "org/young", "1")
    for path in paths(cache, old):
        cache.age(path, 2 * HOUR)
    # A blob served lately (eviction touches what it serves) counts as young.
    cache.age(cache.manifest_path(young.top), 2 * HOUR)

    result = invoke("gc", "--cache-dir", cache.root)

    assert none_exist(paths(cache, old))
    assert all_exist([cache.blob_path(b) for b in young.blobs])
    assert not os.path.exists(cache.manifest_path(young.top))
    assert f"kept {len(young.blobs)} unreferenced files used within the grace period (1h" in result.stdout


def test_grace_is_judged_against_the_clock(cache: CacheBuilder) -> None:
    image = cache.image("org/old", "1", os.urandom(100))
    untag(cache, "org/old", "1")

    soon = collect(scan(cache.root), grace=HOUR, now=time.time() + HOUR / 2)
    assert soon.removed == () and soon.kept_young == len(paths(cache, image))

    later = collect(scan(cache.root), grace=HOUR, now=time.time() + 2 * HOUR)
    assert none_exist(paths(cache, image))
    assert later.kept_young == 0


def test_a_dry_run_removes_nothing(cache: CacheBuilder) -> None:
    dropped = cache.image("org/old", "1", os.urandom(100))
    untag(cache, "org/old", "1")

    result = invoke("gc", "--cache-dir", cache.root, "--grace", "0", "--dry-run")

    assert result.exit_code == 0
    assert all_exist(paths(cache, dropped))
    assert f"would remove blob {dropped.blobs[1].digest}" in result.stdout
    assert "would free" in result.stdout


def test_spool_files_are_never_touched(cache: CacheBuilder) -> None:
    spool = Path(cache.root, "spool", "0123abcd")
    spool.write_bytes(b"a fill in flight")
    cache.age(str(spool), 10 * HOUR)

    invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert spool.read_bytes() == b"a fill in flight"


def test_an_orphan_type_file_goes(cache: CacheBuilder) -> None:
    # A crash between writing a manifest's type and the manifest itself.
    image = cache.image("org/app", "1", os.urandom(10))
    orphan = Built(image.top.digest, 0, "", b"")
    untag(cache, "org/app", "1")
    os.unlink(cache.manifest_path(orphan))

    result = invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert not os.path.exists(cache.manifest_path(orphan) + ".type")
    assert f"removed type {image.digest}" in result.stdout


def test_an_unreadable_tag_record_is_warned_about(cache: CacheBuilder) -> None:
    cache.image("org/app", "1", os.urandom(10))
    Path(cache.tag_path("org/app", "1")).write_text("garbage")

    result = invoke("gc", "--cache-dir", cache.root, "--grace", "0", "--dry-run")

    assert "warning: docker.io: tag record org/app:1 is unreadable" in result.stderr


def test_purge_a_tag_leaves_its_content_for_gc(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    other = cache.image("org/app", "2", os.urandom(10))

    result = invoke("purge", "org/app:1", "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    assert "removed tag org/app:1" in result.stdout
    assert not os.path.exists(cache.tag_path("org/app", "1"))
    assert os.path.exists(cache.tag_path("org/app", "2"))
    assert all_exist(paths(cache, image)) and all_exist(paths(cache, other))

    invoke("gc", "--cache-dir", cache.root, "--grace", "0")
    assert none_exist(paths(cache, image)) and all_exist(paths(cache, other))


def test_purge_with_gc_removes_only_what_the_purged_tags_alone_referenced(cache: CacheBuilder) -> None:
    base = cache.blob(os.urandom(1000))
    one = cache.image("library/alpine", "1", base, os.urandom(2000))
    two = cache.image("library/alpine", "2", os.urandom(3000))
    other = cache.image("org/other", "1", base)
    stray = cache.image("org/stray", "1", os.urandom(10))
    untag(cache, "org/stray", "1")

    # Docker Hub's rule: alpine is library/alpine; no tag means every tag.
    result = invoke("purge", "alpine", "--gc", "--grace", "0", "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    assert "removed tag library/alpine:1" in result.stdout
    assert "removed tag library/alpine:2" in result.stdout
    assert none_exist(paths(cache, two))
    assert none_exist([cache.manifest_path(one.top), cache.blob_path(one.blobs[2])])
    assert all_exist(paths(cache, other))
    # Unreferenced before the purge: not this purge's business.
    assert all_exist(paths(cache, stray))


def test_purge_dry_run_removes_nothing(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))

    result = invoke("purge", "org/app:1", "--gc", "--grace", "0", "--dry-run", "--cache-dir", cache.root)

    assert "would remove tag org/app:1" in result.stdout
    assert f"would remove blob {image.blobs[1].digest}" in result.stdout
    assert os.path.exists(cache.tag_path("org/app", "1")) and all_exist(paths(cache, image))


@pytest.mark.parametrize("target", ["org/app:2", "org/gone"])
def test_purging_what_is_not_there_is_done_already(cache: CacheBuilder, target: str) -> None:
    # Idempotent, so a script may purge and purge again.
    cache.image("org/app", "1", os.urandom(10))
    what = "repository org/gone" if target == "org/gone" else target

    result = invoke("purge", target, "--gc", "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("", f"note: no {what} in the cache; nothing purged\n")
    assert os.path.exists(cache.tag_path("org/app", "1"))


def test_purging_what_is_not_there_with_strict_is_an_error(cache: CacheBuilder) -> None:
    cache.image("org/app", "1", os.urandom(10))

    missing_tag = invoke("purge", "org/app:2", "--strict", "--cache-dir", cache.root)
    assert missing_tag.exit_code == 1 and "no org/app:2 in the cache" in missing_tag.output

    bad = invoke("purge", "org/app@sha256:" + "0" * 64, "--cache-dir", cache.root)
    assert bad.exit_code == 2 and "digest is not allowed" in bad.output


def test_purge_of_a_one_word_name_outside_docker_hub_says_to_name_it_in_full(cache: CacheBuilder) -> None:
    local = CacheBuilder(cache.root, registry="registry.local_5000")
    local.image("library/multi", "1", os.urandom(10))

    result = invoke("purge", "multi:1", "--cache-dir", cache.root)

    assert result.exit_code == 0
    assert result.stderr == (
        "note: no multi:1 in the cache (registry.local_5000 has library/multi: only Docker Hub's "
        "one-word names mean library/, so give the full name); nothing purged\n"
    )
    assert os.path.exists(local.tag_path("library/multi", "1"))


def test_a_bad_grace_is_a_usage_error(cache: CacheBuilder) -> None:
    result = invoke("gc", "--cache-dir", cache.root, "--grace", "soon")

    assert result.exit_code == 2
    assert "'soon' is not a duration" in result.output


def test_gc_that_removes_files_tells_running_mirrors(cache: CacheBuilder) -> None:
    cache.image("org/old", "1", os.urandom(10))
    untag(cache, "org/old", "1")

    invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert cache.stamp() is not None


@pytest.mark.parametrize("args", [("--grace", "0", "--dry-run"), ("--grace", "1h")])
def test_gc_that_removes_nothing_leaves_running_mirrors_alone(
    cache: CacheBuilder, args: tuple[str, ...]
) -> None:
    # A dry run, or nothing old enough: what the mirrors hold is still right.
    cache.image("org/old", "1", os.urandom(10))
    untag(cache, "org/old", "1")

    invoke("gc", "--cache-dir", cache.root, *args)

    assert cache.stamp() is None


@pytest.mark.parametrize("with_gc", [(), ("--gc", "--grace", "0")])
def test_purge_tells_running_mirrors_and_a_dry_run_does_not(
    cache: CacheBuilder, with_gc: tuple[str, ...]
) -> None:
    cache.image("org/app", "1", os.urandom(10))

    invoke("purge", "org/app:1", "--cache-dir", cache.root, "--dry-run", *with_gc)
    assert cache.stamp() is None

    invoke("purge", "org/app:1", "--cache-dir", cache.root, *with_gc)
    first = cache.stamp()
    assert first is not None

    cache.image("org/app", "1", os.urandom(10))
    invoke("purge", "org/app:1", "--cache-dir", cache.root, *with_gc)
    assert cache.stamp() not in (None, first)


def test_a_tag_whose_manifest_is_not_cached_keeps_the_blobs_that_may_be_its(cache: CacheBuilder) -> None:
    # A HEAD taught the mirror the tag, or the manifest went since: gc cannot
    # tell which blobs the tag needs, so it removes none that no tag reaches.
    image = cache.image("org/app", "1", os.urandom(100))
    os.unlink(cache.manifest_path(image.top))
    os.unlink(cache.manifest_path(image.top) + ".type")
    stray = cache.image("org/stray", "1", os.urandom(100))
    untag(cache, "org/stray", "1")

    result = invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert result.exit_code == 0, result.output
    assert all_exist([cache.blob_path(b) for b in image.blobs + stray.blobs])
    # An image manifest refers to blobs only: manifests no tag reaches still go.
    assert not os.path.exists(cache.manifest_path(stray.top))
    assert result.stderr.splitlines() == [
        f"warning: docker.io: tag org/app:1 names manifest {image.digest}, which is not in the cache; "
        "unreferenced blobs are kept, as they may be its (pull or purge the tag, then gc again)"
    ]
    assert "kept 4 unreferenced files that the tags warned about may need" in result.stdout


def test_an_index_not_cached_keeps_unreferenced_manifests_too(cache: CacheBuilder) -> None:
    image = cache.index("org/multi", "1", {"linux/amd64": [os.urandom(10)], "linux/arm64": [os.urandom(10)]})
    os.unlink(cache.manifest_path(image.top))
    os.unlink(cache.manifest_path(image.top) + ".type")

    result = invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert all_exist(paths(cache, image)[1:])
    assert "unreferenced manifests and blobs are kept" in result.stderr
    assert "freed 0 B" in result.stdout


def test_an_unreadable_tag_record_keeps_what_it_may_name(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    Path(cache.tag_path("org/app", "1")).write_text("garbage")

    result = invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert all_exist(paths(cache, image))
    assert "unreferenced manifests and blobs are kept" in result.stderr


def test_a_manifest_that_cannot_be_followed_keeps_what_it_may_reference(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    Path(cache.manifest_path(image.top)).write_text("not json")

    result = invoke("gc", "--cache-dir", cache.root, "--grace", "0")

    assert all_exist(paths(cache, image))
    assert f"warning: docker.io: manifest {image.digest} cannot be followed (not JSON" in result.stderr
    assert "unreferenced manifests and blobs are kept" in result.stderr


def test_purge_with_gc_keeps_what_a_remaining_tag_without_its_manifest_may_need(
    cache: CacheBuilder,
) -> None:
    dangling = cache.image("org/app", "1", os.urandom(10))
    os.unlink(cache.manifest_path(dangling.top))
    purged = cache.image("org/app", "2", os.urandom(10))

    result = invoke("purge", "org/app:2", "--gc", "--grace", "0", "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    assert "removed tag org/app:2" in result.stdout
    assert not os.path.exists(cache.manifest_path(purged.top))
    assert all_exist([cache.blob_path(b) for b in purged.blobs + dangling.blobs])
    assert "warning: docker.io: tag org/app:1 names manifest" in result.stderr
