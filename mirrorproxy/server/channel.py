"""The HTTP channel and site: Twisted's, plus what a mirror facing every
machine of a site needs on top.

- A fast answer to TLS on a plain port.  Clients told a mirror is
  "insecure" (skopeo, containerd, Go's registry client) first try TLS and
  fall back to plain HTTP only when the server answers in plain text;
  Twisted would otherwise wait for a request line that never comes, until
  the client's handshake timeout (10 s per connection).
- A deadline for a request's line and headers.  Twisted's idle timeout
  restarts at every byte, so a client trickling one header byte a minute
  (slowloris) would hold its connection for ever.
- No request bodies.  Every request a mirror answers is a GET or a HEAD;
  Twisted would spool any body over 100 kB to a temporary file, so one
  client could fill the disk.  A small body is read and ignored, a larger
  one refused before it is read.
- One structured access-log event per request.
"""

from __future__ import annotations

from collections import Counter
from io import BytesIO
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from ..api.errors import UNSUPPORTED, RegistryError
from .connections import ConnectionGate

log = Logger("mirrorproxy.access")

_TLS_HANDSHAKE = 0x16
_PLAIN_HTTP_ONLY = (
    b"HTTP/1.0 400 Bad Request\r\n"
    b"Content-Type: text/plain\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"This registry mirror listens with plain HTTP here; use http://\n"
)


# Seconds from a request's first byte to the end of its headers (nginx's
# client_header_timeout is 60 s; registry clients send theirs at once).
HEADER_DEADLINE = 30.0

# The most request body read (and ignored); a larger one is refused unread.
MAX_REQUEST_BODY = 64 * 1024


def _refusal(status: bytes, error: RegistryError) -> bytes:
    body = error.body()
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n"
        b"\r\n" + body
    )


_HEADERS_TOO_SLOW_STATUS = 408
_BODY_REFUSED_STATUS = 413
_HEADERS_TOO_SLOW = _refusal(
    b"408 Request Timeout",
    RegistryError(408, UNSUPPORTED, f"the request's headers took longer than {HEADER_DEADLINE:g} s"),
)
_BODY_REFUSED = _refusal(
    b"413 Content Too Large",
    RegistryError(413, UNSUPPORTED, "this registry mirror is read-only and takes no request bodies"),
)


class MirrorChannel(HTTPChannel):
    # Set by the site that builds the channel (Twisted's Site.buildProtocol).
    site: MirrorSite
    transport: ITCPTransport
    _first_bytes_seen = False
    _header_deadline: IDelayedCall | None = None
    _refused = False  # a refusal was sent: read nothing more

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.site.gate is not None:
            self.site.gate.opened(self)

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if not self.requests and self.site.gate is not None:
            self.site.gate.idle(self)

    def dataReceived(self, data: bytes) -> None:
        if self.site.gate is not None:
            self.site.gate.busy(self)
        if self._refused:
            return
        if not self._first_bytes_seen and data:
            self._first_bytes_seen = True
            if data[0] == _TLS_HANDSHAKE:
                self.transport.write(_PLAIN_HTTP_ONLY)
                self.transport.loseConnection()
                return
        if data and self._header_deadline is None and self.line_mode and not self._handlingRequest:
            # The first bytes of a request: its headers must be in on time.
            self._header_deadline = self.site.reactor.callLater(HEADER_DEADLINE, self._headers_too_slow)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if not self._refused:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancel_header_deadline()
        # `length` is None for a chunked body: counted as it comes.
        if self.length is not None and self.length > MAX_REQUEST_BODY:
            self.refuse(
                _BODY_REFUSED_STATUS, _BODY_REFUSED, "a request body of {length} bytes", length=self.length
            )
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        if not self._refused:
            super().allContentReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_header_deadline()
        if self.site.gate is not None:
            self.site.gate.closed(self)
        super().connectionLost(reason)

    def refuse(self, status: int, response: bytes, why: str, **fields: object) -> None:
        """Answer before the request is whole, then close: a client that
        keeps sending is not read."""
        if self._refused:
            return
        self._refused = True
        self._cancel_header_deadline()
        self.setTimeout(None)  # closing now; the idle timer has no more to do
        log.info(
            "refused {client}: " + why,
            client=getattr(self.transport.getPeer(), "host", "-"),
            **fields,
        )
        self.transport.write(response)
        # The request being read will never be processed: its answer is
        # this one, and it is logged here.
        for request in self.requests:
            request.refused = True
        self.site.log_refusal(self, status, len(response))
        self.loseConnection()

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        self.refuse(
            _HEADERS_TOO_SLOW_STATUS,
            _HEADERS_TOO_SLOW,
            "headers not in after {seconds} s",
            seconds=HEADER_DEADLINE,
        )

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            if self._header_deadline.active():
                self._header_deadline.cancel()
            self._header_deadline = None


class MirrorRequest(Request):
    channel: MirrorChannel | None  # type: ignore[assignment]
    """A request that knows when it started, and is logged exactly once:
    when it finishes, or when its connection ends before that."""

    started_at: float = 0.0
    refused = False  # answered by the channel before it could be processed
    registry: str | None = None  # the registry it was routed to
    _body_received = 0
    _processed = False
    logged = False

    def gotLength(self, length: int | None) -> None:
        # Never Twisted's temporary file: bodies are small or refused.
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        self._body_received += len(data)
        if self._body_received > MAX_REQUEST_BODY and self.channel is not None:
            self.channel.refuse(
                _BODY_REFUSED_STATUS,
                _BODY_REFUSED,
                "a chunked request body over {limit} bytes",
                limit=MAX_REQUEST_BODY,
            )
            return
        assert self.content is not None
        self.content.write(data)

    def process(self) -> None:
        self._processed = True
        self.started_at = self.channel.site.reactor.seconds() if self.channel else 0.0
        super().process()

    def connectionLost(self, reason: Failure) -> None:
        site = self.channel.site if self.channel is not None else None
        super().connectionLost(reason)
        # Gone before the response was finished: a client that closed on
        # its last byte, an aborted transfer, a sendfile the client outran.
        if site is not None and self._processed and not self.finished and not self.refused:
            site.log(self)


class MirrorSite(Site):
    """The registry listener's site; `describe` names what a path asks for,
    for the access log and the request counts."""

    protocol = MirrorChannel  # type: ignore[assignment]
    requestFactory = MirrorRequest
    # No "Starting factory" lines: every listener's start is logged as such.
    noisy = False

    def __init__(
        self,
        *args: Any,
        describe: Describe | None = None,
        gate: ConnectionGate | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # (endpoint kind, status, registry or "") -> responses; read by the
        # metrics.
        self.responses: Counter[tuple[str, int, str]] = Counter()
        self._describe = describe or _registry_paths
        self.gate = gate

    def buildProtocol(self, addr: Any) -> Any:
        # None: Twisted closes the accepted socket at once.
        if self.gate is not None and not self.gate.admit(addr):
            return None
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:
        """One event per response, with named fields (JSON with ``--logger``)."""
        if getattr(request, "logged", False):
            return
        request.logged = True
        kind, repository, reference = self._describe(request.path)
        outcome = request.responseHeaders.getRawHeaders(b"x-cache", [b"-"])[0].decode()
        started = getattr(request, "started_at", 0.0)
        self._emit(
            client=getattr(request.getClientAddress(), "host", "-"),
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1", "replace")[:1024],
            registry=getattr(request, "registry", None),
            repository=repository,
            reference=reference,
            kind=kind,
            status=request.code,
            bytes=request.sentLength,
            duration_ms=round((self.reactor.seconds() - started) * 1000, 1) if started else None,
            cache=outcome,
            finished=not request._disconnected,
            user_agent=(request.getHeader(b"user-agent") or b"-").decode("latin-1")[:200],
        )

    def log_refusal(self, channel: MirrorChannel, status: int, size: int) -> None:
        """The answer to a request the channel refused before it was whole."""
        path = getattr(channel, "_path", b"") or b""
        kind, repository, reference = self._describe(path.partition(b"?")[0])
        self._emit(
            client=getattr(channel.transport.getPeer(), "host", "-"),
            method=(getattr(channel, "_command", b"") or b"-").decode("latin-1"),
            path=path.decode("latin-1", "replace")[:1024],
            registry=None,
            repository=repository,
            reference=reference,
            kind="invalid" if kind not in ("base", "manifest", "blob", "tags") else kind,
            status=status,
            bytes=size,
            duration_ms=None,
            cache="-",
            finished=True,
            user_agent="-",
        )

    def _emit(self, **fields: Any) -> None:
        self.responses[(fields["kind"], fields["status"], fields["registry"] or "")] += 1
        log.info(
            "{client} {method} {path} {status} {bytes}B {duration_ms}ms {cache}",
            **fields,
        )


# A path -> (endpoint kind, repository or None, reference or None).
Describe = Callable[[bytes], tuple[str, Optional[str], Optional[str]]]


def _registry_paths(path: bytes) -> tuple[str, str | None, str | None]:
    from ..api.resource import describe

    what = describe(path)
    return what.kind, what.name or None, what.reference or None
