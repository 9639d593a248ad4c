"""Upstream's manifest and referrers answers, checked and made values.

Nothing here touches the network: the client hands over a response (and the
body it read), and gets back what the cache may keep, or UpstreamInvalid
saying why not.
"""

from __future__ import annotations

import hashlib

from twisted.logger import Logger
from twisted.web.iweb import IResponse

from ..registry.documents import MANIFEST_TYPES, DocumentInvalid, check_manifest
from ..registry.mediatypes import OCI_INDEX, accepts, manifest_media_type
from ..registry.names import Digest
from .answers import FetchedManifest, ManifestHead, ReferrersPage, content_length, header
from .errors import UpstreamInvalid

log = Logger()

# Filters a referrers answer may say it applied (the spec defines one).
_KNOWN_FILTERS = frozenset({"artifactType"})


def _digest_in(response: IResponse, name: bytes) -> Digest | None:
    text = header(response, name)
    if not text:
        return None
    try:
        return Digest.parse(text.strip())
    except ValueError:
        return None


def manifest_head(response: IResponse, accept: list[str]) -> ManifestHead:
    """What a HEAD answer says of a manifest, as far as it can be relied on."""
    media_type = manifest_media_type(header(response, b"content-type"), b"")
    if media_type not in MANIFEST_TYPES or not accepts(accept, media_type):
        # Not an answer to rely on: a GET will say what it is.
        media_type = None
    return ManifestHead(
        _digest_in(response, b"docker-content-digest"),
        media_type,
        content_length(response),
        subject=_digest_in(response, b"oci-subject"),
    )


def verified_manifest(
    response: IResponse, body: bytes, repository: str, reference: str | Digest
) -> FetchedManifest:
    """The manifest a GET answered, once its bytes match every digest
    claimed for them and it has the shape of its type."""
    digest = Digest(hashlib.sha256(body).hexdigest())
    claimed = _digest_in(response, b"docker-content-digest")
    wanted = reference if isinstance(reference, Digest) else None
    if claimed is not None and claimed != digest:
        raise UpstreamInvalid(
            f"manifest {repository}:{reference} hashes to {digest}, upstream says {claimed}"
        )
    if wanted is not None and wanted != digest:
        log.error(
            "upstream sent wrong bytes for manifest {repository}@{digest}: got {actual}",
            repository=repository,
            digest=str(wanted),
            actual=str(digest),
        )
        raise UpstreamInvalid(f"upstream manifest does not match {wanted}")
    media_type = manifest_media_type(header(response, b"content-type"), body)
    where = f"{repository}@{reference}" if wanted is not None else f"{repository}:{reference}"
    try:
        check_manifest(body, media_type or "")
    except DocumentInvalid as e:
        log.error("upstream's manifest {where} refused: {reason}", where=where, reason=str(e))
        raise UpstreamInvalid(f"upstream's manifest {where} refused: {e}") from None
    assert media_type is not None
    return FetchedManifest(body, media_type, digest)


def referrers_page(response: IResponse, body: bytes, repository: str, subject: Digest) -> ReferrersPage:
    """A referrers answer, once it is an OCI image index (whatever generic
    Content-Type it came with), with the filters upstream says it applied."""
    where = f"{repository}@{subject}"
    media_type = manifest_media_type(header(response, b"content-type"), body)
    try:
        if media_type != OCI_INDEX:
            raise DocumentInvalid(f"upstream sent {media_type or 'no media type'}, not an image index")
        check_manifest(body, OCI_INDEX)
    except DocumentInvalid as e:
        log.error("upstream's referrers of {where} refused: {reason}", where=where, reason=str(e))
        raise UpstreamInvalid(f"upstream's referrers of {where} refused: {e}") from None
    applied = [f.strip() for f in (header(response, b"oci-filters-applied") or "").split(",")]
    known = ",".join(f for f in applied if f in _KNOWN_FILTERS)
    return ReferrersPage(body, known or None)
