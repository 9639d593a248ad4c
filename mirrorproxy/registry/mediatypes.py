"""Manifest media types and the client's ``Accept`` header."""

from __future__ import annotations

import hashlib
import json

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"

# What the mirror asks upstream for when the client said nothing.
ALL_MANIFEST_TYPES = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST]

_GENERIC = {"", "application/json", "text/plain", "application/octet-stream"}


def parse_accept(values: list[str]) -> list[str]:
    """The media types of ``Accept`` header values, parameters dropped."""
    types = []
    for value in values:
        for item in value.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type:
                types.append(media_type)
    return types


def accepts(accepted: list[str], media_type: str) -> bool:
    """Whether a client that sent `accepted` takes a manifest of `media_type`.

    No Accept at all, or a wildcard, takes anything: modern clients list the
    types they want, and the reference registry serves by digest regardless.
    """
    if not accepted:
        return True
    media_type = media_type.lower()
    major = media_type.split("/", 1)[0]
    return any(a in (media_type, "*/*", f"{major}/*") for a in accepted)


def manifest_media_type(content_type: str | None, body: bytes) -> str | None:
    """The manifest's media type: the header, else the document's own field."""
    header = (content_type or "").split(";", 1)[0].strip().lower()
    if header not in _GENERIC:
        return header
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    # OCI documents may omit mediaType; tell an index from a manifest by shape.
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document and "layers" in document:
        return OCI_MANIFEST
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in document else DOCKER_SCHEMA1
    return None


def upstream_accept(accepted: list[str]) -> list[str]:
    """What to ask upstream for on behalf of a client that sent `accepted`.

    A client that takes anything (no Accept, or a wildcard) gets every
    modern type named: registries answer a bare ``*/*`` as a schema 1
    client, and distribution refuses OCI manifests to it.
    """
    if not accepted or any(a.endswith("/*") for a in accepted):
        return ALL_MANIFEST_TYPES + [a for a in accepted if a not in ALL_MANIFEST_TYPES]
    return accepted


def complete_accept(accepted: list[str]) -> bool:
    """Whether an answer to this Accept is a tag's full answer: the client
    takes indexes of both kinds, so nothing narrower was chosen for it."""
    if not accepted:
        return True
    return all(accepts(accepted, t) for t in (OCI_INDEX, DOCKER_MANIFEST_LIST))


def accept_variant(accepted: list[str]) -> str | None:
    """A short name for the set of types a narrower client accepts (its
    answer is recorded apart from the full one); None for a full Accept."""
    if complete_accept(accepted):
        return None
    key = ",".join(sorted(set(accepted)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
