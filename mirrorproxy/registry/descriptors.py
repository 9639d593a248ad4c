"""What a manifest refers to: the descriptors inside image manifests and indexes.

Read-only parsing for the admin command: `inventory` follows these references
to learn what a tag keeps alive, `prefetch` to learn what to pull.  Only
digests, sizes, media types and platforms are read; the bytes themselves are
never re-serialised (a manifest's digest is the hash of its exact bytes).
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from .mediatypes import DOCKER_MANIFEST_LIST, OCI_INDEX
from .names import Digest, DigestInvalid, DigestUnsupported

# Manifests are at most 4 MiB (the distribution spec's limit, which Docker
# Hub enforces); anything bigger in the manifest store is not one.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024

# docker buildx marks the provenance/SBOM entries of an index this way, with
# platform unknown/unknown; they are not images anyone runs.
_REFERENCE_TYPE = "vnd.docker.reference.type"
_ATTESTATION = "attestation-manifest"


class ManifestUnreadable(ValueError):
    """Bytes in the manifest store that are not a manifest we can follow."""


@frozen
class Platform:
    """``os/architecture[/variant]``, as an index entry or ``--platform`` says it."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform must be os/arch or os/arch/variant, not {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, document: object) -> Platform | None:
        if not isinstance(document, dict):
            return None
        os_name, architecture = document.get("os"), document.get("architecture")
        if not isinstance(os_name, str) or not isinstance(architecture, str):
            return None
        variant = document.get("variant")
        return cls(os_name, architecture, variant if isinstance(variant, str) and variant else None)

    @property
    def is_unknown(self) -> bool:
        return self.os == "unknown" and self.architecture == "unknown"

    def matches(self, wanted: Platform) -> bool:
        """Whether this entry is what ``--platform wanted`` asks for.

        A wanted platform without a variant takes any variant, as docker
        does for ``linux/arm`` or ``linux/arm64``.
        """
        if (self.os, self.architecture) != (wanted.os, wanted.architecture):
            return False
        return wanted.variant is None or _variant(self) == _variant(wanted)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _variant(platform: Platform) -> str | None:
    # arm64 images mostly omit their variant; v8 is the only one there is.
    if platform.architecture == "arm64" and platform.variant is None:
        return "v8"
    return platform.variant


@frozen
class Descriptor:
    """One reference: to a child manifest of an index, or to a blob."""

    digest: Digest
    size: int
    media_type: str
    platform: Platform | None = None
    attestation: bool = False


@frozen
class References:
    """Everything one manifest points at.

    An index has child `manifests`; an image manifest has `blobs` (its config
    first, then its layers).  Anything else (an artifact we do not know)
    refers to nothing we could follow.
    """

    is_index: bool
    manifests: tuple[Descriptor, ...] = ()
    blobs: tuple[Descriptor, ...] = ()


def references(body: bytes, media_type: str | None = None) -> References:
    """Parse a manifest's references; raise ManifestUnreadable if it has none
    that make sense (not JSON, or descriptors without digests)."""
    if len(body) > MAX_MANIFEST_SIZE:
        raise ManifestUnreadable(f"{len(body)} bytes is too large for a manifest")
    try:
        document = json.loads(body)
    except ValueError as e:
        raise ManifestUnreadable(f"not JSON: {e}") from None
    if not isinstance(document, dict):
        raise ManifestUnreadable("not a JSON object")
    declared = document.get("mediaType") or media_type
    if "manifests" in document or declared in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        children = _list(document, "manifests")
        return References(True, manifests=tuple(_descriptor(c) for c in children))
    if "layers" in document or "config" in document:
        config = document.get("config")
        blobs = [config] if config is not None else []
        blobs += _list(document, "layers")
        return References(False, blobs=tuple(_descriptor(b) for b in blobs))
    if "fsLayers" in document:
        # Docker schema 1 names its layers without sizes or types.
        return References(False, blobs=tuple(_schema1_layer(f) for f in _list(document, "fsLayers")))
    return References(False)


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise ManifestUnreadable(f"{key!r} is not a list")
    return value


def _digest(text: object) -> Digest:
    if not isinstance(text, str):
        raise ManifestUnreadable(f"descriptor digest {text!r} is not a string")
    try:
        return Digest.parse(text)
    except (DigestInvalid, DigestUnsupported) as e:
        raise ManifestUnreadable(str(e)) from None


def _descriptor(document: object) -> Descriptor:
    if not isinstance(document, dict):
        raise ManifestUnreadable("a descriptor is not a JSON object")
    size = document.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestUnreadable(f"descriptor size {size!r} is not a byte count")
    annotations = document.get("annotations")
    attestation = isinstance(annotations, dict) and annotations.get(_REFERENCE_TYPE) == _ATTESTATION
    return Descriptor(
        _digest(document.get("digest")),
        size,
        str(document.get("mediaType") or ""),
        Platform.from_json(document.get("platform")),
        attestation,
    )


def _schema1_layer(document: object) -> Descriptor:
    if not isinstance(document, dict):
        raise ManifestUnreadable("an fsLayers entry is not a JSON object")
    # Size unknown: -1 tells a reader not to check it.
    return Descriptor(_digest(document.get("blobSum")), -1, "")
