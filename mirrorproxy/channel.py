"""The HTTP channel: Twisted's, plus a fast answer to TLS on a plain port.

Clients told a mirror is "insecure" (skopeo, containerd, Go's registry
client) first try TLS and fall back to plain HTTP only when the server
answers in plain text; Twisted would otherwise wait for a request line that
never comes, until the client's handshake timeout (10 s per connection).
"""

from __future__ import annotations

from twisted.web.http import HTTPChannel
from twisted.web.server import Site

_TLS_HANDSHAKE = 0x16
_PLAIN_HTTP_ONLY = (
    b"HTTP/1.0 400 Bad Request\r\n"
    b"Content-Type: text/plain\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"This registry mirror listens with plain HTTP here; use http://\n"
)


class MirrorChannel(HTTPChannel):
    _first_bytes_seen = False

    def dataReceived(self, data: bytes) -> None:
        if not self._first_bytes_seen and data:
            self._first_bytes_seen = True
            if data[0] == _TLS_HANDSHAKE:
                self.transport.write(_PLAIN_HTTP_ONLY)
                self.transport.loseConnection()
                return
        super().dataReceived(data)


class MirrorSite(Site):
    protocol = MirrorChannel  # type: ignore[assignment]
