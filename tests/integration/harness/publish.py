"""Putting test content on the upstream registry as the pusher.

Images go up with skopeo from a fresh OCI layout and are read back to check
that the registry holds exactly the digests we built. Raw blobs (for tests
that need one large blob and nothing else) go up through the registry's
upload API.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

from attrs import define, frozen

from .client import RegistryClient
from .oci import OCI_INDEX, OCI_MANIFEST, Image, Platform, build_image
from .registry import UpstreamRegistry
from .skopeo import Skopeo
from .tokens import PUSHER

ACCEPT_MANIFESTS = ", ".join(
    [
        OCI_INDEX,
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@frozen
class RawBlob:
    """A blob pushed on its own: its digest and exact bytes."""

    name: str
    digest: str
    data: bytes

    @property
    def path(self) -> str:
        return f"/v2/{self.name}/blobs/{self.digest}"


@define
class Publisher:
    upstream: UpstreamRegistry
    skopeo: Skopeo
    work_dir: Path

    def image(self, name: str, tag: str, platforms: dict[Platform, tuple[int, ...]]) -> Image:
        """Build a random image, push every platform of it, and confirm the
        tag upstream resolves to the digest we built."""
        layout = self.work_dir / f"layout-{secrets.token_hex(4)}"
        try:
            image = build_image(layout, name, tag, platforms)
            self.skopeo.push_layout(layout, image, self.upstream.host, PUSHER)
        finally:
            # The Image keeps every digest; the layout's bytes are upstream now.
            shutil.rmtree(layout, ignore_errors=True)
        answer = RegistryClient(self.upstream.url).request(
            "HEAD", f"/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT_MANIFESTS}
        )
        found = answer.headers.get("docker-content-digest")
        if answer.status != 200 or found != image.digest:
            raise RuntimeError(
                f"pushed {image.reference} as {image.digest}, upstream says {answer.status} {found}"
            )
        return image

    def blob(self, name: str, size: int) -> RawBlob:
        """Upload ``size`` random bytes as a blob of repository ``name``."""
        data = os.urandom(size)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client = RegistryClient(self.upstream.url, PUSHER)
        scope = f"repository:{name}:pull,push"
        # The POST meets the 401 and fetches the push token the PUT reuses.
        started = client.request("POST", f"/v2/{name}/blobs/uploads/", scope=scope)
        if started.status != 202:
            raise RuntimeError(f"upload start: {started.status} {started.body!r}")
        location = started.headers["location"]
        separator = "&" if "?" in location else "?"
        finished = client.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            headers={"Content-Type": "application/octet-stream"},
            body=data,
            scope=scope,
        )
        if finished.status != 201:
            raise RuntimeError(f"upload finish: {finished.status} {finished.body!r}")
        return RawBlob(name, digest, data)
