"""Cache directories for the admin command's tests, written by the real store.

Blobs, manifests and tag records go through `FilesystemStore`'s own write
paths (spool, commit, rename) with blocking calls run inline, so the files
are laid out exactly as the service lays them out.  Images are small OCI
manifests and indexes of random blobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from mirrorproxy.registry.mediatypes import OCI_INDEX, OCI_MANIFEST
from mirrorproxy.registry.names import Digest
from mirrorproxy.storage.filesystem import FilesystemStore
from mirrorproxy.storage.values import TagRecord

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
HUB = "docker.io"


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of a store coroutine whose I/O ran inline."""
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


def digest_of(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


@frozen
class Built:
    """A manifest or blob written to the cache: its digest, size and bytes."""

    digest: Digest
    size: int
    media_type: str
    data: bytes = field(repr=False)

    def descriptor(self, platform: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if platform is not None:
            parts = platform.split("/")
            out["platform"] = {"os": parts[0], "architecture": parts[1]}
            if len(parts) > 2:
                out["platform"]["variant"] = parts[2]
        return out


@frozen
class BuiltImage:
    """What a tag points at, and every file it brought into the cache."""

    top: Built
    manifests: tuple[Built, ...]
    blobs: tuple[Built, ...]

    @property
    def digest(self) -> Digest:
        return self.top.digest

    @property
    def size(self) -> int:
        files = {b.digest: b.size for b in self.blobs}
        return sum(m.size for m in self.manifests) + sum(files.values())


@define
class CacheBuilder:
    root: str
    registry: str = HUB
    store: FilesystemStore = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.store = FilesystemStore(self.root, maybeDeferred)
        self.store.prepare()

    def blob(self, data: bytes, media_type: str = OCI_LAYER) -> Built:
        digest = digest_of(data)
        spool = run(self.store.new_spool())
        os.write(spool.fd, data)
        run(self.store.commit_blob(spool, self.registry, digest))
        return Built(digest, len(data), media_type, data)

    def manifest(self, document: dict[str, Any], media_type: str) -> Built:
        body = json.dumps(document, indent=3).encode()
        digest = digest_of(body)
        run(self.store.write_manifest(self.registry, digest, body, media_type))
        return Built(digest, len(body), media_type, body)

    def tag(self, repository: str, tag: str, target: Built, learnt: float | None = None) -> None:
        when = time.time() if learnt is None else learnt
        record = TagRecord(target.digest, target.media_type, target.size, when)
        run(self.store.write_tag(self.registry, repository, tag, record))

    def image_manifest(self, layers: Sequence[bytes | Built], config: bytes | None = None) -> BuiltImage:
        """An OCI image manifest, its config and layers (bytes are written;
        Built ones are already in the cache and shared)."""
        config_blob = self.blob(config or os.urandom(64), OCI_CONFIG)
        layer_blobs = [layer if isinstance(layer, Built) else self.blob(layer) for layer in layers]
        manifest = self.manifest(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config_blob.descriptor(),
                "layers": [layer.descriptor() for layer in layer_blobs],
            },
            OCI_MANIFEST,
        )
        return BuiltImage(manifest, (manifest,), (config_blob, *layer_blobs))

    def image(self, repository: str, tag: str, *layers: bytes | Built) -> BuiltImage:
        """A single-platform image, tagged."""
        image = self.image_manifest(layers)
        self.tag(repository, tag, image.top)
        return image

    def index(
        self,
        repository: str,
        tag: str,
        platforms: dict[str, Sequence[bytes | Built]],
        attestation: bool = False,
    ) -> BuiltImage:
        """A multi-platform image: an OCI index over one manifest per platform."""
        images = {p: self.image_manifest(layers) for p, layers in platforms.items()}
        entries = [i.top.descriptor(p) for p, i in images.items()]
        manifests = [m for i in images.values() for m in i.manifests]
        blobs = [b for i in images.values() for b in i.blobs]
        if attestation:
            # As buildx writes it: platform unknown/unknown, a reference-type annotation.
            extra = self.image_manifest([os.urandom(32)])
            entry = extra.top.descriptor("unknown/unknown")
            entry["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
            entries.append(entry)
            manifests += extra.manifests
            blobs += extra.blobs
        top = self.manifest({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX)
        self.tag(repository, tag, top)
        return BuiltImage(top, (top, *manifests), tuple(blobs))

    # -- where the store put things -----------------------------------------

    def blob_path(self, built: Built) -> str:
        return self.store.blob_path(self.registry, built.digest)

    def manifest_path(self, built: Built) -> str:
        return self.store.manifest_path(self.registry, built.digest)

    def tag_path(self, repository: str, tag: str) -> str:
        return self.store.tag_path(self.registry, repository, tag)

    def stamp(self) -> bytes | None:
        """What running mirrors read to learn that an admin command removed files."""
        try:
            with open(self.store.layout.stamp_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def age(self, path: str, seconds: float) -> None:
        """Make a file look `seconds` old (written or used that long ago)."""
        when = time.time() - seconds
        os.utime(path, (when, when))


def flip_bit(path: str, offset: int = 0) -> None:
    """Corrupt one bit of a file in place, as a failing disk would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
