"""A real HTTP server on 127.0.0.1 answering from a table, in a thread.

For the admin command's network clients (prefetch, the metrics reader),
which are synchronous and so are tested against a socket, not StubTreq.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from attrs import define, field, frozen


@frozen
class Answer:
    status: int = 200
    headers: dict[str, str] = field(factory=dict)
    body: bytes = b""


NOT_FOUND = Answer(404, {}, b'{"errors":[{"code":"NOT_FOUND","message":"nope"}]}')


@frozen
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@define
class StaticServer:
    answers: dict[str, Answer] = field(factory=dict)
    seen: list[Seen] = field(factory=list)
    url: str = ""

    def paths(self, method: str = "GET") -> list[str]:
        return [s.path for s in self.seen if s.method == method]


@contextmanager
def serve(answers: dict[str, Answer] | None = None) -> Iterator[StaticServer]:
    state = StaticServer(dict(answers or {}))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with lock:
                state.seen.append(Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                answer = state.answers.get(self.path, NOT_FOUND)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval: shutdown() waits for the loop to notice.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="static-server", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
