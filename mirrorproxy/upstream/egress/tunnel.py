"""The CONNECT tunnel: a stream to ``host:port`` through an HTTP proxy.

`ConnectTunnelEndpoint` connects to the proxy, sends ``CONNECT``
(`connect_request`, with ``Proxy-Authorization`` when the proxy URL has
credentials), reads the proxy's answer and, once it is 2xx, hands the
connection to the caller's protocol: for https, TLS end to end with the
upstream, so the proxy sees only ``host:port``.  Also how a proxy's answer
is read without echoing it (`printable`, `offered_schemes`), which the
agent's absolute-form route shares.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

from attrs import define
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import (
    ProxyError,
    ProxyProtocolError,
    ProxyRefused,
    ProxyTimeout,
    ProxyUnreachable,
)
from .hosts import format_address
from .proxies import ProxyServer

log = Logger()

# A CONNECT answer is a status line and a few headers; anything this long
# is not a proxy we can talk to.
MAX_CONNECT_RESPONSE_HEAD = 64 * 1024

_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?$")
_UNSAFE_IN_TARGET = re.compile(r"[^A-Za-z0-9.\-_~!$&'()*+,;=:\[\]%]")


def connect_request(host: str, port: int, authorization: bytes | None) -> bytes:
    """The bytes of ``CONNECT host:port`` (RFC 9110 9.3.6), credentials included."""
    target = format_address(host, port)
    if _UNSAFE_IN_TARGET.search(target):
        raise ValueError(f"not a host to CONNECT to: {target!r}")
    lines = [
        b"CONNECT " + target.encode("ascii") + b" HTTP/1.1",
        b"Host: " + target.encode("ascii"),
    ]
    if authorization is not None:
        lines.append(b"Proxy-Authorization: " + authorization)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def printable(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("latin-1")[:limit]
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _parse_head(head: bytes) -> tuple[int, str, dict[bytes, list[bytes]]]:
    """A response head -> status, reason phrase, headers (lower-case names)."""
    status_line, *header_lines = head.split(b"\r\n")
    found = _STATUS_LINE.match(status_line)
    if found is None:
        raise ValueError(status_line)
    headers: dict[bytes, list[bytes]] = {}
    for line in header_lines:
        name, sep, value = line.partition(b":")
        if sep:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(found[1]), printable(found[2] or b""), headers


def offered_schemes(headers: dict[bytes, list[bytes]]) -> tuple[str, ...]:
    # Only the scheme names (Basic, Negotiate, NTLM, ...): enough to tell an
    # operator why Basic credentials will not do, without echoing anything else.
    schemes = []
    for value in headers.get(b"proxy-authenticate", []) + headers.get(b"www-authenticate", []):
        for challenge in value.split(b","):
            word = challenge.strip().split(b" ", 1)[0]
            if word and b"=" not in word:
                schemes.append(printable(word, 40))
    return tuple(dict.fromkeys(schemes))


@define(eq=False)
class _TunnelProtocol(Protocol):
    """Speaks to the proxy until the tunnel is open, then steps aside.

    It stays the transport's protocol for the life of the connection and
    hands every later byte, and the end of the connection, to the protocol
    the caller's factory builds once the proxy has said 2xx (for https, a
    TLSMemoryBIOProtocol, whose handshake therefore starts only inside the
    tunnel).
    """

    _request: bytes
    _proxy: str
    _target: str
    _wrapped_factory: IProtocolFactory
    _established: Deferred[IProtocol]
    _clock: IReactorTime
    _timeout: float
    _buffer: bytes = b""
    _tunnelled: IProtocol | None = None
    _timer: IDelayedCall | None = None
    _abandoned: bool = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self._abandoned:
            cast(ITCPTransport, self.transport).abortConnection()
            return
        self._timer = self._clock.callLater(self._timeout, self._timed_out)
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        if self._tunnelled is not None:
            self._tunnelled.dataReceived(data)
            return
        if self._established.called:
            # Failed or cancelled; the connection is being aborted.
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CONNECT_RESPONSE_HEAD:
                self._fail(
                    ProxyProtocolError(f"proxy {self._proxy} sent an endless answer to CONNECT")
                )
            return
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        self._buffer = b""
        try:
            status, reason, headers = _parse_head(head)
        except ValueError:
            self._fail(
                ProxyProtocolError(
                    f"proxy {self._proxy} answered CONNECT {self._target} with something "
                    f"that is not HTTP: {printable(head[:80])!r}"
                )
            )
            return
        if not 200 <= status < 300:
            log.debug(
                "proxy {proxy} refused CONNECT {target}: {status}",
                proxy=self._proxy,
                target=self._target,
                status=status,
            )
            self._fail(
                ProxyRefused(
                    self._proxy,
                    f"CONNECT {self._target}",
                    status,
                    reason,
                    offered=offered_schemes(headers),
                    sent_credentials=b"Proxy-Authorization:" in self._request,
                )
            )
            return
        self._stop_timer()
        # A 2xx answer to CONNECT has no body (RFC 9110 9.3.6): whatever
        # follows the head already belongs to the tunnel.
        assert self.transport is not None
        protocol = self._wrapped_factory.buildProtocol(self.transport.getPeer())
        if protocol is None:
            self._fail(ProxyError(f"no protocol for the tunnel to {self._target}"))
            return
        self._tunnelled = protocol
        protocol.makeConnection(self.transport)
        self._established.callback(protocol)
        if rest:
            protocol.dataReceived(rest)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._stop_timer()
        if self._tunnelled is not None:
            self._tunnelled.connectionLost(reason)
        elif not self._established.called:
            self._established.errback(
                ProxyError(
                    f"proxy {self._proxy} closed the connection "
                    f"before answering CONNECT {self._target}"
                )
            )

    def abandon(self) -> None:
        """The caller gave up (cancelled) before the tunnel opened."""
        self._abandoned = True
        self._stop_timer()
        if self.transport is not None and self._tunnelled is None:
            cast(ITCPTransport, self.transport).abortConnection()

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(
            ProxyTimeout(
                f"proxy {self._proxy} did not answer CONNECT {self._target} "
                f"within {self._timeout:g}s"
            )
        )

    def _fail(self, error: Exception) -> None:
        self._stop_timer()
        if not self._established.called:
            self._established.errback(error)
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


@define(eq=False)
class _TunnelFactory(Factory):
    """Builds the one `_TunnelProtocol` of one connection to the proxy."""

    _build: Callable[[], _TunnelProtocol]
    _wrapped_factory: IProtocolFactory
    built: _TunnelProtocol | None = None

    def buildProtocol(self, addr: IAddress | None) -> _TunnelProtocol:
        self.built = self._build()
        return self.built

    # The caller's factory is in effect connecting: let it know, as an
    # endpoint connecting it directly would.
    def doStart(self) -> None:
        self._wrapped_factory.doStart()

    def doStop(self) -> None:
        self._wrapped_factory.doStop()


@implementer(IStreamClientEndpoint)
@define(eq=False)
class ConnectTunnelEndpoint:
    """A stream to ``host:port`` through an HTTP proxy's CONNECT tunnel.

    `connect` connects to the proxy, sends CONNECT (with
    ``Proxy-Authorization`` when the proxy URL has credentials), and fires
    with the caller's protocol once the proxy answers 2xx; any other answer
    fails it with `ProxyRefused`.  Wrap it with `wrapClientTLS` for https.
    Cancelling stops whichever step is under way.
    """

    _clock: IReactorTime
    _proxy_endpoint: IStreamClientEndpoint
    _proxy: ProxyServer
    _host: str
    _port: int
    # For the CONNECT answer, once connected to the proxy; connecting to the
    # proxy has the proxy endpoint's own timeout.
    _timeout: float = 30.0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        target = format_address(self._host, self._port)
        proxy = self._proxy.address
        request = connect_request(self._host, self._port, self._proxy.authorization)
        factory: _TunnelFactory

        def cancel(_: Deferred[IProtocol]) -> None:
            # Whichever step is under way: connecting to the proxy (a no-op
            # once connected), or waiting for its answer.
            connecting.cancel()
            if factory.built is not None:
                factory.built.abandon()

        established: Deferred[IProtocol] = Deferred(cancel)
        factory = _TunnelFactory(
            lambda: _TunnelProtocol(
                request, proxy, target, protocolFactory, established, self._clock, self._timeout
            ),
            protocolFactory,
        )

        def not_connected(failure: Failure) -> None:
            if established.called or failure.check(
                CancelledError, net_error.ConnectingCancelledError
            ):
                # Only our canceller cancels `connecting`; Deferred.cancel
                # fails `established` with CancelledError once it returns.
                return
            if failure.check(net_error.TimeoutError):
                established.errback(
                    ProxyTimeout(f"cannot connect to proxy {proxy}: {failure.value}")
                )
            else:
                established.errback(
                    ProxyUnreachable(f"cannot connect to proxy {proxy}: {failure.value}")
                )

        connecting = self._proxy_endpoint.connect(factory)
        connecting.addErrback(not_connected)
        return established
