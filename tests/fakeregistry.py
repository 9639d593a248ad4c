"""One fake upstream registry for every unit test, served through StubTreq.

It answers the registry API (read side) for images the test puts in it, with
each registry's habits on demand: Bearer token challenges from an auth host
on the registry's domain (Docker Hub) or from a path of the registry's own
(nvcr.io's ``/proxy_auth``), blob redirects to a CDN host that may refuse
credentials, manifests and blobs moved elsewhere (registry.k8s.io, with a
relative ``Location`` too), manifests without HEAD, ``ratelimit-*`` headers,
the OCI 1.1 referrers API; and misbehaviour (wrong bytes, a body cut short, a
body held back until the test releases it).  It records every request, so
tests can count what reached upstream.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from attrs import define, field
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

REGISTRY_HOST = "registry.fake"
# On the registry's own domain, as auth.docker.io is for registry-1.docker.io:
# the mirror sends its credentials to a token service only there.
AUTH_HOST = "auth.registry.fake"
CDN_HOST = "cdn.fake"
UPSTREAM_URL = f"http://{REGISTRY_HOST}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@define
class Seen:
    """One request that reached the fake upstream."""

    method: str
    host: str
    path: str
    headers: dict[str, str]
    uri: str = ""  # the path with its query


@define(eq=False)
class HeldBody:
    """A blob body sent only as far as the test says."""

    request: Request
    data: bytes
    sent: int = 0

    def send(self, count: int) -> None:
        chunk = self.data[self.sent : self.sent + count]
        self.sent += len(chunk)
        self.request.write(chunk)

    def finish(self) -> None:
        self.send(len(self.data))
        self.request.finish()

    def cut(self) -> None:
        """End the connection mid-body."""
        self.request.channel.transport.loseConnection()


@define(eq=False)
class FakeRegistry(Resource):
    isLeaf = True

    blobs: dict[str, bytes] = field(factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(factory=dict)
    tags: dict[tuple[str, str], str] = field(factory=dict)
    seen: list[Seen] = field(factory=list)
    # Docker Hub habits.
    require_token: bool = False
    token_lifetime: int | None = 300
    issued: int = 0
    redirect_blobs: bool = False
    basic_auth: tuple[str, str] | None = None
    # Misbehaviour on demand, by digest.
    wrong_bytes: dict[str, bytes] = field(factory=dict)
    truncate_at: dict[str, int] = field(factory=dict)
    hold: set[str] = field(factory=set)
    held: dict[str, HeldBody] = field(factory=dict)
    status_override: Callable[[Seen], int | None] | None = None
    # Blobs sent without a Content-Length (chunked), by digest.
    lengthless: set[str] = field(factory=set)
    # Whether blob GETs honour `Range: bytes=N-` (Docker Hub's CDN does).
    honour_ranges: bool = True
    # Blob bodies go out a chunk per `tick`, as from a real network.
    chunk_size: int = 64 * 1024
    streaming: list[HeldBody] = field(factory=list)
    # Answers by exact request path, on any host, instead of the API's:
    # (status, headers, body); e.g. a redirect, or an HTML page.
    canned: dict[str, tuple[int, dict[str, str], bytes]] = field(factory=dict)
    # Bytes written instead of an HTTP answer by exact request path, then the
    # connection is closed: a garbage or cut-off status line.
    raw: dict[str, bytes] = field(factory=dict)
    # Tokens rejected as if revoked (a key rotation upstream).
    revoked_tokens: set[str] = field(factory=set)
    # The token service's answers wait in `held_tokens` until released (or
    # for ever); or it answers with `token_body` instead of a token.
    hold_tokens: bool = False
    held_tokens: list[tuple[Request, bytes]] = field(factory=list)
    token_body: bytes | None = None
    # Challenges sent before the Bearer one, each in a header line of its own.
    extra_challenges: list[str] = field(factory=list)
    # Manifest answers wait in `held_manifests` until released.
    hold_manifests: bool = False
    held_manifests: list[tuple[Request, bytes]] = field(factory=list)
    # Whether manifest answers say their Docker-Content-Digest.
    digest_header: bool = True
    # A tag's manifest for clients that do not accept its own type (an
    # index's platform manifest, as Docker Hub serves old clients): (repository,
    # tag) -> digest.
    narrow_tags: dict[tuple[str, str], str] = field(factory=dict)
    # Content-Length claimed for a blob instead of its true length, by digest.
    claimed_length: dict[str, int] = field(factory=dict)
    # Where the token service is (its host and path are recognised on any
    # host), and the service its challenges name: e.g. nvcr.io's realm on a
    # path of the registry's own host, or a realm on a foreign host.
    realm: str = f"http://{AUTH_HOST}/token"
    service: str = REGISTRY_HOST
    # The CDN (and wherever `moved_to` leads) answers 400 to a request that
    # carries credentials, as S3 does to a second auth mechanism.
    cdn_refuses_credentials: bool = False
    # registry.k8s.io's habit: manifest and blob requests are answered with a
    # 307 to this prefix + their path (absolute, or relative to the registry),
    # where they are served without authentication.
    moved_to: str | None = None
    # Manifest HEADs get this status and no answer (405: no HEAD support).
    manifest_head_status: int | None = None
    # Manifest HEADs that answer 404 although a GET finds the manifest.
    manifest_head_lies: bool = False
    # Docker Hub's pull counter: `ratelimit-remaining` on manifest answers.
    ratelimit_remaining: str | None = None
    # The OCI 1.1 referrers API (otherwise a 404, as Docker Hub answers);
    # `filters` is whether it applies artifactType filters.  Manifest answers
    # then say their subject in OCI-Subject.
    referrers_api: bool = False
    filters: bool = True

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    # -- content ------------------------------------------------------------

    def add_blob(self, data: bytes) -> str:
        digest = sha256(data)
        self.blobs[digest] = data
        return digest

    def add_manifest(self, repository: str, tag: str | None, body: bytes, media_type: str) -> str:
        digest = sha256(body)
        self.manifests[digest] = (body, media_type)
        if tag is not None:
            self.tags[(repository, tag)] = digest
        return digest

    def add_image(self, repository: str, tag: str, layers: list[bytes]) -> tuple[str, bytes]:
        """An OCI image: its manifest digest and bytes."""
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        descriptors = [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": self.add_blob(layer), "size": len(layer)}
            for layer in layers
        ]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.add_blob(config), "size": len(config)},
                "layers": descriptors,
            }
        ).encode()
        return self.add_manifest(repository, tag, manifest, "application/vnd.oci.image.manifest.v1+json"), manifest

    def add_referrer(self, repository: str, subject: str, artifact_type: str, payload: bytes = b"{}") -> str:
        """An OCI artifact (a signature, an SBOM) whose subject is the
        manifest `subject`, untagged as referrers are; its digest."""
        config = self.add_blob(b"{}")
        layer = self.add_blob(payload)
        subject_body, subject_type = self.manifests[subject]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": artifact_type,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": len(payload)}],
                "subject": {"mediaType": subject_type, "digest": subject, "size": len(subject_body)},
            }
        ).encode()
        return self.add_manifest(repository, None, manifest, "application/vnd.oci.image.manifest.v1+json")

    def count(self, method: str, path_part: str = "", host: str = REGISTRY_HOST) -> int:
        return sum(
            1 for s in self.seen if s.method == method and s.host == host and path_part in s.path
        )

    # -- serving -------------------------------------------------------------

    def render(self, request: Request) -> bytes | int:
        host = (request.getRequestHostname() or b"").decode()
        path = request.path.decode()
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        seen = Seen(request.method.decode(), host, path, headers, request.uri.decode())
        self.seen.append(seen)
        if self.status_override is not None:
            status = self.status_override(seen)
            if status is not None:
                request.setResponseCode(status)
                if status == 429:
                    request.setHeader(b"Retry-After", b"17")
                return json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}).encode()
        if path in self.raw:
            request.channel.transport.write(self.raw[path])
            request.channel.transport.loseConnection()
            return NOT_DONE_YET
        if path in self.canned:
            status, canned_headers, body = self.canned[path]
            request.setResponseCode(status)
            for name, value in canned_headers.items():
                request.setHeader(name.encode(), value.encode())
            return body
        realm = urlsplit(self.realm)
        if host == AUTH_HOST or (host, path) == (realm.hostname, realm.path):
            return self._token(request)
        moved = self._moved_path(host, path)
        if host == CDN_HOST or path.startswith("/data/") or moved is not None:
            if self.cdn_refuses_credentials and "authorization" in headers:
                return self._error(request, 400, "InvalidArgument", "Only one auth mechanism allowed")
            if moved is not None:
                return self._api(request, moved, headers)
            return self._blob(request, path.rsplit("/", 1)[-1])
        if not self._authorized(request, path):
            return b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        if self.moved_to is not None and ("/manifests/" in path or "/blobs/" in path):
            request.setResponseCode(307)
            request.setHeader(b"Location", (self.moved_to + path).encode())
            return b""
        return self._api(request, path, headers)

    def _moved_path(self, host: str, path: str) -> str | None:
        """The API path a request to where `moved_to` leads is for, if it is one."""
        if self.moved_to is None:
            return None
        target = urlsplit(self.moved_to)
        if target.hostname not in (None, host) or not path.startswith(target.path + "/v2/"):
            return None
        return path[len(target.path) :]

    def _api(self, request: Request, path: str, headers: dict[str, str]) -> bytes | int:
        if path == "/v2/":
            return b"{}"
        parts = path[len("/v2/") :].split("/")
        if len(parts) >= 3 and parts[-2] == "manifests":
            if request.method == b"HEAD" and self.manifest_head_status is not None:
                return self._error(request, self.manifest_head_status, "UNSUPPORTED", "no HEAD here")
            if request.method == b"HEAD" and self.manifest_head_lies:
                return self._error(request, 404, "MANIFEST_UNKNOWN", "manifest unknown")
            return self._manifest(request, "/".join(parts[:-2]), parts[-1], headers.get("accept", ""))
        if len(parts) >= 3 and parts[-2] == "blobs":
            digest = parts[-1]
            if self.redirect_blobs and digest in self.blobs:
                request.setResponseCode(307)
                request.setHeader(b"Location", f"http://{CDN_HOST}/data/{digest}".encode())
                return b""
            return self._blob(request, digest)
        if len(parts) >= 3 and parts[-2:] == ["tags", "list"]:
            return self._tag_list(request, "/".join(parts[:-2]))
        if len(parts) >= 3 and parts[-2] == "referrers" and self.referrers_api:
            return self._referrers(request, parts[-1])
        return self._error(request, 404, "UNSUPPORTED", "no route")

    def _tag_list(self, request: Request, repository: str) -> bytes:
        """Paginated with `n` and `last` as the distribution spec says."""
        names = sorted(t for (r, t) in self.tags if r == repository)
        if not names:
            return self._error(request, 404, "NAME_UNKNOWN", "repository name not known to registry")
        last = request.args.get(b"last", [b""])[0].decode()
        names = [t for t in names if t > last]
        n = request.args.get(b"n")
        if n is not None and len(names) > int(n[0]):
            names = names[: int(n[0])]
            link = f'<{UPSTREAM_URL}/v2/{repository}/tags/list?n={int(n[0])}&last={names[-1]}>; rel="next"'
            request.setHeader(b"Link", link.encode())
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"name": repository, "tags": names}).encode()

    def redirect(self, path: str, location: str) -> None:
        """Answer requests for `path` with a 307 to `location`."""
        self.canned[path] = (307, {"Location": location}, b"")

    def release_tokens(self) -> None:
        held, self.held_tokens = self.held_tokens, []
        for request, body in held:
            request.write(body)
            request.finish()

    def release_manifests(self) -> None:
        held, self.held_manifests = self.held_manifests, []
        for request, body in held:
            request.write(body)
            request.finish()

    def _authorized(self, request: Request, path: str) -> bool:
        given = request.getHeader(b"authorization")
        if given is not None and given.decode().removeprefix("Bearer ") in self.revoked_tokens:
            given = None
        if self.basic_auth is not None:
            expected = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
            if given is not None and given.decode() == expected:
                return True
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", b'Basic realm="fake"')
            return False
        if not self.require_token:
            return True
        if given is not None and given.decode().startswith("Bearer tok-"):
            return True
        request.setResponseCode(401)
        parts = path[len("/v2/") :].split("/")
        scope = ""
        if len(parts) >= 3:
            scope = f',scope="repository:{"/".join(parts[:-2])}:pull"'
        bearer = f'Bearer realm="{self.realm}",service="{self.service}"{scope}'
        request.responseHeaders.setRawHeaders(
            b"www-authenticate", [c.encode() for c in self.extra_challenges] + [bearer.encode()]
        )
        return False

    def _token(self, request: Request) -> bytes | int:
        query = parse_qs(request.uri.decode().partition("?")[2])
        self.issued += 1
        if self.token_body is not None:
            return self.token_body
        request.setHeader(b"Content-Type", b"application/json")
        document: dict[str, object] = {"token": f"tok-{self.issued}-{query.get('scope', [''])[0]}"}
        if self.token_lifetime is not None:
            document["expires_in"] = self.token_lifetime
        body = json.dumps(document).encode()
        if self.hold_tokens:
            self.held_tokens.append((request, body))
            return NOT_DONE_YET
        return body

    def _manifest(self, request: Request, repository: str, reference: str, accept: str) -> bytes | int:
        digest = reference if ":" in reference else self.tags.get((repository, reference))
        if digest is None or digest not in self.manifests:
            return self._error(request, 404, "MANIFEST_UNKNOWN", "manifest unknown")
        narrow = self.narrow_tags.get((repository, reference))
        if narrow is not None and self.manifests[digest][1] not in accept:
            digest = narrow
        body, media_type = self.manifests[digest]
        body = self.wrong_bytes.get(digest, body)
        request.setHeader(b"Content-Type", media_type.encode())
        if self.digest_header:
            request.setHeader(b"Docker-Content-Digest", digest.encode())
        request.setHeader(b"Content-Length", str(len(body)).encode())
        if self.ratelimit_remaining is not None:
            request.setHeader(b"ratelimit-limit", b"100;w=21600")
            request.setHeader(b"ratelimit-remaining", self.ratelimit_remaining.encode())
        subject = _subject(body)
        if self.referrers_api and subject is not None:
            request.setHeader(b"OCI-Subject", subject.encode())
        if self.hold_manifests:
            self.held_manifests.append((request, body))
            return NOT_DONE_YET
        return body

    def _referrers(self, request: Request, digest: str) -> bytes:
        """An image index of the manifests whose subject is `digest`, empty
        if there are none (the spec's answer, never a 404)."""
        wanted = request.args.get(b"artifactType", [b""])[0].decode()
        descriptors = []
        for referrer, (body, media_type) in sorted(self.manifests.items()):
            document = json.loads(body)
            if _subject(body) != digest:
                continue
            artifact_type = document.get("artifactType") or document.get("config", {}).get("mediaType")
            if wanted and self.filters and artifact_type != wanted:
                continue
            descriptors.append(
                {"mediaType": media_type, "digest": referrer, "size": len(body), "artifactType": artifact_type}
            )
        if wanted and self.filters:
            request.setHeader(b"OCI-Filters-Applied", b"artifactType")
        request.setHeader(b"Content-Type", b"application/vnd.oci.image.index.v1+json")
        return json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descriptors}
        ).encode()

    def _blob(self, request: Request, digest: str) -> bytes | int:
        if digest not in self.blobs:
            return self._error(request, 404, "BLOB_UNKNOWN", "blob unknown to registry")
        data = self.wrong_bytes.get(digest, self.blobs[digest])
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Docker-Content-Digest", digest.encode())
        wanted = request.getHeader(b"range")
        if wanted is not None and self.honour_ranges:
            start = int(wanted.decode().removeprefix("bytes=").rstrip("-"))
            request.setResponseCode(206)
            request.setHeader(
                b"Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}".encode()
            )
            data = data[start:]
        if digest not in self.lengthless:
            length = self.claimed_length.get(digest, len(data))
            request.setHeader(b"Content-Length", str(length).encode())
        if request.method == b"HEAD":
            return b""
        if digest in self.truncate_at:
            request.write(data[: self.truncate_at[digest]])
            request.channel.transport.loseConnection()
            return NOT_DONE_YET
        body = HeldBody(request, data)
        request.write(b"")  # the headers go now, the body when ticked or sent
        if digest in self.hold:
            self.held[digest] = body
        else:
            self.streaming.append(body)
        return NOT_DONE_YET

    def tick(self) -> bool:
        """Send the next chunk of every body in flight; whether any moved."""
        moved = False
        for body in list(self.streaming):
            if body.request.channel is None or body.request._disconnected:
                self.streaming.remove(body)
                continue
            if body.sent < len(body.data):
                body.send(self.chunk_size)
                moved = True
            else:
                self.streaming.remove(body)
                body.request.finish()
                moved = True
        return moved

    def _error(self, request: Request, status: int, code: str, message: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def _subject(body: bytes) -> str | None:
    try:
        subject: Any = json.loads(body).get("subject")
    except (ValueError, AttributeError):
        return None
    return subject.get("digest") if isinstance(subject, dict) else None
