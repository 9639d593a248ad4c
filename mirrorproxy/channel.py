"""The HTTP channel and site: Twisted's, plus a fast answer to TLS on a
plain port and one structured access-log event per request.

Clients told a mirror is "insecure" (skopeo, containerd, Go's registry
client) first try TLS and fall back to plain HTTP only when the server
answers in plain text; Twisted would otherwise wait for a request line that
never comes, until the client's handshake timeout (10 s per connection).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

log = Logger("mirrorproxy.access")

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


class MirrorRequest(Request):
    """A request that knows when it started, for the access log."""

    started_at: float = 0.0

    def process(self) -> None:
        self.started_at = self.channel.site.reactor.seconds() if self.channel else 0.0
        super().process()


class MirrorSite(Site):
    protocol = MirrorChannel  # type: ignore[assignment]
    requestFactory = MirrorRequest

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (endpoint kind, status) -> responses; read by the metrics.
        self.responses: Counter[tuple[str, int]] = Counter()

    def log(self, request: Any) -> None:
        """One event per request, with named fields (JSON with ``--logger``)."""
        from .resource import describe

        what = describe(request.path)
        self.responses[(what.kind, request.code)] += 1
        outcome = request.responseHeaders.getRawHeaders(b"x-cache", [b"-"])[0].decode()
        started = getattr(request, "started_at", 0.0)
        log.info(
            "{client} {method} {path} {status} {bytes}B {duration_ms}ms {cache}",
            client=getattr(request.getClientAddress(), "host", "-"),
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1", "replace")[:1024],
            repository=what.name or None,
            reference=what.reference or None,
            kind=what.kind,
            status=request.code,
            bytes=request.sentLength,
            duration_ms=round((self.reactor.seconds() - started) * 1000, 1) if started else None,
            cache=outcome,
            user_agent=(request.getHeader(b"user-agent") or b"-").decode("latin-1")[:200],
        )
