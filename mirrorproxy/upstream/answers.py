"""What upstream answered, as values the cache keeps or streams."""

from __future__ import annotations

from attrs import field, frozen
from twisted.web.iweb import IResponse

from ..registry.names import Digest


@frozen
class FetchedManifest:
    body: bytes = field(repr=False)
    media_type: str
    digest: Digest


@frozen
class ManifestHead:
    digest: Digest | None
    media_type: str | None
    size: int | None
    # The whole manifest, when upstream was asked by GET (it refuses HEADs).
    fetched: FetchedManifest | None = None
    # Upstream's OCI-Subject header: the digest of the manifest's subject.
    subject: Digest | None = None


@frozen
class TagsPage:
    body: bytes = field(repr=False)
    link: str | None


@frozen
class ReferrersPage:
    """An image index of the manifests whose subject is a digest."""

    body: bytes = field(repr=False)
    # OCI-Filters-Applied: the filters upstream applied (e.g. artifactType).
    filters_applied: str | None


def header(response: IResponse, name: bytes) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


def content_length(response: IResponse) -> int | None:
    """The body's length: a HEAD answer's header, or what Twisted's client
    took out of a GET answer's headers into `length`."""
    value = header(response, b"content-length")
    if value is not None:
        return int(value) if value.isdigit() else None
    length = response.length
    return length if isinstance(length, int) else None
