"""Registry errors as clients see them: the spec's JSON envelope and codes.

Modules raise their own exception types; `registry_error` is the one place
that turns them into a status, a code and a message.
"""

from __future__ import annotations

import errno
import json

from attrs import field, frozen

# Error codes from the OCI distribution spec (plus Docker Hub's TOOMANYREQUESTS).
NAME_INVALID = "NAME_INVALID"
NAME_UNKNOWN = "NAME_UNKNOWN"
MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
MANIFEST_INVALID = "MANIFEST_INVALID"
BLOB_UNKNOWN = "BLOB_UNKNOWN"
DIGEST_INVALID = "DIGEST_INVALID"
TAG_INVALID = "TAG_INVALID"
UNSUPPORTED = "UNSUPPORTED"
DENIED = "DENIED"
UNAUTHORIZED = "UNAUTHORIZED"
TOOMANYREQUESTS = "TOOMANYREQUESTS"
RANGE_INVALID = "RANGE_INVALID"
UNAVAILABLE = "UNAVAILABLE"

# Seconds a client is asked to wait when the mirror is out of descriptors.
RETRY_AFTER_BUSY = b"2"


@frozen
class RegistryError(Exception):
    """An error answer: HTTP status, spec code, message, extra headers."""

    status: int
    code: str
    message: str
    detail: object = None
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())

    def body(self) -> bytes:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode("utf-8")


def registry_error(exc: BaseException, kind: str) -> RegistryError:
    """The registry error a client sees for an exception raised serving `kind`.

    `kind` is "manifest", "blob" or "tags": what a 404 is the absence of.
    """
    # Imported here: these modules are below this one, and this is the one
    # place that knows all of their exception types.
    from ..cache.blobs import BlobNotHere
    from ..cache.fill import FillFailed
    from ..registry.names import (
        DigestInvalid,
        DigestUnsupported,
        NameInvalid,
        TagInvalid,
    )
    from ..upstream.errors import (
        ManifestNotAcceptable,
        UpstreamDenied,
        UpstreamNotFound,
        UpstreamRateLimited,
        UpstreamTimeout,
        UpstreamUnavailable,
    )

    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, NameInvalid):
        return RegistryError(400, NAME_INVALID, str(exc))
    if isinstance(exc, TagInvalid):
        return RegistryError(400, TAG_INVALID, str(exc))
    if isinstance(exc, DigestUnsupported):
        return RegistryError(400, UNSUPPORTED, str(exc))
    if isinstance(exc, DigestInvalid):
        return RegistryError(400, DIGEST_INVALID, str(exc))
    if isinstance(exc, BlobNotHere):
        return RegistryError(404, BLOB_UNKNOWN, str(exc))
    if isinstance(exc, UpstreamNotFound):
        default = {"manifest": MANIFEST_UNKNOWN, "blob": BLOB_UNKNOWN}.get(kind, NAME_UNKNOWN)
        code = exc.code if exc.code in (NAME_UNKNOWN, MANIFEST_UNKNOWN, BLOB_UNKNOWN) else default
        return RegistryError(404, code, exc.message or f"{kind} unknown to upstream")
    if isinstance(exc, ManifestNotAcceptable):
        return RegistryError(404, MANIFEST_UNKNOWN, str(exc))
    if isinstance(exc, UpstreamDenied):
        return RegistryError(
            403, DENIED, f"upstream denied access (private or missing repository): {exc}"
        )
    if isinstance(exc, UpstreamRateLimited):
        headers = ((b"Retry-After", exc.retry_after.encode("latin-1")),) if exc.retry_after else ()
        return RegistryError(429, TOOMANYREQUESTS, "upstream rate limit reached", headers=headers)
    if isinstance(exc, UpstreamTimeout):
        return RegistryError(504, UNAVAILABLE, str(exc))
    if isinstance(exc, UpstreamUnavailable):
        return RegistryError(502, UNAVAILABLE, str(exc))
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        # Out of file descriptors: passing, as responses finish.
        return RegistryError(
            503,
            TOOMANYREQUESTS,
            "the mirror is serving too many requests at once; try again shortly",
            headers=((b"Retry-After", RETRY_AFTER_BUSY),),
        )
    if isinstance(exc, FillFailed):
        return RegistryError(502, UNAVAILABLE, f"blob could not be fetched: {exc}")
    return RegistryError(500, UNAVAILABLE, "internal error")
