"""Where in S3 a cache lives (``s3://BUCKET/PREFIX``), and how to reach the
server: a parsed value, with a one-line error for a URL that is not one."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from attrs import frozen

# S3's rules for bucket names: 3 to 63 lowercase letters, digits, dots and
# hyphens, starting and ending with a letter or digit, not an IP address.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")
# A prefix is plain path segments: nothing that reads differently once
# quoted, and no empty, "." or ".." segment a key could not round-trip.
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


class S3LocationInvalid(ValueError):
    """Not an ``s3://BUCKET/PREFIX`` URL the store can use."""


@frozen
class S3Location:
    """A bucket, and the prefix (empty, or ending in ``/``) every key of the
    cache starts with, so several caches can share one bucket."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise S3LocationInvalid(f"{url!r} is not an S3 location: expected s3://BUCKET/PREFIX")
        if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
            raise S3LocationInvalid(
                f"{url!r}: an S3 location is s3://BUCKET/PREFIX, without credentials, port, query or fragment"
            )
        bucket = parts.netloc
        if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IP_ADDRESS.fullmatch(bucket):
            raise S3LocationInvalid(
                f"{url!r}: {bucket!r} is not a bucket name "
                "(3 to 63 lowercase letters, digits, dots and hyphens)"
            )
        # "s3://b", "s3://b/" and "s3://b/p/" are fine; "s3://b//p" is not.
        segments = parts.path.split("/")[1:]
        if segments and segments[-1] == "":
            segments = segments[:-1]
        for segment in segments:
            if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
                raise S3LocationInvalid(
                    f"{url!r}: the prefix may hold only letters, digits, '.', '_' and '-' "
                    "between single slashes"
                )
        prefix = "".join(f"{s}/" for s in segments)
        return cls(bucket, prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@frozen
class S3Endpoint:
    """How to reach the server: its URL (None for AWS itself, found from
    the region) and the region requests are signed for."""

    url: str | None = None
    region: str = "us-east-1"
