"""Where cached content lives: the only code that knows the cache's layout.

The cache layer speaks to a store through `ICacheStore`; the filesystem
store (`filesystem.FilesystemStore`) is its first implementation, and every
implementation passes the same contract tests (tests/unit/test_storage_contract.py).
The admin command, which works on a cache directory without a reactor, walks
it through the filesystem's `layout.Layout`.

What every store promises:

- **Atomic content.**  A blob, a manifest (with its media type) or a tag
  record is, at its final place, a whole file that was verified before it got
  there, or nothing: a reader never sees half of one, and a failed commit
  leaves nothing behind.
- **Private spools.**  A spool file is the fill's alone until it is
  committed: no reader looks there, it is never listed or counted, and what
  a start finds left in the spool is swept away.
- **Readers outlive changes.**  Committing a spool keeps its descriptor
  open (the caller closes it), so followers reading the spool through
  descriptors from `share` read on; a blob opened before it was removed
  reads to its end.
- **Counting.**  `bytes` and `entries` (blobs and manifests: never tag
  records, media types or spool files) are None until `measure` ran once;
  after that the store keeps them itself: a commit adds what it put in
  place (less what it replaced), a removal through the store subtracts,
  `measure` counts again.  Nobody else edits them.
- **Write health.**  Every write's outcome is recorded in `writes`, which
  /readyz reports.
- **The cache stamp** changes whenever content or tag records were removed
  behind the running service's back (``mirrorproxy gc``, ``purge``,
  ``verify``), so the service forgets what it holds in memory.

Hits need not come as file descriptors: `open_blob` returns an `IOpenBlob`,
which reads at an offset.  A store whose blobs are local files returns an
`IDescriptorBlob`, whose descriptor a response may stream from directly.
"""

from __future__ import annotations

import builtins
from typing import Any

from zope.interface import Attribute, Interface

from ..registry.names import Digest
from .values import Spool, StoredBlob, StoredManifest, TagRecord


class IOpenBlob(Interface):
    """A committed blob, opened for reading: its bytes stay what they were
    when it was opened, whatever happens to the cache meanwhile."""

    size = Attribute("int: the blob's length in bytes.")

    async def read(offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`; fewer only at the end."""

    def close() -> None:
        """Let go of the blob; it cannot be read any more."""


class IDescriptorBlob(IOpenBlob):
    """An open blob backed by a local file, for streaming straight from it."""

    fd = Attribute("int: a descriptor of the blob's file; `close` closes it.")


class ICacheStore(Interface):
    """Blobs and manifests by digest, tag records by name, for each upstream
    (`registry`, the upstream's cache key); see the module's promises."""

    # The count shadows the type in this class: its methods spell it builtins.bytes.
    bytes = Attribute("int | None: bytes of blobs and manifests held; None until measured.")
    entries = Attribute("int | None: blobs and manifests held; None until measured.")
    writes = Attribute("values.WriteHealth: the outcome of the latest write.")

    # -- start-up and health ------------------------------------------------------

    def prepare() -> int:
        """Before the service accepts connections: make the store ready,
        prove it writable (`CacheDirError` if not), sweep the spool; how many
        spool files were swept."""

    async def probe_writable() -> str | None:
        """Why a small write to the store fails now; None if it works."""

    async def measure() -> None:
        """Count what the store holds again (`bytes`, `entries`)."""

    async def cache_stamp() -> builtins.bytes | None:
        """A token that changes when content was removed behind the
        service's back; None if nothing ever was."""

    # -- blobs: hits --------------------------------------------------------------------

    async def open_blob(registry: str, digest: Digest) -> IOpenBlob | None:
        """The committed blob, open for reading; None if the store lacks it."""

    async def blob_size(registry: str, digest: Digest) -> int | None:
        """The committed blob's size; None if the store lacks it."""

    async def mark_used(registry: str, digest: Digest) -> None:
        """Record that the blob was just served (its last use, which eviction
        weighs); a store may keep this coarse.  Absent blobs are ignored."""

    # -- blobs: fills ----------------------------------------------------------------

    async def new_spool() -> Spool:
        """A new, empty spool file, open for reading and writing.  OSError if
        none can be made (recorded in `writes`, unless descriptors ran out)."""

    async def write_spool(spool: Spool, offset: int, chunks: list[builtins.bytes], hasher: Any) -> int:
        """Feed `chunks` to `hasher`, then write them to `spool` at `offset`;
        the bytes written.  `SpoolWriteFailed` if the spool cannot take them,
        after hashing them all the same."""

    def share(fd: int) -> int:
        """A descriptor of its own, for one more reader of the spool open at
        `fd`.  OSError (EMFILE, ENFILE) when none is left: the caller fails
        that one reader, nothing else."""

    async def commit_blob(spool: Spool, registry: str, digest: Digest) -> None:
        """Make the verified `spool` the blob `digest` and count it.  The
        spool's descriptor stays open, the caller's to close.  If it fails,
        the blob is not there, the spool file is gone, and the error is raised
        and recorded in `writes`."""

    async def discard(spool: Spool) -> None:
        """Close the spool's descriptor and remove the spool: nothing of it stays."""

    # -- blobs: eviction --------------------------------------------------------------

    async def stored_blobs() -> list[StoredBlob]:
        """Every committed blob of every registry, with its size and last use."""

    async def remove_blob(registry: str, digest: Digest) -> int | None:
        """Remove a committed blob and uncount it; the bytes freed, or None if
        it was not there."""

    # -- manifests and tag records -----------------------------------------------

    async def read_manifest(registry: str, digest: Digest) -> StoredManifest | None:
        """The manifest's exact bytes and media type; None unless both are held."""

    async def write_manifest(registry: str, digest: Digest, body: builtins.bytes, media_type: str) -> None:
        """Keep a verified manifest with its media type, and count it."""

    async def read_tag(
        registry: str, repository: str, tag: str, variant: str | None = None
    ) -> TagRecord | None:
        """The tag's record (or its `variant`'s); None if absent or unreadable."""

    async def write_tag(
        registry: str, repository: str, tag: str, record: TagRecord, variant: str | None = None
    ) -> None:
        """Keep the tag's record, replacing the one before.  A `variant`
        (the answer to a narrower Accept) is kept beside the tag's own and
        never replaces it."""
