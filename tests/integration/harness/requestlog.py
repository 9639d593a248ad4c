"""A TCP relay on 127.0.0.1 that notes the HTTP request lines passing
through it: put in front of the S3 gateway (as a node's ``s3-endpoint``), it
shows who fetched what from the bucket, a presigned GET by a client
included, which the gateway itself does not log.

Request lines are found by their shape at the start of a line of the
client's stream (``METHOD TARGET HTTP/1.1``); a body that happened to hold
one would be miscounted, which the random test data makes vanishingly
unlikely.  A `SlowLink` relays as well, at a pace; this one at full speed,
and reads what it relays.
"""

from __future__ import annotations

import re
import socket
import threading
from typing import Self

from attrs import define, field, frozen

CHUNK = 64 * 1024
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.1\r\n")


@frozen
class RelayedRequest:
    method: str
    target: str  # path and query, as sent

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


@define(eq=False)
class RequestLog:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port``; `requests`
    are the request lines seen so far, in order."""

    target_port: int
    requests: list[RelayedRequest] = field(factory=list, init=False)
    _listener: socket.socket = field(init=False)
    _sockets: list[socket.socket] = field(factory=list, init=False)
    _threads: list[threading.Thread] = field(factory=list, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                target = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, target]
            self._spawn(self._pump, client, target, True)
            self._spawn(self._pump, target, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        # The end of the previous chunk: a request line may straddle two.
        tail = b""
        try:
            while chunk := source.recv(CHUNK):
                if requests:
                    seen = tail + chunk
                    for match in _REQUEST_LINE.finditer(seen):
                        if match.end() > len(tail):
                            self.requests.append(RelayedRequest(match[1].decode(), match[2].decode()))
                    tail = seen[-2048:]
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in threads:
            thread.join(timeout=5)
