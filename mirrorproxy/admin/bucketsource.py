"""A cluster's bucket as the admin command's `ContentSource`: the S3
store's objects (`storage.s3.listing`), read, streamed and deleted with
blocking botocore calls.

Objects are immutable by digest, so corrupt content cannot be moved aside
as in a directory: it is deleted (with a blob's last-use markers), and the
next request for it is a miss that fetches a good copy.  A delete is made
only if the key still holds the copy judged (same size and upload time).
The bucket failing to answer is no verdict on the content: `NotChecked`.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

import attrs
import botocore.session  # type: ignore[import-untyped]
from attrs import frozen

from ..server.clustersettings import ClusterSettings
from ..storage.layout import BLOB, ContentFile, TagFile
from ..storage.s3 import listing, ops
from ..storage.s3.bucket import Bucket, S3Error, open_bucket
from ..storage.s3.reading import StreamedObject, open_object
from .source import NotChecked, Reading, Usage


def bucket_for(cluster: ClusterSettings) -> Bucket:
    """The bucket a node with these settings shares, with the keys it
    would use: the environment's (the AWS way), else the config file's."""
    assert cluster.storage is not None
    session = botocore.session.get_session()
    if cluster.keys is not None and not os.environ.get("AWS_ACCESS_KEY_ID"):
        session.set_credentials(cluster.keys.access_key_id, cluster.keys.secret_access_key)
    return open_bucket(session, cluster.endpoint, cluster.storage)


@frozen
class BucketSource:
    bucket: Bucket
    kind = "bucket"
    unit = "object"
    # A cluster's nodes keep tag records in their own directories and Redis.
    keeps_all_tags = False

    @property
    def location(self) -> str:
        return str(self.bucket.location)

    def registries(self) -> list[str]:
        return self.bucket.registries()

    def content(self, registry: str, kind: str) -> Iterator[ContentFile]:
        return listing.content(self.bucket, registry, kind)

    def tags(self, registry: str) -> Iterator[TagFile]:
        return listing.tags(self.bucket, registry)

    def read(self, path: str, limit: int) -> bytes | None:
        found = self.bucket.get_small(path)
        return None if found is None else found[0][:limit]

    def read_manifest(self, found: ContentFile, limit: int) -> tuple[bytes, str | None]:
        got = self.bucket.get_small(found.path)
        if got is None:
            raise FileNotFoundError(f"no object {found.path}")
        body, media_type = got
        return body[:limit], media_type or None

    def usage(self) -> dict[str, Usage]:
        return {}  # spools and quarantines are the nodes' own

    # -- removal ---------------------------------------------------------------

    def last_change(self, found: ContentFile) -> float | None:
        if found.kind == BLOB:
            return ops.last_use(self.bucket, found.registry, found.digest)
        listed = self.bucket.head_listed(found.path)
        return None if listed is None else listed.modified

    def remove(self, found: ContentFile, dry_run: bool) -> list[ContentFile]:
        if dry_run or found.kind != BLOB:
            size = self.remove_tag(found.path, dry_run)
        else:
            size = ops.remove_blob(self.bucket, found.registry, found.digest)
        return [] if size is None else [attrs.evolve(found, size=size)]

    def remove_tag(self, path: str, dry_run: bool) -> int | None:
        size = self.bucket.head(path)
        if size is not None and not dry_run:
            self.bucket.delete(path)
        return size

    def stamp_changed(self) -> None:
        self.bucket.stamp_changed()

    # -- verify ----------------------------------------------------------------

    @contextmanager
    def open(self, found: ContentFile) -> Iterator[Reading | None]:
        try:
            streamed = open_object(self.bucket, found.path)
        except S3Error as e:
            raise NotChecked(e.strerror) from None
        if streamed is None:
            yield None
            return
        try:
            yield _StreamReading(streamed)
        finally:
            streamed.close()

    def identity(self, path: str) -> Hashable | None:
        try:
            listed = self.bucket.head_listed(path)
        except S3Error:
            return None
        return None if listed is None else (listed.key, listed.size, listed.modified)

    def set_aside(self, found: ContentFile, identity: Hashable | None) -> str | None:
        if identity is not None and self.identity(found.path) != identity:
            return None
        if found.kind == BLOB:
            if ops.remove_blob(self.bucket, found.registry, found.digest) is None:
                return None
        elif self.remove_tag(found.path, dry_run=False) is None:
            return None
        return "deleted from the bucket"

    def set_aside_tag(self, registry: str, path: str) -> str | None:
        return None if self.remove_tag(path, dry_run=False) is None else "deleted from the bucket"


@frozen
class _StreamReading:
    """A streamed object whose failures are the bucket's, not the content's."""

    _streamed: StreamedObject

    @property
    def identity(self) -> Hashable:
        return self._streamed.identity

    def read(self, size: int) -> bytes:
        try:
            return self._streamed.read(size)
        except S3Error as e:
            raise NotChecked(e.strerror) from None
