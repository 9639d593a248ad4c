"""The S3 store's control plane: listings, heads, deletes, small objects and
multipart bookkeeping, as blocking botocore calls.

The store runs each method in its thread pool; an admin command, which has
no reactor, may call them directly.  Every failure is an `S3Error`, an
OSError with a one-line reason, so the cache treats a bucket that refuses a
write like a disk that refuses one.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

from attrs import frozen

# botocore ships no type information.
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from .keys import Keys
from .location import S3Endpoint, S3Location

# Fields of a listing that mean "not there" or "already there".
_ABSENT = {"404", "NoSuchKey", "NotFound"}
_PRECONDITION_FAILED = {"412", "PreconditionFailed"}


# The code of an S3Error for a server that could not be reached at all.
UNREACHABLE = "Unreachable"


class S3Error(OSError):
    """A request to the bucket failed; `strerror` says which and why, on one line."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.strerror = reason
        self.code = code


@frozen
class Listed:
    key: str
    size: int
    modified: float


def open_bucket(session: Any, endpoint: S3Endpoint, location: S3Location) -> Bucket:
    """The bucket at `location` through a botocore client for `endpoint`,
    with the session's credentials (the environment, the profile, the config
    files: the AWS way); the byte path signs with the same credentials.

    Path-style addressing works with every S3-compatible server (no DNS per
    bucket); checksums only when an operation requires them, as servers
    other than AWS do not all read the newer checksum trailers; presigned
    URLs signed with SigV4.
    """
    client = session.create_client(
        "s3",
        endpoint_url=endpoint.url,
        region_name=endpoint.region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )
    return Bucket(client, location, session.get_credentials())


def b64_sha256(hex_digest: str) -> str:
    """A sha256 as S3's checksum headers spell it."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


@frozen
class Bucket:
    client: Any
    location: S3Location
    # botocore credentials (None when none were found); refreshable ones renew themselves.
    credentials: Any

    @property
    def keys(self) -> Keys:
        return Keys(self.location)

    @property
    def name(self) -> str:
        return self.location.bucket

    def _call(self, operation: str, key: str, **params: Any) -> Any:
        try:
            return getattr(self.client, operation)(Bucket=self.name, **params)
        except ClientError as e:
            error = e.response.get("Error", {})
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.get("Code") or status)
            message = error.get("Message") or "no message"
            reason = f"S3 {operation} s3://{self.name}/{key}: {status} {code}: {message}"
            raise S3Error(reason, code) from None
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as e:
            # The server out of reach, not refusing us: an outage, not a mistake.
            raise S3Error(f"S3 {operation} s3://{self.name}/{key}: {e}", UNREACHABLE) from None
        except BotoCoreError as e:
            raise S3Error(f"S3 {operation} s3://{self.name}/{key}: {e}") from None

    def check_exists(self) -> None:
        """S3Error unless the bucket is there (some servers would make it on a PUT)."""
        try:
            self._call("head_bucket", "")
        except S3Error as e:
            if e.code in ("404", "NoSuchBucket"):  # a HEAD's answer has no body to name it
                raise S3Error(f"S3 head_bucket s3://{self.name}/: 404 NoSuchBucket", "NoSuchBucket") from None
            raise

    # -- objects ------------------------------------------------------------------

    def head(self, key: str) -> int | None:
        """The object's size; None if there is none at `key`."""
        found = self.head_listed(key)
        return None if found is None else found.size

    def head_listed(self, key: str) -> Listed | None:
        """The object at `key` as a listing shows it; None if there is none."""
        try:
            found = self._call("head_object", key, Key=key)
        except S3Error as e:
            if e.code in _ABSENT:
                return None
            raise
        return Listed(key, int(found["ContentLength"]), found["LastModified"].timestamp())

    def get_object(self, key: str) -> Any:
        """The object at `key` as botocore answers it, its body not yet read
        (the caller reads or closes it); None if absent."""
        try:
            return self._call("get_object", key, Key=key)
        except S3Error as e:
            if e.code in _ABSENT:
                return None
            raise

    def get_small(self, key: str) -> tuple[bytes, str] | None:
        """A small object's bytes and Content-Type; None if absent."""
        found = self.get_object(key)
        if found is None:
            return None
        with found["Body"] as body:
            return body.read(), str(found.get("ContentType") or "")

    def put_small(
        self, key: str, data: bytes, content_type: str | None = None, if_absent: bool = False
    ) -> bool:
        """Put a small object whole (signed with its sha256); False if
        `if_absent` and one was already there."""
        params: dict[str, Any] = {"Key": key, "Body": data}
        if content_type is not None:
            params["ContentType"] = content_type
        if if_absent:
            params["IfNoneMatch"] = "*"
        try:
            self._call("put_object", key, **params)
        except S3Error as e:
            if if_absent and e.code in _PRECONDITION_FAILED:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Key=key)

    def listing(self, prefix: str) -> Iterator[Listed]:
        """Every object under `prefix`, in key order."""
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", prefix, Prefix=prefix, **token)
            for found in page.get("Contents", []):
                yield Listed(found["Key"], int(found["Size"]), found["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def registries(self) -> list[str]:
        """The registries the bucket holds anything of, by name."""
        names: list[str] = []
        token: dict[str, str] = {}
        while True:
            prefix = self.keys.prefix
            page = self._call("list_objects_v2", prefix, Prefix=prefix, Delimiter="/", **token)
            for common in page.get("CommonPrefixes", []):
                name = self.keys.registry_of(common["Prefix"])
                if name is not None:
                    names.append(name)
            if not page.get("IsTruncated"):
                return sorted(names)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    # -- multipart uploads -------------------------------------------------------

    def start_upload(self, key: str) -> str:
        created = self._call("create_multipart_upload", key, Key=key, ChecksumAlgorithm="SHA256")
        return str(created["UploadId"])

    def complete_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> bool:
        """Complete the upload unless an object is already at `key`: False then."""
        try:
            self._call(
                "complete_multipart_upload",
                key,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except S3Error as e:
            if e.code in _PRECONDITION_FAILED:
                return False
            raise
        return True

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._call("abort_multipart_upload", key, Key=key, UploadId=upload_id)

    # -- the byte path's needs --------------------------------------------------------

    def presigned_get(self, key: str, expires: int) -> str:
        """A URL anyone holding it may GET the object at `key` with, for `expires` seconds."""
        try:
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.name, "Key": key}, ExpiresIn=expires
            )
        except BotoCoreError as e:
            raise S3Error(f"S3 presign s3://{self.name}/{key}: {e}") from None
        return url

    def frozen_credentials(self) -> Any:
        """The client's current keys (refreshed if they expire)."""
        if self.credentials is None:
            raise S3Error(
                "S3: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            )
        return self.credentials.get_frozen_credentials()

    # -- for tools that change the bucket behind a running mirror -------------------

    def stamp_changed(self) -> None:
        """Tell running mirrors on this bucket that content was removed."""
        self.put_small(self.keys.stamp, uuid.uuid4().hex.encode())
