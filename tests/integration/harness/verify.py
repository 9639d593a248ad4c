"""Comparing what a client ended up with to what was pushed upstream."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .oci import Image


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def assert_dir_copy(out: Path, image: Image) -> None:
    """``skopeo copy --all ... dir:OUT`` holds exactly the pushed bytes.

    The dir transport names the top manifest ``manifest.json``, each
    platform's manifest ``HEX.manifest.json`` (for an index) and each blob
    by its hex digest.
    """
    assert file_digest(out / "manifest.json") == image.digest
    for platform in image.platforms:
        if len(image.platforms) > 1:
            path = out / f"{platform.manifest.digest.removeprefix('sha256:')}.manifest.json"
            assert file_digest(path) == platform.manifest.digest, platform.platform
        for blob in platform.blobs():
            path = out / blob.digest.removeprefix("sha256:")
            assert path.stat().st_size == blob.size, blob
            assert file_digest(path) == blob.digest, blob
