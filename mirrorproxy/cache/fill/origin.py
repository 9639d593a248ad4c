"""Where a fill's bytes come from.

Upstream's client is one origin; a node of a cluster may also fill from the
shared bucket or from the node already fetching the blob.  Whatever the
origin, the fill verifies the bytes against their digest before anything is
committed or any client sees a clean end.
"""

from __future__ import annotations

from typing import Protocol

from twisted.web.iweb import IResponse

from ...registry.names import Digest


class BlobOrigin(Protocol):
    async def get_blob(self, repository: str, digest: Digest, start: int = 0) -> IResponse:
        """A response whose body the caller must deliver or discard.

        From `start` on, a 206 whose body begins at `start`, or a 200 with
        the whole blob (the caller skips what it has); errors as the
        upstream client raises them (`mirrorproxy.upstream.errors`).
        """
