"""Following another node's fill: a GET of the blob from the node holding
its claim, marked as a peer's, so that node answers from what it holds or
is fetching and never fetches on our behalf."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IResponse

from ...registry.names import Digest
from ...upstream.answers import header
from ...upstream.bodies import discard_body

log = Logger()

PEER_HEADER = "X-Mirrorproxy-Peer"


async def peer_blob(
    http: Any, node_id: str, url: str, registry: str, repository: str, digest: Digest, start: int
) -> IResponse | None:
    """The blob from the node at `url` from `start` on (a 200, or a 206 that
    starts there), or None if that node cannot give it (it holds nothing,
    or is gone)."""
    headers = {PEER_HEADER: [node_id]}
    if start:
        headers["Range"] = [f"bytes={start}-"]
    target = f"{url}/v2/{repository}/blobs/{digest}?ns={registry}"
    try:
        response: IResponse = await http.get(target, headers=headers, unbuffered=True)
    except Exception as e:
        log.info("peer {url} cannot give {digest}: {error}", url=url, digest=str(digest), error=str(e))
        return None
    ranged_right = response.code == 206 and (header(response, b"content-range") or "").startswith(
        f"bytes {start}-"
    )
    if response.code == 200 or ranged_right:
        return response
    discard_body(response)
    log.info("peer {url} answered {code} for {digest}", url=url, code=response.code, digest=str(digest))
    return None
