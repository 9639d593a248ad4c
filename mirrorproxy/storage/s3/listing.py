"""The bucket's content as the filesystem's walk lists a directory's
(`storage.layout.ContentFile` and `TagFile`, the object's key for a path),
for tools without a reactor (the admin command): blocking botocore calls.

Only what sits exactly where `keys` puts it is listed.  A blob's time is
its last use: its newest marker, else its upload.  A manifest's media type
is its object's Content-Type, so no type objects are ever listed.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...registry.names import Digest
from ..layout import BLOB, MANIFEST, ContentFile, TagFile, tag_named
from .bucket import Bucket
from .keys import BLOBS, MANIFESTS, USED

_KEY_KINDS = {BLOB: BLOBS, MANIFEST: MANIFESTS}
# Where the keys put a registry's tag records.
_REPOSITORIES, _TAGS = "repositories/", "/_tags/"


def content(bucket: Bucket, registry: str, kind: str) -> Iterator[ContentFile]:
    """The blobs (`BLOB`) or manifests (`MANIFEST`) of `registry`, in key order."""
    key_kind = _KEY_KINDS[kind]
    used = last_uses(bucket, registry) if kind == BLOB else {}
    for listed in bucket.listing(bucket.keys.kind(registry, key_kind)):
        digest = bucket.keys.content_at(listed.key, registry, key_kind)
        if digest is not None:
            when = max(used.get(digest, listed.modified), listed.modified)
            yield ContentFile(registry, kind, digest, listed.key, listed.size, when)


def last_uses(bucket: Bucket, registry: str) -> dict[Digest, float]:
    """Each marked blob's newest last-use marker."""
    used: dict[Digest, float] = {}
    for listed in bucket.listing(bucket.keys.kind(registry, USED)):
        marked = bucket.keys.marker_at(listed.key, registry)
        if marked is not None:
            digest, when = marked
            used[digest] = max(when, used.get(digest, when))
    return used


def tags(bucket: Bucket, registry: str) -> Iterator[TagFile]:
    """The tag records of `registry`, in key order."""
    top = bucket.keys.registry(registry) + _REPOSITORIES
    for listed in bucket.listing(top):
        repository, found, name = listed.key[len(top) :].rpartition(_TAGS)
        if not found:
            continue
        named = tag_named(repository, name)
        if named is not None and bucket.keys.tag(registry, repository, *named) == listed.key:
            yield TagFile(repository, *named, listed.key)
