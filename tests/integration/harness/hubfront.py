"""A Docker Hub-like front: a registry API under a path prefix, blobs from a CDN.

`HubFront` stands for an Artifactory or Nexus "remote" (or Docker Hub
itself): it serves the registry API under a path prefix
(``/api/docker/hub-remote/v2/...``) by passing each request on to a reference
registry, token challenges included, and answers a blob GET with a 307 to
`BlobCdn` on another port.  The CDN serves the blob's bytes from the
registry's storage for a signed URL only, and refuses (403) any request that
carries ``Authorization``, as S3 and CloudFront refuse a request with two
kinds of authentication: a client that sends the registry's token on to the
CDN gets no bytes.  Both record every request they answer, so a test can
count them and see which carried credentials.  Threads of the test process on
127.0.0.1, like harness.hostile.
"""

from __future__ import annotations

import hmac
import http.client
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from attrs import define, field, frozen

from .registry import UpstreamRegistry

PREFIX = "/api/docker/hub-remote"
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_CDN_PATH = re.compile(r"^/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
# What the front passes on, each way.
_REQUEST_HEADERS = ("Authorization", "Accept", "User-Agent")
_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Docker-Content-Digest",
    "Docker-Distribution-Api-Version",
    "Www-Authenticate",
    "Etag",
)
_SIGNING_KEY = b"hub-front-cdn"
TIMEOUT = 60.0


@frozen
class Seen:
    """One request a server answered."""

    method: str
    path: str
    status: int
    authorization: bool


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _serve(handler: type[BaseHTTPRequestHandler]) -> _Server:
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _signature(digest: str) -> str:
    return hmac.new(_SIGNING_KEY, digest.encode(), "sha256").hexdigest()


@define(eq=False)
class _Recorded:
    _server: _Server | None = field(default=None, init=False)
    _seen: list[Seen] = field(factory=list, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> list[Seen]:
        """Every request answered so far, oldest first."""
        with self._lock:
            return list(self._seen)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@define(eq=False)
class BlobCdn(_Recorded):
    """Serves a registry's blobs at signed URLs to clients that send no
    credentials."""

    registry: UpstreamRegistry

    def location(self, digest: str) -> str:
        return f"{self.url}/blobs/{digest}?signature={_signature(digest)}"

    def fetches(self, digest: str) -> int:
        """How many GETs of this blob were answered with its bytes."""
        return sum(
            1 for s in self.seen() if s.method == "GET" and s.path == f"/blobs/{digest}" and s.status == 200
        )

    def start(self) -> BlobCdn:
        cdn = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                match = _CDN_PATH.match(url.path)
                signature = parse_qs(url.query).get("signature", [""])[0]
                authorization = "Authorization" in self.headers
                data = cdn.registry.blob_file(match["digest"]) if match else None
                if authorization:
                    status, text = 403, b"Only one auth mechanism allowed\n"
                elif match is None or not hmac.compare_digest(signature, _signature(match["digest"])):
                    status, text = 403, b"Request has expired or is not signed\n"
                elif data is None or not data.exists():
                    status, text = 404, b"NoSuchKey\n"
                else:
                    status, text = 200, b""
                cdn._record(Seen("GET", url.path, status, authorization))
                self.send_response(status)
                if status != 200:
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                assert data is not None
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(data.stat().st_size))
                self.end_headers()
                with open(data, "rb") as body:
                    shutil.copyfileobj(body, self.wfile)

            def log_message(self, *args: object) -> None:
                """Quiet: `seen` is the log."""

        self._server = _serve(Handler)
        return self


@define(eq=False)
class HubFront(_Recorded):
    """The registry API of `registry` under `PREFIX`, blobs through `cdn`."""

    registry: UpstreamRegistry
    cdn: BlobCdn

    @property
    def remote_url(self) -> str:
        """The URL an operator gives as the upstream: the API is under it."""
        return f"{self.url}{PREFIX}"

    def start(self) -> HubFront:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                self._answer()

            def _answer(self) -> None:
                url = urlsplit(self.path)
                authorization = "Authorization" in self.headers
                if not url.path.startswith(f"{PREFIX}/v2/"):
                    front._record(Seen(self.command, url.path, 404, authorization))
                    self._reply(404, {}, b"")
                    return
                target = url.path.removeprefix(PREFIX) + (f"?{url.query}" if url.query else "")
                blob = _BLOB.match(url.path.removeprefix(PREFIX))
                # A blob GET is asked of the registry as a HEAD (it checks the
                # token and that the blob exists) and answered with the CDN.
                method = "HEAD" if blob and self.command == "GET" else self.command
                status, headers, body = self._pass_on(method, target)
                if blob and self.command == "GET" and status == 200:
                    status, body = 307, b""
                    headers = {"Location": front.cdn.location(blob["digest"])}
                front._record(Seen(self.command, url.path, status, authorization))
                self._reply(status, headers, body)

            def _pass_on(self, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
                connection = http.client.HTTPConnection("127.0.0.1", front.registry.port, timeout=TIMEOUT)
                try:
                    headers = {}
                    for name in _REQUEST_HEADERS:
                        values = self.headers.get_all(name)
                        if values:
                            headers[name] = ", ".join(values)
                    connection.request(method, target, headers=headers)
                    response = connection.getresponse()
                    body = response.read()
                    passed = {
                        name: value
                        for name in _RESPONSE_HEADERS
                        if (value := response.getheader(name)) is not None
                    }
                    return response.status, passed, body
                finally:
                    connection.close()

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                if self.command != "HEAD":
                    # The body sent, whatever the registry's length was (a
                    # blob GET asked as a HEAD has none).
                    headers = {**headers, "Content-Length": str(len(body))}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet: `seen` is the log."""

        self._server = _serve(Handler)
        return self
