"""A mirror's client, for `prefetch`: what docker or containerd send it, nothing more.

Synchronous HTTP (http.client), one connection per request, so any number of
threads may share a `MirrorClient`.  Manifests are asked for with the full
Accept list a modern client sends; every body is checked against its digest
as it arrives, and blob bodies are streamed and dropped, never held.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from attrs import field, frozen

from ..registry.descriptors import MAX_MANIFEST_SIZE
from ..registry.mediatypes import ALL_MANIFEST_TYPES, manifest_media_type
from ..registry.names import Digest

CHUNK = 256 * 1024
# Seconds of silence (connect, headers, or in the middle of a body) before
# giving up: a cold blob streams as upstream sends it, so this is not a cap
# on the whole transfer.
DEFAULT_TIMEOUT = 60.0
ACCEPT = ", ".join(ALL_MANIFEST_TYPES)
USER_AGENT = "mirrorproxy-prefetch"
_ERROR_BODY_LIMIT = 64 * 1024


class PullFailed(Exception):
    """One manifest or blob could not be pulled, with a reason for a person."""


class MirrorUnreachable(PullFailed):
    """No connection to the mirror at all."""


class BadMirrorURL(ValueError):
    """``--mirror`` is not an http:// or https:// URL."""


@frozen
class Manifest:
    digest: Digest
    media_type: str
    body: bytes = field(repr=False)


@frozen
class BlobReceived:
    size: int
    # The mirror's X-Cache: HIT, MISS or JOIN.
    outcome: str
    # The bytes, when asked to keep them and there were few enough.
    body: bytes | None = field(default=None, repr=False)


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadMirrorURL(f"mirror must be an http:// or https:// URL, not {url!r}")
    try:
        parts.port  # noqa: B018 (reading it is what checks it)
    except ValueError:
        raise BadMirrorURL(f"bad port in mirror URL {url!r}") from None
    return url.rstrip("/")


@frozen
class MirrorClient:
    url: str = field(converter=_checked_url)
    timeout: float = DEFAULT_TIMEOUT
    # (username, password) for a mirror that asks for Basic credentials
    # (an htpasswd file); sent with every request, as docker does.
    credentials: tuple[str, str] | None = field(default=None, repr=False)

    def check(self) -> None:
        """``GET /v2/``, as every client starts; raise if the mirror is not there."""
        status, _, body = self._small("GET", "/v2/", {})
        if status != 200:
            raise PullFailed(f"{self.url}/v2/ answered {_error_text(status, body)}")

    def manifest(self, repository: str, reference: str | Digest) -> Manifest:
        """GET a manifest by tag or digest, verified against its digest."""
        path = f"/v2/{repository}/manifests/{reference}"
        status, headers, body = self._small("GET", path, {"Accept": ACCEPT}, MAX_MANIFEST_SIZE)
        if status != 200:
            raise PullFailed(f"manifest {repository}:{reference}: {_error_text(status, body)}")
        actual = Digest(hashlib.sha256(body).hexdigest())
        claimed = reference if isinstance(reference, Digest) else _header_digest(headers)
        if claimed is not None and claimed != actual:
            raise PullFailed(
                f"manifest {repository}:{reference}: body hashes to {actual}, not {claimed}"
            )
        media_type = manifest_media_type(headers.get("content-type"), body)
        if media_type is None:
            raise PullFailed(f"manifest {repository}:{reference}: not a manifest")
        return Manifest(actual, media_type, body)

    def blob(
        self,
        repository: str,
        digest: Digest,
        size: int,
        on_bytes: Callable[[int], None] = lambda n: None,
        keep: int = 0,
    ) -> BlobReceived:
        """GET a blob, hash it as it streams, drop the bytes (or return them,
        if there are at most `keep`).

        `size` is the descriptor's (-1: unknown); both it and the digest
        must match what arrives.
        """
        what = f"blob {repository}@{digest}"
        connection = self._connect()
        try:
            response = self._send(connection, "GET", f"/v2/{repository}/blobs/{digest}", {})
            if response.status != 200:
                body = response.read(_ERROR_BODY_LIMIT)
                raise PullFailed(f"{what}: {_error_text(response.status, body)}")
            hasher, received = hashlib.sha256(), 0
            kept: list[bytes] | None = [] if keep > 0 else None
            try:
                while chunk := response.read(CHUNK):
                    hasher.update(chunk)
                    received += len(chunk)
                    on_bytes(len(chunk))
                    if kept is not None:
                        kept.append(chunk)
                        if received > keep:
                            kept = None
            except (OSError, http.client.HTTPException) as e:
                raise PullFailed(f"{what}: broken off after {received} bytes: {_describe(e)}") from None
            outcome = response.getheader("X-Cache") or "-"
        finally:
            connection.close()
        if size >= 0 and received != size:
            raise PullFailed(f"{what}: {received} bytes, the manifest says {size}")
        if hasher.hexdigest() != digest.hex:
            raise PullFailed(f"{what}: body hashes to sha256:{hasher.hexdigest()}")
        return BlobReceived(received, outcome, b"".join(kept) if kept is not None else None)

    # -- HTTP -----------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            connection.connect()
        except OSError as e:
            connection.close()
            raise MirrorUnreachable(f"cannot connect to the mirror at {self.url}: {_describe(e)}") from None
        return connection

    def _send(
        self, connection: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        prefix = urlsplit(self.url).path
        headers = {"User-Agent": USER_AGENT, **headers}
        if self.credentials is not None:
            pair = ":".join(self.credentials).encode("utf-8")
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        try:
            connection.request(method, prefix + path, headers=headers)
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            raise PullFailed(f"{method} {path}: {_describe(e)}") from None

    def _small(
        self, method: str, path: str, headers: dict[str, str], limit: int = _ERROR_BODY_LIMIT
    ) -> tuple[int, dict[str, str], bytes]:
        """A request whose answer is small enough to hold: status, headers, body."""
        connection = self._connect()
        try:
            response = self._send(connection, method, path, headers)
            try:
                body = response.read(limit + 1)
            except (OSError, http.client.HTTPException) as e:
                raise PullFailed(f"{method} {path}: {_describe(e)}") from None
            if len(body) > limit:
                raise PullFailed(f"{method} {path}: answer larger than {limit} bytes")
            found = {name.lower(): value for name, value in response.getheaders()}
            return response.status, found, body
        finally:
            connection.close()


def _header_digest(headers: dict[str, str]) -> Digest | None:
    value = headers.get("docker-content-digest")
    if not value:
        return None
    try:
        return Digest.parse(value.strip())
    except ValueError:
        raise PullFailed(f"the mirror sent a malformed Docker-Content-Digest {value!r}") from None


def _error_text(status: int, body: bytes) -> str:
    """``404 MANIFEST_UNKNOWN: manifest unknown`` from a registry error body."""
    try:
        errors = json.loads(body)["errors"]
        first = errors[0]
        return f"{status} {first['code']}: {first.get('message', '')}".rstrip(": ")
    except (ValueError, KeyError, IndexError, TypeError):
        return f"HTTP {status}"


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
