"""``mirrorproxy verify``: every cached file re-hashed; corrupt ones quarantined."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mirrorproxy.admin.inventory import scan
from mirrorproxy.admin.verify import CHUNK, verify

from .cachebuilder import CacheBuilder, flip_bit
from .clirunner import invoke


@pytest.fixture
def cache(tmp_path: Path) -> CacheBuilder:
    return CacheBuilder(str(tmp_path / "cache"))


def quarantined(cache: CacheBuilder, path: str) -> str:
    relative = os.path.relpath(path, os.path.join(cache.root, cache.registry))
    return os.path.join(cache.root, "quarantine", cache.registry, relative)


def test_a_sound_cache_passes(cache: CacheBuilder) -> None:
    image = cache.index("org/app", "1", {"linux/amd64": [os.urandom(3000)], "linux/arm64": [os.urandom(10)]})

    result = invoke("verify", "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    files = len(image.manifests) + len(image.blobs)
    assert f"checked {files} files" in result.stdout and "all good" in result.stdout
    assert not os.path.exists(os.path.join(cache.root, "quarantine"))


def test_a_flipped_bit_in_a_blob_is_found_named_and_quarantined(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(5000), os.urandom(7000))
    layer = image.blobs[2]
    path = cache.blob_path(layer)
    flip_bit(path, offset=4321)

    result = invoke("verify", "--cache-dir", cache.root)

    assert result.exit_code == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("CORRUPT")]
    assert str(layer.digest) in line and path in line
    assert "hashes to sha256:" in line
    assert not os.path.exists(path)
    target = quarantined(cache, path)
    assert target in line
    corrupt = bytearray(layer.data)
    corrupt[4321] ^= 1
    assert Path(target).read_bytes() == corrupt
    # Everything else is still in place, and a second run finds nothing.
    assert os.path.exists(cache.blob_path(image.blobs[1]))
    assert invoke("verify", "--cache-dir", cache.root).exit_code == 0


def test_a_corrupt_manifest_goes_to_quarantine_with_its_type(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    path = cache.manifest_path(image.top)
    flip_bit(path, offset=5)

    result = invoke("verify", "--cache-dir", cache.root)

    assert result.exit_code == 1
    assert f"CORRUPT manifest {image.digest}" in result.stdout
    target = quarantined(cache, path)
    assert os.path.exists(target) and os.path.exists(target + ".type")
    assert not os.path.exists(path) and not os.path.exists(path + ".type")


def test_a_truncated_blob_is_corrupt(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(2000))
    path = cache.blob_path(image.blobs[1])
    os.truncate(path, 1000)

    result = invoke("verify", "--cache-dir", cache.root)

    assert result.exit_code == 1
    assert "(1000 bytes)" in result.stdout


def test_an_unreadable_tag_record_is_quarantined(cache: CacheBuilder) -> None:
    cache.image("org/app", "1", os.urandom(10))
    path = cache.tag_path("org/app", "1")
    Path(path).write_bytes(b'{"digest": "sha256:nope"')

    result = invoke("verify", "--cache-dir", cache.root)

    assert result.exit_code == 1
    assert "CORRUPT tag org/app:1" in result.stdout
    assert os.path.exists(quarantined(cache, path)) and not os.path.exists(path)


def test_a_second_corruption_of_the_same_file_keeps_the_first_in_quarantine(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(100))
    layer = image.blobs[1]
    path = cache.blob_path(layer)
    for round in range(2):
        cache.blob(layer.data)
        flip_bit(path, offset=round)
        assert invoke("verify", "--cache-dir", cache.root).exit_code == 1
    target = quarantined(cache, path)
    assert os.path.exists(target) and os.path.exists(target + ".1")


def test_a_file_replaced_after_it_was_judged_is_left_alone(cache: CacheBuilder) -> None:
    # The service may commit a fresh copy while verify hashes the old one:
    # the fresh copy must not be what goes to quarantine.
    image = cache.image("org/app", "1", os.urandom(3 * 1024 * 1024))
    layer = image.blobs[1]
    path = cache.blob_path(layer)
    flip_bit(path)
    replaced: list[bool] = []

    def on_bytes(count: int) -> None:
        # The first full chunk is the layer's (the manifest and config are small).
        if count == CHUNK and not replaced:
            replaced.append(True)
            cache.blob(layer.data)  # renamed over the corrupt file

    report = verify(scan(cache.root), jobs=1, on_bytes=on_bytes)

    (finding,) = report.findings
    assert finding.outcome is None
    assert Path(path).read_bytes() == layer.data


def test_a_file_that_vanishes_is_not_corrupt(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    inventory = scan(cache.root)
    os.unlink(cache.blob_path(image.blobs[1]))  # evicted meanwhile

    report = verify(inventory)

    assert report.findings == () and report.vanished == 1


@pytest.mark.parametrize("kind", ["blob", "manifest", "tag"])
def test_a_quarantine_tells_running_mirrors(cache: CacheBuilder, kind: str) -> None:
    # A mirror holding the manifest or tag record in memory would go on
    # answering from it, and never write back the file verify moved away.
    image = cache.image("org/app", "1", os.urandom(10))
    if kind == "tag":
        Path(cache.tag_path("org/app", "1")).write_bytes(b"{")
    else:
        flip_bit(cache.blob_path(image.blobs[1]) if kind == "blob" else cache.manifest_path(image.top))

    assert invoke("verify", "--cache-dir", cache.root).exit_code == 1

    assert cache.stamp() is not None


def test_a_clean_verify_leaves_running_mirrors_alone(cache: CacheBuilder) -> None:
    cache.image("org/app", "1", os.urandom(10))

    assert invoke("verify", "--cache-dir", cache.root).exit_code == 0

    assert cache.stamp() is None


def test_a_tag_whose_manifest_is_not_cached_is_a_warning_not_a_corruption(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    os.unlink(cache.manifest_path(image.top))

    result = invoke("verify", "--cache-dir", cache.root)

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: docker.io: tag org/app:1 names manifest {image.digest}, which is not in the cache; "
        "the next pull of the tag fetches it, and until then gc keeps unreferenced content"
    ]
    assert result.stdout.splitlines()[-1] == "checked 2 files (74 B): none corrupt, 1 warning"
    assert os.path.exists(cache.tag_path("org/app", "1"))


def test_a_tag_whose_manifest_was_just_quarantined_is_warned_about(cache: CacheBuilder) -> None:
    image = cache.image("org/app", "1", os.urandom(10))
    flip_bit(cache.manifest_path(image.top))

    result = invoke("verify", "--cache-dir", cache.root)

    assert result.exit_code == 1
    assert f"warning: docker.io: tag org/app:1 names manifest {image.digest}, which is not in the cache" in (
        result.stderr
    )
