"""Where the S3 store keeps things in its bucket: the filesystem's layout
(`storage.layout`) as object keys, under the location's prefix.

Keys under ``PREFIX``::

    cache-stamp                                  rewritten when content is removed
    probes/<uuid>                                written and deleted to prove writes work
    <registry>/blobs/sha256/<ab>/<hex>           layers and configs, verified
    <registry>/manifests/sha256/<ab>/<hex>       manifests, exact bytes; the media
                                                 type is the object's Content-Type
    <registry>/repositories/<name>/_tags/<tag>[@<variant>]   tag records (JSON)
    <registry>/used/sha256/<ab>/<hex>/<seconds>  the blob's last use, in the key

A manifest's type is its object's Content-Type, so manifest and type arrive
together in one PUT.  A blob's last use is written in a marker's key, which a
listing returns, so eviction weighs every blob with one walk and no read per
blob; a blob without a marker was last used when it was uploaded.  An object
is content only where these functions would put it: anything else in the
bucket is never counted, listed or evicted.
"""

from __future__ import annotations

from attrs import frozen

from ...registry.names import Digest
from .location import S3Location

STAMP = "cache-stamp"
PROBES = "probes/"
BLOBS, MANIFESTS, USED = "blobs", "manifests", "used"
_ALGORITHM = "sha256"
_HEX = frozenset("0123456789abcdef")
_VARIANT = "@"


@frozen
class Keys:
    location: S3Location

    @property
    def prefix(self) -> str:
        return self.location.prefix

    @property
    def stamp(self) -> str:
        return self.prefix + STAMP

    def probe(self, token: str) -> str:
        return f"{self.prefix}{PROBES}{token}"

    def registry(self, registry: str) -> str:
        """Above everything of `registry`."""
        return f"{self.prefix}{registry}/"

    def kind(self, registry: str, kind: str) -> str:
        """Above every blob, manifest or marker of `registry`."""
        return f"{self.prefix}{registry}/{kind}/{_ALGORITHM}/"

    def content(self, registry: str, kind: str, digest: Digest) -> str:
        return f"{self.kind(registry, kind)}{digest.hex[:2]}/{digest.hex}"

    def blob(self, registry: str, digest: Digest) -> str:
        return self.content(registry, BLOBS, digest)

    def manifest(self, registry: str, digest: Digest) -> str:
        return self.content(registry, MANIFESTS, digest)

    def markers(self, registry: str, digest: Digest) -> str:
        """Above the last-use markers of one blob."""
        return self.content(registry, USED, digest) + "/"

    def marker(self, registry: str, digest: Digest, when: float) -> str:
        return f"{self.markers(registry, digest)}{int(when)}"

    def tag(self, registry: str, repository: str, tag: str, variant: str | None = None) -> str:
        name = tag if variant is None else f"{tag}{_VARIANT}{variant}"
        return f"{self.prefix}{registry}/repositories/{repository}/_tags/{name}"

    # -- reading a listing back -------------------------------------------------

    def registry_of(self, common_prefix: str) -> str | None:
        """The registry a listing's common prefix (``PREFIX<registry>/``) names."""
        name = common_prefix[len(self.prefix) :].rstrip("/")
        return name if name and "/" not in name and name != PROBES.rstrip("/") else None

    def content_at(self, key: str, registry: str, kind: str) -> Digest | None:
        """The digest of the blob or manifest at `key`, if it is exactly where one goes."""
        return self._digest_under(key, self.kind(registry, kind))

    def marker_at(self, key: str, registry: str) -> tuple[Digest, float] | None:
        """The blob and the last use a marker at `key` records, if it is one."""
        above, _, seconds = key.rpartition("/")
        digest = self._digest_under(above, self.kind(registry, USED))
        if digest is None or not seconds.isdigit():
            return None
        return digest, float(seconds)

    def _digest_under(self, key: str, top: str) -> Digest | None:
        if not key.startswith(top):
            return None
        shard, _, name = key[len(top) :].partition("/")
        if len(name) != 64 or not _HEX.issuperset(name) or shard != name[:2]:
            return None
        return Digest(name)
