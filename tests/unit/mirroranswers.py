"""What a running mirror answers the admin command, for `staticserver` to
serve: a registry's blobs, manifests, indexes and tags (`Registry`), and the
metrics text its Prometheus endpoint writes (`exposition`)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

from mirrorproxy.registry.mediatypes import OCI_INDEX, OCI_MANIFEST

from .staticserver import Answer, StaticServer


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """Builds a mirror's answers: blobs, manifests, indexes, tags."""

    def __init__(self, server: StaticServer, name: str = "org/app") -> None:
        self.server, self.name = server, name

    def blob(self, size: int, outcome: str = "MISS") -> dict[str, Any]:
        data = os.urandom(size)
        self.server.answers[f"/v2/{self.name}/blobs/{digest(data)}"] = Answer(200, {"X-Cache": outcome}, data)
        return {"mediaType": "application/octet-stream", "digest": digest(data), "size": size}

    def manifest(self, document: dict[str, Any], media_type: str, tag: str | None = None) -> dict[str, Any]:
        body = json.dumps(document).encode()
        answer = Answer(200, {"Content-Type": media_type, "Docker-Content-Digest": digest(body)}, body)
        self.server.answers[f"/v2/{self.name}/manifests/{digest(body)}"] = answer
        if tag is not None:
            self.server.answers[f"/v2/{self.name}/manifests/{tag}"] = answer
        return {"mediaType": media_type, "digest": digest(body), "size": len(body)}

    def config(self, platform: str) -> dict[str, Any]:
        """An image config saying what platform the image is for."""
        os_name, architecture, *variant = platform.split("/")
        document = {"os": os_name, "architecture": architecture, "rootfs": {"type": "layers"}}
        if variant:
            document["variant"] = variant[0]
        data = json.dumps(document).encode()
        self.server.answers[f"/v2/{self.name}/blobs/{digest(data)}"] = Answer(200, {"X-Cache": "MISS"}, data)
        media_type = "application/vnd.oci.image.config.v1+json"
        return {"mediaType": media_type, "digest": digest(data), "size": len(data)}

    def image(
        self, *sizes: int, tag: str | None = None, platform: str | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        config = self.config(platform) if platform is not None else self.blob(64)
        blobs = [config] + [self.blob(size) for size in sizes]
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blobs[0], "layers": blobs[1:]}
        return self.manifest(document, OCI_MANIFEST, tag), blobs

    def index(self, tag: str, entries: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
        manifests = [{**descriptor, "platform": platform} for descriptor, platform in entries]
        document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.manifest(document, OCI_INDEX, tag)


def exposition(**counts: int) -> bytes:
    """Metrics text as the service's prometheus_client writes it."""
    registry = CollectorRegistry()
    requests = Counter(
        "mirrorproxy_cache_requests", "Answers by cache outcome.", ["kind", "outcome"], registry=registry
    )
    for key, count in counts.items():
        kind, outcome = key.split("_")
        requests.labels(kind, outcome.upper()).inc(count)
    return generate_latest(registry)
