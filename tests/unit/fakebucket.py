"""A bucket in memory for the admin command's tests: a fake of botocore's
S3 client (the calls `storage.s3.bucket.Bucket` makes, answered and failed
as S3 answers and fails them), under the real `Bucket`, filled by the real
`S3Store` (manifests, tag records) so keys are laid out as a node lays them.

Listings come in small pages, so the walk's pagination is exercised.
"""

from __future__ import annotations

import io
import time
from datetime import datetime, timezone
from typing import Any

from attrs import define, field
from botocore.exceptions import ClientError, ResponseStreamingError
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from mirrorproxy.storage.s3 import ops
from mirrorproxy.storage.s3.bucket import Bucket
from mirrorproxy.storage.s3.location import S3Location
from mirrorproxy.storage.s3.store import S3Store

from .cachebuilder import OCI_LAYER, Built, CacheBuilder, digest_of

PAGE = 3


def _error(status: int, code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@define
class FakeObject:
    data: bytes
    content_type: str
    modified: float


@define
class _BrokenBody:
    """A body whose connection drops after `after` bytes."""

    data: bytes
    after: int
    _position: int = 0

    def read(self, size: int = -1) -> bytes:
        if self._position >= self.after:
            raise ResponseStreamingError(error="Connection broken: IncompleteRead")
        chunk = self.data[self._position : min(self.after, self._position + size)]
        self._position += len(chunk)
        return chunk

    def close(self) -> None:
        pass

    def __enter__(self) -> _BrokenBody:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@define
class FakeS3Client:
    bucket: str
    objects: dict[str, FakeObject] = field(factory=dict)
    # Keys whose GET breaks after this many bytes of body.
    broken: dict[str, int] = field(factory=dict)
    # Every call made, by operation.
    calls: list[str] = field(factory=list)
    # Read objects and keys deleted, for assertions.
    deleted: list[str] = field(factory=list)

    def _check(self, operation: str, bucket: str) -> None:
        self.calls.append(operation)
        if bucket != self.bucket:
            raise _error(404, "NoSuchBucket", operation)

    def _found(self, operation: str, key: str) -> FakeObject:
        found = self.objects.get(key)
        if found is None:
            raise _error(404, "NoSuchKey" if operation == "GetObject" else "404", operation)
        return found

    def head_bucket(self, Bucket: str) -> dict[str, Any]:
        self._check("HeadBucket", Bucket)
        return {}

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self._check("HeadObject", Bucket)
        found = self._found("HeadObject", Key)
        return {"ContentLength": len(found.data), "LastModified": _when(found.modified)}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self._check("GetObject", Bucket)
        found = self._found("GetObject", Key)
        body: Any = io.BytesIO(found.data)
        if Key in self.broken:
            body = _BrokenBody(found.data, self.broken[Key])
        return {
            "Body": body,
            "ContentLength": len(found.data),
            "ContentType": found.content_type,
            "LastModified": _when(found.modified),
        }

    def put_object(
        self, Bucket: str, Key: str, Body: bytes, ContentType: str | None = None, IfNoneMatch: str | None = None
    ) -> dict[str, Any]:
        self._check("PutObject", Bucket)
        if IfNoneMatch == "*" and Key in self.objects:
            raise _error(412, "PreconditionFailed", "PutObject")
        self.objects[Key] = FakeObject(bytes(Body), ContentType or "binary/octet-stream", time.time())
        return {}

    def delete_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self._check("DeleteObject", Bucket)
        if self.objects.pop(Key, None) is not None:
            self.deleted.append(Key)
        return {}

    def list_objects_v2(
        self, Bucket: str, Prefix: str = "", Delimiter: str | None = None, ContinuationToken: str | None = None
    ) -> dict[str, Any]:
        self._check("ListObjectsV2", Bucket)
        entries: list[tuple[str, FakeObject | None]] = []
        seen: set[str] = set()
        for key in sorted(self.objects):
            if not key.startswith(Prefix):
                continue
            if Delimiter and Delimiter in key[len(Prefix) :]:
                common = Prefix + key[len(Prefix) :].split(Delimiter)[0] + Delimiter
                if common not in seen:
                    seen.add(common)
                    entries.append((common, None))
                continue
            entries.append((key, self.objects[key]))
        start = int(ContinuationToken or 0)
        page = entries[start : start + PAGE]
        answer: dict[str, Any] = {
            "Contents": [
                {"Key": k, "Size": len(o.data), "LastModified": _when(o.modified)} for k, o in page if o is not None
            ],
            "CommonPrefixes": [{"Prefix": k} for k, o in page if o is None],
            "IsTruncated": start + PAGE < len(entries),
        }
        if answer["IsTruncated"]:
            answer["NextContinuationToken"] = str(start + PAGE)
        return answer

    # -- for the tests ------------------------------------------------------------

    def age(self, key: str, seconds: float) -> None:
        self.objects[key].modified = time.time() - seconds

    def corrupt(self, key: str, offset: int = 0) -> None:
        data = bytearray(self.objects[key].data)
        data[offset] ^= 0x01
        self.objects[key].data = bytes(data)


def _when(seconds: float) -> datetime:
    # S3 times are whole seconds.
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc)


def fake_bucket(url: str = "s3://mirror/cache/") -> Bucket:
    location = S3Location.parse(url)
    return Bucket(FakeS3Client(location.bucket), location, None)


@define
class BucketBuilder(CacheBuilder):
    """CacheBuilder's images, written to a bucket as a cluster node writes
    them (manifests and tag records by the S3 store; blobs at their keys)."""

    bucket: Bucket = field(kw_only=True, factory=fake_bucket)

    def __attrs_post_init__(self) -> None:
        # The S3 store's manifest and tag writes, with blocking calls run inline.
        self.store = S3Store(self.bucket, self.root, maybeDeferred, None, Clock())  # type: ignore[assignment]

    @property
    def client(self) -> FakeS3Client:
        return self.bucket.client  # type: ignore[no-any-return]

    def blob(self, data: bytes, media_type: str = OCI_LAYER) -> Built:
        digest = digest_of(data)
        self.bucket.put_small(self.bucket.keys.blob(self.registry, digest), data)
        return Built(digest, len(data), media_type, data)

    def used(self, built: Built, seconds_ago: float) -> None:
        """A last-use marker, as a node writes when it serves the blob."""
        ops.set_last_use(self.bucket, self.registry, built.digest, time.time() - seconds_ago)

    def blob_key(self, built: Built) -> str:
        return self.bucket.keys.blob(self.registry, built.digest)

    def manifest_key(self, built: Built) -> str:
        return self.bucket.keys.manifest(self.registry, built.digest)

    def tag_key(self, repository: str, tag: str) -> str:
        return self.bucket.keys.tag(self.registry, repository, tag)

    def stamp(self) -> bytes | None:
        found = self.client.objects.get(self.bucket.keys.stamp)
        return None if found is None else found.data

    def keys(self) -> set[str]:
        return set(self.client.objects)

