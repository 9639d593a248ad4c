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

from attrs import define, field, frozen

from .tcprelay import CHUNK, TcpRelay

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.1\r\n")


@frozen
class RelayedRequest:
    method: str
    target: str  # path and query, as sent

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


@define(eq=False)
class RequestLog(TcpRelay):
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port``; `requests`
    are the request lines seen so far, in order."""

    requests: list[RelayedRequest] = field(factory=list, init=False)

    def _relay(self, client: socket.socket, target: socket.socket) -> None:
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
