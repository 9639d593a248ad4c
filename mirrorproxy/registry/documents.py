"""What upstream's manifests and tag lists must look like to be relayed or cached.

A manifest fetched by tag has no digest to check it against, so an upstream
(or whatever answers in its place: a captive portal, a login page, a
redirect somewhere else) could hand clients anything, and the cache would
keep it for the tag.  A manifest is accepted only with a manifest media type,
as JSON carrying the fields its type requires; a tag list only in the
registry's JSON shape.  Bytes are never re-serialised: what passes is relayed
exactly as it came.
"""

from __future__ import annotations

import json
from typing import Any

from .mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
)

# Media type -> (schemaVersion, fields that must hold a JSON object, fields
# that must hold a JSON array).
_SHAPES: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    OCI_MANIFEST: (2, ("config",), ("layers",)),
    DOCKER_MANIFEST: (2, ("config",), ("layers",)),
    OCI_INDEX: (2, (), ("manifests",)),
    DOCKER_MANIFEST_LIST: (2, (), ("manifests",)),
    DOCKER_SCHEMA1: (1, (), ("fsLayers",)),
    DOCKER_SCHEMA1_SIGNED: (1, (), ("fsLayers",)),
}
MANIFEST_TYPES = frozenset(_SHAPES)


class DocumentInvalid(ValueError):
    """Upstream's document is not what it claims to be; the message says how."""


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        raise DocumentInvalid(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise DocumentInvalid(f"{what} is not a JSON object")
    return document


def check_manifest(body: bytes, media_type: str) -> None:
    """DocumentInvalid unless `body` is a manifest of `media_type`."""
    shape = _SHAPES.get(media_type)
    if shape is None:
        raise DocumentInvalid(f"upstream sent {media_type or 'no media type'}, not a manifest")
    version, objects, arrays = shape
    document = _json_object(body, f"the {media_type} manifest")
    if document.get("schemaVersion") != version:
        raise DocumentInvalid(f"the {media_type} manifest has schemaVersion {document.get('schemaVersion')!r}")
    declared = document.get("mediaType")
    if declared is not None and declared != media_type:
        raise DocumentInvalid(f"a manifest served as {media_type} says it is {declared!r}")
    for name in objects:
        if not isinstance(document.get(name), dict):
            raise DocumentInvalid(f"the {media_type} manifest has no {name} object")
    for name in arrays:
        if not isinstance(document.get(name), list):
            raise DocumentInvalid(f"the {media_type} manifest has no {name} array")


def check_tag_list(body: bytes) -> None:
    """DocumentInvalid unless `body` is ``{"name": ..., "tags": [...]}``."""
    document = _json_object(body, "the tag list")
    if not isinstance(document.get("name"), str):
        raise DocumentInvalid("the tag list has no name")
    if "tags" not in document:
        raise DocumentInvalid("the tag list has no tags")
    tags = document["tags"]
    # distribution answers null for a repository without tags.
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise DocumentInvalid("the tag list's tags are not a list of strings")
