"""Building OCI image layouts of random content, and describing them.

An image here is real enough for dockerd to unpack: gzipped tar layers of
random files, a config whose ``rootfs.diff_ids`` are the digests of the
uncompressed tars, manifests, and for several platforms an image index. The
returned ``Image`` holds every digest a test compares against.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from platform import machine

from attrs import frozen

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MiB = 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@frozen
class Blob:
    digest: str
    size: int
    media_type: str


@frozen
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def as_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


LINUX_AMD64 = Platform("linux", "amd64")
LINUX_ARM64 = Platform("linux", "arm64", "v8")


def host_and_foreign_platform() -> tuple[Platform, Platform]:
    """The platform dockerd here picks from an index, and one it does not."""
    if machine() in ("aarch64", "arm64"):
        return LINUX_ARM64, LINUX_AMD64
    return LINUX_AMD64, LINUX_ARM64


HOST, FOREIGN = host_and_foreign_platform()


@frozen
class PlatformImage:
    """One platform's manifest, with its config and layers."""

    platform: Platform
    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]

    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)


@frozen
class Image:
    """What was built and (once pushed) where: the digests tests compare.

    ``digest`` is what the tag points at: the index for a multi-platform
    image, otherwise the single manifest.
    """

    name: str
    tag: str
    digest: str
    media_type: str
    platforms: tuple[PlatformImage, ...]

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    def for_platform(self, platform: Platform) -> PlatformImage:
        (found,) = [p for p in self.platforms if p.platform == platform]
        return found

    def blobs(self) -> tuple[Blob, ...]:
        return tuple(b for p in self.platforms for b in p.blobs())


class LayoutWriter:
    """Writes blobs into an OCI image layout directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob(self, data: bytes, media_type: str) -> Blob:
        digest = sha256_digest(data)
        (self.directory / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
        return Blob(digest, len(data), media_type)

    def json_blob(self, document: object, media_type: str) -> Blob:
        return self.blob(json.dumps(document, indent=2).encode(), media_type)

    def index_json(self, top: Blob, tag: str, platform: Platform | None) -> None:
        descriptor = _descriptor(top)
        if platform is not None:
            descriptor["platform"] = platform.as_json()
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
        (self.directory / "index.json").write_text(json.dumps(index, indent=2))


def _descriptor(blob: Blob) -> dict[str, object]:
    return {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}


def random_layer(size: int, label: str) -> tuple[bytes, str]:
    """A gzipped tar holding one file of ``size`` random bytes, and the
    digest of the uncompressed tar (the config's diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("data")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        member = tarfile.TarInfo(f"data/{label}.bin")
        member.size = size
        member.mode = 0o644
        tar.addfile(member, io.BytesIO(os.urandom(size)))
    tar_bytes = raw.getvalue()
    # Random data does not compress; level 1 keeps building fast.
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), sha256_digest(tar_bytes)


def _platform_image(
    writer: LayoutWriter, platform: Platform, layer_sizes: tuple[int, ...]
) -> PlatformImage:
    layers, diff_ids = [], []
    for number, size in enumerate(layer_sizes):
        data, diff_id = random_layer(size, f"{platform.architecture}-{number}")
        layers.append(writer.blob(data, OCI_LAYER_GZIP))
        diff_ids.append(diff_id)
    config = writer.json_blob(
        {
            **platform.as_json(),
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"random layer {n}"} for n in range(len(layers))],
        },
        OCI_CONFIG,
    )
    manifest = writer.json_blob(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(config),
            "layers": [_descriptor(layer) for layer in layers],
        },
        OCI_MANIFEST,
    )
    return PlatformImage(platform, manifest, config, tuple(layers))


def build_image(
    directory: Path,
    name: str,
    tag: str,
    platforms: dict[Platform, tuple[int, ...]],
) -> Image:
    """An OCI layout in ``directory`` tagged ``tag``: one platform gives a
    plain manifest, several give an image index. ``platforms`` maps each
    platform to its layer sizes in bytes."""
    writer = LayoutWriter(directory)
    images = tuple(_platform_image(writer, p, sizes) for p, sizes in platforms.items())
    if len(images) == 1:
        (only,) = images
        writer.index_json(only.manifest, tag, only.platform)
        return Image(name, tag, only.manifest.digest, OCI_MANIFEST, images)
    index = writer.json_blob(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {**_descriptor(i.manifest), "platform": i.platform.as_json()} for i in images
            ],
        },
        OCI_INDEX,
    )
    writer.index_json(index, tag, None)
    return Image(name, tag, index.digest, OCI_INDEX, images)
