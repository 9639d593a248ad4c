"""A pull the way dockerd does one, as plain HTTP requests: ping ``/v2/``,
HEAD the tag's manifest, GET the manifest by digest, GET the config and
every layer. One persistent connection; every answer is checked."""

from __future__ import annotations

import http.client
import json

from attrs import define, field

from tests.integration.harness.oci import HOST, OCI_INDEX
from tests.integration.harness.publish import ACCEPT_MANIFESTS

TIMEOUT = 60.0
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


class PullFailed(Exception):
    pass


@define(eq=False)
class Puller:
    host: str
    port: int
    _connection: http.client.HTTPConnection | None = field(default=None, init=False)

    def _request(self, method: str, path: str, accept: bool = False) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
            try:
                self._connection.request(method, path, headers={"Accept": ACCEPT_MANIFESTS} if accept else {})
                response = self._connection.getresponse()
                body = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, body
            except (http.client.HTTPException, ConnectionError):
                # A server may close an idle keep-alive connection: reconnect once.
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _expect(self, method: str, path: str, accept: bool = False) -> tuple[dict[str, str], bytes]:
        status, headers, body = self._request(method, path, accept)
        if status != 200:
            raise PullFailed(f"{method} {path}: {status} {body[:200]!r}")
        return headers, body

    def pull(self, name: str, tag: str) -> None:
        self._expect("GET", "/v2/")
        headers, _ = self._expect("HEAD", f"/v2/{name}/manifests/{tag}", accept=True)
        digest = headers.get("docker-content-digest")
        if not digest:
            raise PullFailed(f"HEAD {name}:{tag}: no Docker-Content-Digest")
        _, body = self._expect("GET", f"/v2/{name}/manifests/{digest}", accept=True)
        manifest = json.loads(body)
        if manifest.get("mediaType") in (OCI_INDEX, DOCKER_MANIFEST_LIST):
            (chosen,) = [
                m for m in manifest["manifests"]
                if m.get("platform", {}).get("architecture") == HOST.architecture
            ]
            _, body = self._expect("GET", f"/v2/{name}/manifests/{chosen['digest']}", accept=True)
            manifest = json.loads(body)
        for blob in [manifest["config"], *manifest["layers"]]:
            _, data = self._expect("GET", f"/v2/{name}/blobs/{blob['digest']}")
            if len(data) != blob["size"]:
                raise PullFailed(f"blob {blob['digest']}: {len(data)} bytes, expected {blob['size']}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
