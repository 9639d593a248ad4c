"""A hostile upstream and the internal service it points the mirror at.

`HostileUpstream` answers ``GET /v2/`` like a registry and every other
request with a redirect to wherever the test says (an internal address,
typically); `InternalService` stands for what lives there (a metadata
service, an admin page) and records every request that reaches it, so a
test can show that nothing did.  Both are threads of the test process on
127.0.0.1.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from attrs import define, field

SECRET = b"internal secret: " + b"s" * 114_000


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _serve(handler: type[BaseHTTPRequestHandler]) -> _Server:
    """A server of `handler` on a free port of 127.0.0.1, in a thread."""
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@define(eq=False)
class _Served:
    """A server of the test process's own, stopped by `stop`."""

    _server: _Server | None = field(default=None, init=False)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@define(eq=False)
class InternalService(_Served):
    """Answers every GET with SECRET and remembers the paths asked for."""

    seen: list[str] = field(factory=list)

    def start(self) -> InternalService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(SECRET)))
                self.end_headers()
                self.wfile.write(SECRET)

            def log_message(self, *args: object) -> None:
                pass

        self._server = _serve(Handler)
        return self


@define(eq=False)
class HostileUpstream(_Served):
    """A registry that redirects every API request to `location`."""

    location: str = ""

    def start(self) -> HostileUpstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                if self.path == "/v2/":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    if self.command == "GET":
                        self.wfile.write(b"{}")
                    return
                self.send_response(307)
                self.send_header("Location", upstream.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = _serve(Handler)
        return self
