"""``mirrorproxy ls``: repositories, tags, digests and sizes from the cache's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mirrorproxy.admin.display import human_size

from .cachebuilder import CacheBuilder
from .clirunner import invoke, invoke_json


@pytest.fixture
def cache(tmp_path: Path) -> CacheBuilder:
    return CacheBuilder(str(tmp_path / "cache"))


def test_lists_every_tag_with_its_digest_and_size(cache: CacheBuilder) -> None:
    alpine = cache.image("library/alpine", "3.19", os.urandom(1000), os.urandom(2000))
    tool = cache.image("org/tool", "1", os.urandom(3000))

    result = invoke("ls", "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE"]
    assert lines[1].split()[:3] == ["library/alpine", "3.19", str(alpine.digest)]
    assert lines[2].split()[:3] == ["org/tool", "1", str(tool.digest)]
    assert "total:" in lines[-1]


def test_a_tags_size_is_its_manifests_and_blobs_and_shared_blobs_count_once(cache: CacheBuilder) -> None:
    base = cache.blob(os.urandom(5000))
    one = cache.image("org/app", "1", base, os.urandom(100))
    two = cache.image("org/app", "2", base, os.urandom(200))
    other = cache.image("org/other", "1", base)

    listing = invoke_json("ls", "--cache-dir", cache.root)

    by_tag = {(r["repository"], t["tag"]): t for r in listing["repositories"] for t in r["tags"]}
    assert by_tag["org/app", "1"]["size"] == one.size
    assert by_tag["org/app", "2"]["size"] == two.size
    assert by_tag["org/app", "1"]["digest"] == str(one.digest)
    app = next(r for r in listing["repositories"] if r["repository"] == "org/app")
    assert app["size"] == one.size + two.size - base.size
    assert listing["size"] == one.size + two.size + other.size - 2 * base.size


def test_an_index_counts_every_cached_platform(cache: CacheBuilder) -> None:
    image = cache.index(
        "org/multi",
        "latest",
        {"linux/amd64": [os.urandom(700)], "linux/arm64/v8": [os.urandom(900)]},
        attestation=True,
    )

    listing = invoke_json("ls", "--cache-dir", cache.root)

    (repository,) = listing["repositories"]
    (tag,) = repository["tags"]
    assert tag["digest"] == str(image.digest)
    assert tag["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert tag["size"] == image.size


def test_a_repository_argument_lists_only_it_and_knows_docker_hubs_library_rule(
    cache: CacheBuilder,
) -> None:
    alpine = cache.image("library/alpine", "latest", os.urandom(10))
    cache.image("org/tool", "1", os.urandom(10))

    for name in ("alpine", "library/alpine", "docker.io/library/alpine"):
        result = invoke("ls", name, "--cache-dir", cache.root)
        assert result.exit_code == 0, result.output
        assert str(alpine.digest) in result.stdout
        assert "org/tool" not in result.stdout


def test_ls_multi_on_docker_hub_lists_library_multi(cache: CacheBuilder) -> None:
    platforms = {"linux/amd64": [os.urandom(10)], "linux/arm64": [os.urandom(10)]}
    multi = cache.index("library/multi", "latest", platforms)

    result = invoke("ls", "multi", "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    row = result.stdout.splitlines()[1].split()
    assert row == ["library/multi", "latest", str(multi.digest), *human_size(multi.size).split()]


def test_ls_of_a_one_word_name_outside_docker_hub_says_to_name_it_in_full(cache: CacheBuilder) -> None:
    # Only Docker Hub's clients and mirror put one-word names under library/;
    # another registry's library/multi is not multi.
    local = CacheBuilder(cache.root, registry="registry.local_5000")
    local.image("library/multi", "latest", os.urandom(10))

    result = invoke("ls", "multi", "--cache-dir", cache.root)

    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no tags of 'multi' in the cache (registry.local_5000 has library/multi: only Docker "
        "Hub's one-word names mean library/, so give the full name)\n"
    )
    assert invoke("ls", "library/multi", "--cache-dir", cache.root).exit_code == 0


def test_a_tag_whose_manifest_is_not_cached_shows_no_size(cache: CacheBuilder) -> None:
    # A HEAD taught the mirror the tag; nobody pulled the manifest.
    image = cache.image("org/app", "1", os.urandom(10))
    os.unlink(cache.manifest_path(image.top))

    listing = invoke_json("ls", "--cache-dir", cache.root)

    (tag,) = listing["repositories"][0]["tags"]
    assert tag["digest"] == str(image.digest)
    assert tag["size"] is None and tag["cached"] is False
    assert invoke("ls", "--cache-dir", cache.root).stdout.splitlines()[1].split()[-1] == "-"


def test_registries_are_told_apart_and_can_be_picked(cache: CacheBuilder) -> None:
    cache.image("library/alpine", "latest", os.urandom(10))
    local = CacheBuilder(cache.root, registry="registry.local_5000")
    local.image("team/app", "1", os.urandom(10))

    both = invoke("ls", "--cache-dir", cache.root)
    assert both.stdout.splitlines()[0].split()[0] == "REGISTRY"
    assert "registry.local_5000" in both.stdout and "docker.io" in both.stdout

    picked = invoke("ls", "--cache-dir", cache.root, "--registry", "registry.local_5000")
    assert "team/app" in picked.stdout and "library/alpine" not in picked.stdout

    unknown = invoke("ls", "--cache-dir", cache.root, "--registry", "quay.io")
    assert unknown.exit_code == 2
    assert "no registry 'quay.io'" in unknown.output and "docker.io" in unknown.output


def test_an_unknown_repository_is_an_error(cache: CacheBuilder) -> None:
    cache.image("org/tool", "1", os.urandom(10))

    result = invoke("ls", "org/nothing", "--cache-dir", cache.root)

    assert result.exit_code == 1
    assert "no tags of 'org/nothing'" in result.output


def test_an_empty_cache_says_so(cache: CacheBuilder) -> None:
    result = invoke("ls", "--cache-dir", cache.root)
    assert result.exit_code == 0
    assert result.stdout.strip() == "no tags in the cache"


def test_a_missing_cache_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke("ls", "--cache-dir", str(tmp_path / "nowhere"))

    assert result.exit_code == 2
    assert "no cache directory" in result.output and "nowhere" in result.output
    assert "Traceback" not in result.output


def test_files_that_are_not_where_the_store_puts_them_are_ignored(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    stray = os.path.join(os.path.dirname(cache.blob_path(image.blobs[0])), "notes.txt")
    Path(stray).write_text("hello")
    # A well-named file in the wrong shard directory is not content either.
    misplaced = os.path.join(cache.root, "docker.io", "blobs", "sha256", "zz", "0" * 64)
    os.makedirs(os.path.dirname(misplaced))
    Path(misplaced).write_bytes(b"x")

    stats = invoke_json("stats", "--cache-dir", cache.root, "--no-metrics")

    assert stats["registries"][0]["blobs"]["count"] == len(image.blobs)


def test_ls_and_purge_take_a_registry_before_the_name(cache: CacheBuilder) -> None:
    """`mirrorproxy ls ghcr.io/owner/app`: the registry's part of the cache,
    whatever the other registries hold under the same name."""
    hub = cache.image("owner/app", "1", os.urandom(10))
    ghcr = CacheBuilder(cache.root, registry="ghcr.io")
    theirs = ghcr.image("owner/app", "1", os.urandom(20))

    listed = invoke("ls", "ghcr.io/owner/app", "--cache-dir", cache.root)
    purged = invoke("purge", "ghcr.io/owner/app:1", "--cache-dir", cache.root)

    assert listed.exit_code == 0, listed.output
    (row,) = [line.split() for line in listed.stdout.splitlines() if "owner/app" in line and str(theirs.digest) in line]
    assert str(hub.digest) not in listed.stdout
    assert purged.exit_code == 0, purged.output
    assert not os.path.exists(ghcr.tag_path("owner/app", "1"))
    assert os.path.exists(cache.tag_path("owner/app", "1"))
