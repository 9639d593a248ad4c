"""Egress: proxy URLs, the proxy environment, NO_PROXY, the CONNECT
handshake, the agent's three routes, and TLS through the tunnel.

All synchronous. The handshake is checked byte for byte over a
StringTransport; whole requests run over a MemoryReactorClock, with iosim
pumping bytes between the agent and an in-memory proxy that, once it has
said 200 to CONNECT, hands the stream to an in-memory TLS registry (a real
Site behind a real TLS server, certificates from a throwaway CA). What a
user would notice is asserted: the bytes the proxy and the registry saw,
the body that came back, the error that names the proxy's status.
"""

from __future__ import annotations

import base64
import warnings
from pathlib import Path
from typing import Any

import pytest
from attrs import define, field
from cryptography import x509
from OpenSSL import SSL, crypto
from treq import content
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError, ConnectionRefusedError, TimeoutError
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import platformTrust
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from mirrorproxy.common.errors import ConfigError
from mirrorproxy.upstream.egress import (
    ConnectTunnelEndpoint,
    NoProxy,
    ProxyError,
    ProxyProtocolError,
    ProxyRefused,
    ProxyServer,
    ProxySettings,
    ProxyTimeout,
    ProxyUnreachable,
    UpstreamTLSError,
    connect_request,
    make_agent,
    proxy_settings,
    tls_policy,
)
from mirrorproxy.upstream.egress.trust import _PlatformTrustPlus, read_ca_bundle

from ..testca import ServerIdentity, TestCA

CREDENTIALS_B64 = base64.b64encode(b"alice:s3cret").decode()
PROXY_URL = "http://alice:s3cret@proxy.test:3128"
PROXY_PORT = 3128


def succeeded(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failed(d: Deferred[Any], *types: type[BaseException]) -> Failure:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    assert isinstance(results[0], Failure), f"Deferred succeeded with {results[0]!r}"
    assert results[0].check(*types), results[0]
    return results[0]


def assert_no_secrets(text: str) -> None:
    for secret in ("s3cret", "alice", CREDENTIALS_B64):
        assert secret not in text, text


# -- proxy URLs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "username", "password"),
    [
        ("http://proxy.corp:3128", "proxy.corp", 3128, None, None),
        ("proxy.corp:3128", "proxy.corp", 3128, None, None),  # no scheme: http
        ("http://proxy.corp", "proxy.corp", 80, None, None),  # as Go and Python
        ("http://PROXY.Corp:8080/", "proxy.corp", 8080, None, None),
        ("http://[::1]:3128", "::1", 3128, None, None),
        ("http://alice@proxy:1", "proxy", 1, "alice", ""),
        # Escapes in credentials are decoded: '@' and ':' have to be escaped.
        ("http://u%40corp:p%3Ass%20w@proxy:8080", "proxy", 8080, "u@corp", "p:ss w"),
    ],
)
def test_proxy_url_forms(
    text: str, host: str, port: int, username: str | None, password: str | None
) -> None:
    server = ProxyServer.parse(text)
    assert (server.host, server.port, server.username, server.password) == (
        host,
        port,
        username,
        password,
    )


def test_proxy_authorization_is_basic_of_the_decoded_credentials() -> None:
    server = ProxyServer.parse("http://u%40corp:p%3Ass@proxy:8080")
    assert server.authorization == b"Basic " + base64.b64encode(b"u@corp:p:ss")
    assert ProxyServer.parse("http://proxy:8080").authorization is None


def test_proxy_credentials_stay_out_of_repr_and_str() -> None:
    server = ProxyServer.parse(PROXY_URL)
    assert str(server) == "http://proxy.test:3128"
    assert server.address == "proxy.test:3128"
    assert_no_secrets(repr(server))
    assert_no_secrets(repr(ProxySettings.from_url(PROXY_URL)))
    assert_no_secrets(ProxySettings.from_url(PROXY_URL).describe())


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("https://alice:s3cret@proxy.test:3128", "https:// proxies"),
        ("socks5://alice:s3cret@proxy.test:1080", "only http://"),
        ("http://alice:s3cret@proxy.test:99999", "bad host or port"),
        ("http://alice:s3cret@proxy.test:3128/path", "no path"),
        ("http://:s3cret@proxy.test:3128", "no user name"),
        ("http://alice:s3cret@:3128", "no host"),
        ("", "empty"),
    ],
)
def test_bad_proxy_urls_are_config_errors_without_the_password(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ProxyServer.parse(text)
    assert complaint in str(raised.value)
    assert_no_secrets(str(raised.value))


# -- NO_PROXY -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("", "example.com", 443, False),
        ("example.com", "example.com", 443, True),
        ("example.com", "www.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        ("example.com", "example.com.evil", 443, False),
        # A leading dot or "*." changes nothing (curl, Python): itself and below.
        (".example.com", "example.com", 443, True),
        (".example.com", "a.b.example.com", 443, True),
        ("*.example.com", "example.com", 443, True),
        ("*.example.com", "x.example.com", 443, True),
        # Case and a trailing dot do not matter, on either side.
        ("EXAMPLE.com.", "Example.COM.", 443, True),
        # Docker Hub: the registry and its token service are under docker.io,
        # its CDN under docker.com.
        ("docker.io", "registry-1.docker.io", 443, True),
        ("docker.io", "production.cloudflare.docker.com", 443, False),
        ("registry-1.docker.io", "auth.docker.io", 443, False),
        # Ports, as Go reads them.
        ("example.com:5000", "example.com", 5000, True),
        ("example.com:5000", "example.com", 443, False),
        ("127.0.0.1:5000", "127.0.0.1", 5000, True),
        ("127.0.0.1:5000", "127.0.0.1", 5001, False),
        ("[::1]:5000", "::1", 5000, True),
        ("[::1]:5000", "::1", 5001, False),
        # Addresses and networks.
        ("127.0.0.1", "127.0.0.1", 443, True),
        ("::1", "::1", 443, True),
        ("[::1]", "[::1]", 443, True),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("fd00::/8", "fd12:3456::1", 443, True),
        ("fd00::/8", "10.0.0.1", 443, False),
        ("10.0.0.0/8", "fd00::1", 443, False),
        # No DNS: names never match addresses, nor the other way round; and
        # loopback is not exempted unless listed (curl; Go would exempt it).
        ("localhost", "127.0.0.1", 443, False),
        ("127.0.0.1", "localhost", 443, False),
        ("10.0.0.0/8", "ten.example", 443, False),
        ("example.com", "127.0.0.1", 443, False),
        # "*" as an entry of its own means everything.
        ("*", "anything.example", 1, True),
        ("a.example, *", "b.example", 1, True),
        # Commas and white space separate; empty entries are nothing.
        (" a.example ,\tb.example ,, ", "b.example", 443, True),
        ("a.example b.example", "b.example", 443, True),
    ],
)
def test_no_proxy_matching(no_proxy: str, host: str, port: int, direct: bool) -> None:
    assert NoProxy.parse(no_proxy).matches(host, port) is direct


def test_no_proxy_keeps_what_it_did_not_understand_for_a_warning() -> None:
    bypass = NoProxy.parse("a.example, foo:bar, 10.0.0.0/99, *., [::1, ok.example:70000")
    assert bypass.ignored == ("foo:bar", "10.0.0.0/99", "*.", "[::1", "ok.example:70000")
    assert bypass.matches("a.example", 443)
    settings = ProxySettings.from_url("http://proxy:3128", "a.example, foo:bar")
    assert settings.notes == ("NO_PROXY entries not understood and ignored: foo:bar",)


# -- the environment ------------------------------------------------------------------


def test_environment_lower_case_wins_and_a_conflict_is_noted() -> None:
    settings = ProxySettings.from_environment(
        {
            "https_proxy": "http://lower:3128",
            "HTTPS_PROXY": "http://upper:3128",
            "HTTP_PROXY": "http://plain:3128",
            "NO_PROXY": "internal.example",
        }
    )
    assert settings is not None
    assert settings.https == ProxyServer("lower", 3128)
    assert settings.http == ProxyServer("plain", 3128)
    assert settings.no_proxy.matches("registry.internal.example", 443)
    assert settings.notes == (
        "https_proxy and HTTPS_PROXY are both set and differ; using https_proxy",
    )


def test_environment_same_value_twice_is_no_conflict_and_empty_is_unset() -> None:
    settings = ProxySettings.from_environment(
        {
            "https_proxy": "http://p:1",
            "HTTPS_PROXY": "http://p:1",
            "http_proxy": "",
            "HTTP_PROXY": "http://q:2",
        }
    )
    assert settings is not None
    assert settings.notes == ()
    assert settings.http == ProxyServer("q", 2)


def test_environment_without_proxies_means_direct() -> None:
    assert ProxySettings.from_environment({}) is None
    assert ProxySettings.from_environment({"NO_PROXY": "x", "ALL_PROXY": "socks5://s:1"}) is None
    assert proxy_settings(None, {"PATH": "/bin"}) is None


def test_http_proxy_alone_leaves_https_direct_and_says_so() -> None:
    settings = ProxySettings.from_environment({"http_proxy": "http://p:3128"})
    assert settings is not None
    assert settings.proxy_for("https", "registry-1.docker.io", 443) is None
    assert settings.proxy_for("http", "registry.local", 80) == ProxyServer("p", 3128)
    assert any("HTTPS_PROXY is not" in note for note in settings.notes)


def test_bad_environment_proxy_names_the_variable_not_the_password() -> None:
    with pytest.raises(ConfigError) as raised:
        ProxySettings.from_environment({"HTTPS_PROXY": "socks5://alice:s3cret@p:1080"})
    assert "HTTPS_PROXY" in str(raised.value)
    assert_no_secrets(str(raised.value))


def test_option_wins_over_environment_for_both_schemes_and_no_proxy_still_applies() -> None:
    environ = {
        "HTTPS_PROXY": "http://env-proxy:3128",
        "HTTP_PROXY": "http://env-proxy:3128",
        "NO_PROXY": ".internal.example",
    }
    settings = proxy_settings(PROXY_URL, environ)
    assert settings is not None
    chosen = ProxyServer.parse(PROXY_URL)
    assert settings.proxy_for("https", "registry-1.docker.io", 443) == chosen
    assert settings.proxy_for("http", "auth.example", 80) == chosen
    assert settings.proxy_for("https", "mirror.internal.example", 443) is None
    assert settings.proxy_for("ftp", "registry-1.docker.io", 21) is None
    assert settings.describe() == (
        "https via http://proxy.test:3128; http via http://proxy.test:3128; "
        "direct to internal.example"
    )


# -- the CONNECT handshake, byte for byte ----------------------------------------------


@define(eq=False)
class Recorder(Protocol):
    """What the protocol on the far side of a tunnel was given."""

    data: bytes = b""
    made: bool = False
    lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason


@define(eq=False)
class Handshake:
    """One ConnectTunnelEndpoint.connect over a MemoryReactorClock."""

    reactor: MemoryReactorClock
    result: Deferred[IProtocol]
    factory: Any = None
    protocol: Any = None
    transport: StringTransport = field(factory=StringTransport)

    @classmethod
    def start(
        cls, proxy: str = PROXY_URL, host: str = "registry.test", port: int = 443
    ) -> Handshake:
        reactor = MemoryReactorClock()
        server = ProxyServer.parse(proxy)
        endpoint = ConnectTunnelEndpoint(
            reactor,
            HostnameEndpoint(reactor, server.host, server.port),
            server,
            host,
            port,
            30.0,
        )
        return cls(reactor, endpoint.connect(Factory.forProtocol(Recorder)))

    def proxy_accepts(self) -> bytes:
        """Complete the TCP connection to the proxy; the bytes it was sent."""
        (_, port, self.factory, *_) = self.reactor.tcpClients[-1]
        assert port == PROXY_PORT
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return self.transport.value()

    def proxy_answers(self, data: bytes) -> None:
        self.protocol.dataReceived(data)


def test_connect_request_bytes_with_credentials() -> None:
    handshake = Handshake.start()
    assert handshake.proxy_accepts() == (
        b"CONNECT registry.test:443 HTTP/1.1\r\n"
        b"Host: registry.test:443\r\n"
        b"Proxy-Authorization: Basic " + CREDENTIALS_B64.encode() + b"\r\n"
        b"\r\n"
    )


def test_connect_request_without_credentials_and_to_ipv6() -> None:
    handshake = Handshake.start("http://proxy.test:3128", "2001:db8::1", 5000)
    assert handshake.proxy_accepts() == (
        b"CONNECT [2001:db8::1]:5000 HTTP/1.1\r\nHost: [2001:db8::1]:5000\r\n\r\n"
    )
    with pytest.raises(ValueError):
        connect_request("evil\r\nX-Injected: 1", 443, None)


def test_tunnel_opens_on_200_and_then_carries_every_byte() -> None:
    handshake = Handshake.start()
    handshake.proxy_accepts()
    assert not handshake.result.called
    # The head may arrive in pieces, and tunnel bytes in the same chunk as its end.
    handshake.proxy_answers(b"HTTP/1.0 200 Connection est")
    assert not handshake.result.called
    handshake.proxy_answers(b"ablished\r\nProxy-agent: test\r\n\r\nfirst")
    tunnelled = succeeded(handshake.result)
    assert isinstance(tunnelled, Recorder)
    assert tunnelled.made
    assert tunnelled.transport is not None
    handshake.proxy_answers(b" second")
    assert tunnelled.data == b"first second"
    # The far side writes straight to the proxy connection; nothing is added.
    tunnelled.transport.write(b"client hello")
    assert handshake.transport.value().endswith(b"\r\n\r\nclient hello")
    handshake.protocol.connectionLost(Failure(ConnectionRefusedError()))
    assert tunnelled.lost is not None
    # The answer timer went with the answer.
    assert not [c for c in handshake.reactor.getDelayedCalls() if c.active()]


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Negotiate\r\nProxy-Authenticate: Basic realm="corp"\r\n'
                b"Content-Length: 12\r\n\r\naccess denied"
            ),
            407,
        ),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 403),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", 502),
    ],
)
def test_refusal_fails_with_the_proxy_status_and_no_credentials(answer: bytes, status: int) -> None:
    handshake = Handshake.start()
    handshake.proxy_accepts()
    handshake.proxy_answers(answer)
    failure = failed(handshake.result, ProxyRefused)
    error = failure.value
    assert isinstance(error, ProxyRefused)
    assert error.status == status
    message = str(error)
    assert message.startswith(
        f"proxy proxy.test:3128 answered CONNECT registry.test:443 with {status}"
    )
    if status == 407:
        assert "Proxy Authentication Required" in message
        assert "it refused the user and password of the proxy URL" in message
    assert_no_secrets(message)
    assert handshake.transport.disconnected  # aborted, not left open


@pytest.mark.parametrize(
    ("proxy", "authenticate", "hint"),
    [
        (
            "http://proxy.test:3128",
            b"Basic realm=x",
            "it wants credentials: put user:password@ in the proxy URL",
        ),
        (
            PROXY_URL,
            b"NTLM\r\nProxy-Authenticate: Negotiate",
            "it wants NTLM, Negotiate authentication; mirrorproxy can only send Basic",
        ),
        (PROXY_URL, b'Basic realm="corp"', "it refused the user and password of the proxy URL"),
    ],
)
def test_407_says_what_to_do(proxy: str, authenticate: bytes, hint: str) -> None:
    handshake = Handshake.start(proxy)
    handshake.proxy_accepts()
    handshake.proxy_answers(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: "
        + authenticate
        + b"\r\n\r\n"
    )
    message = str(failed(handshake.result, ProxyRefused).value)
    assert message.endswith(f"({hint})"), message


def test_proxy_closing_before_answering_fails_the_connect() -> None:
    handshake = Handshake.start()
    handshake.proxy_accepts()
    handshake.protocol.connectionLost(Failure(ConnectionRefusedError()))
    failure = failed(handshake.result, ProxyError)
    assert "closed the connection before answering CONNECT registry.test:443" in str(failure.value)


def test_an_answer_that_is_not_http_fails_the_connect() -> None:
    handshake = Handshake.start()
    handshake.proxy_accepts()
    handshake.proxy_answers(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    failed(handshake.result, ProxyProtocolError)
    assert handshake.transport.disconnected


def test_an_endless_answer_head_fails_the_connect() -> None:
    handshake = Handshake.start()
    handshake.proxy_accepts()
    handshake.proxy_answers(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000)
    failed(handshake.result, ProxyProtocolError)


def test_no_answer_to_connect_times_out() -> None:
    handshake = Handshake.start()
    handshake.proxy_accepts()
    handshake.reactor.advance(29.9)
    assert not handshake.result.called
    handshake.reactor.advance(0.2)
    failure = failed(handshake.result, ProxyTimeout)
    # Still a Twisted TimeoutError: the upstream client maps it to a 504.
    assert failure.check(TimeoutError)
    assert "did not answer CONNECT registry.test:443 within 30s" in str(failure.value)
    assert handshake.transport.disconnected


def test_cancel_while_waiting_for_the_answer_aborts_the_connection() -> None:
    handshake = Handshake.start()
    handshake.proxy_accepts()
    handshake.result.cancel()
    failed(handshake.result, CancelledError)
    assert handshake.transport.disconnected
    # A late answer finds nobody waiting, and nothing breaks.
    handshake.proxy_answers(b"HTTP/1.1 200 OK\r\n\r\n")
    assert not [c for c in handshake.reactor.getDelayedCalls() if c.active()]


def test_cancel_while_connecting_to_the_proxy_stops_connecting() -> None:
    handshake = Handshake.start()
    handshake.result.cancel()
    failed(handshake.result, CancelledError)
    assert handshake.reactor.connectors[-1].stoppedConnecting


def test_proxy_refusing_the_tcp_connection_names_the_proxy() -> None:
    handshake = Handshake.start()
    (_, _, factory, *_) = handshake.reactor.tcpClients[-1]
    factory.clientConnectionFailed(
        handshake.reactor.connectors[-1], Failure(ConnectionRefusedError())
    )
    handshake.reactor.advance(1)
    failure = failed(handshake.result, ProxyUnreachable)
    assert str(failure.value).startswith("cannot connect to proxy proxy.test:3128: ")
    assert_no_secrets(str(failure.value))


# -- whole requests: the agent's routes, and TLS through the tunnel -------------------------


@define
class SeenRequest:
    method: bytes
    uri: bytes
    headers: dict[bytes, list[bytes]]


@define(eq=False)
class Upstream(Resource):
    """Every upstream host in one: records requests, answers with its body."""

    isLeaf = True
    body: bytes = b"layer bytes"
    seen: list[SeenRequest] = field(factory=list)

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Request) -> bytes:
        self.seen.append(
            SeenRequest(
                request.method,
                request.uri,
                {name: list(values) for name, values in request.requestHeaders.getAllRawHeaders()},
            )
        )
        return self.body


@define(eq=False)
class FakeProxy(Protocol):
    """A forward proxy: answers CONNECT with `status`; on 2xx hands the
    stream to `upstream` (the far end of the tunnel).  Absolute-form
    requests it hands to `upstream` as they are (a forwarding proxy that
    forwards to one place)."""

    status: bytes
    upstream: IProtocolFactory
    heads: list[bytes]
    _buffer: bytes = b""
    _far: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self._far is not None:
            self._far.dataReceived(data)
            return
        self._buffer += data
        head, sep, rest = self._buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        self.heads.append(head)
        assert self.transport is not None
        if head.startswith(b"CONNECT "):
            self.transport.write(b"HTTP/1.1 " + self.status + b"\r\nContent-Length: 0\r\n\r\n")
            if not self.status.startswith(b"2"):
                self.transport.loseConnection()
                return
            data = rest
        else:
            data = self._buffer
        self._far = self.upstream.buildProtocol(None)
        self._far.makeConnection(self.transport)
        if data:
            self._far.dataReceived(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._far is not None:
            self._far.connectionLost(reason)


@define(eq=False)
class World:
    """An agent over a MemoryReactorClock, and what its connections reach."""

    tmp_path: Path
    ca: TestCA
    reactor: MemoryReactorClock = field(factory=MemoryReactorClock)
    upstream: Upstream = field(factory=Upstream)
    proxy_heads: list[bytes] = field(factory=list)
    pumps: list[iosim.IOPump] = field(factory=list)

    def agent(self, proxy: ProxySettings | None, **tls: Any) -> Any:
        pool = HTTPConnectionPool(self.reactor, persistent=True)
        return make_agent(self.reactor, pool, proxy=proxy, connect_timeout=5.0, **tls)

    def site(self) -> Site:
        return Site(self.upstream, reactor=self.reactor)

    def tls_server(self, identity: ServerIdentity) -> TLSMemoryBIOFactory:
        return TLSMemoryBIOFactory(identity.server_tls(), False, self.site(), clock=self.reactor)

    def accept(self, server: IProtocol) -> tuple[str, int]:
        """Connect the agent's newest connection attempt to `server`; where
        the agent was connecting to (the test resolver says 127.0.0.1 for
        every name, so the port tells the proxy from the upstream)."""
        (host, port, factory, *_) = self.reactor.tcpClients[-1]
        client = factory.buildProtocol(None)
        pump = iosim.connect(
            server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=False
        )
        self.pumps.append(pump)
        self.flush()
        return host, port

    def proxy(
        self, far: IProtocolFactory, status: bytes = b"200 Connection established"
    ) -> FakeProxy:
        return FakeProxy(status, far, self.proxy_heads)

    def flush(self) -> None:
        # TLS gathers small writes for one turn of the clock before sending.
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()
            self.reactor.advance(0)

    def read(self, d: Deferred[Any]) -> bytes:
        response = succeeded(d)
        # Not readBody: it warns (DeprecationWarning) when the response is
        # already whole and its connection gone, as after a flush here.
        body = content(response)
        self.flush()
        return succeeded(body)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.generate()


@pytest.fixture
def world(tmp_path: Path, ca: TestCA) -> World:
    return World(tmp_path, ca)


@pytest.fixture
def bundle(world: World) -> str:
    return str(world.ca.write_bundle(world.tmp_path / "corp-ca.pem"))


def test_https_through_the_tunnel_is_tls_to_the_upstream_verified_with_the_added_ca(
    world: World, bundle: str
) -> None:
    agent = world.agent(ProxySettings.from_url(PROXY_URL), ca_file=bundle)
    d = agent.request(b"GET", b"https://registry.test/v2/library/alpine/blobs/sha256:ab")
    far = world.tls_server(world.ca.issue(["registry.test"]))
    assert world.accept(world.proxy(far)) == ("127.0.0.1", PROXY_PORT)
    assert world.read(d) == b"layer bytes"
    # The proxy saw CONNECT with credentials, and not one byte in clear after it.
    assert world.proxy_heads == [
        b"CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443\r\n"
        b"Proxy-Authorization: Basic " + CREDENTIALS_B64.encode()
    ]
    # The registry got an origin-form request, and never the proxy's credentials.
    (seen,) = world.upstream.seen
    assert seen.uri == b"/v2/library/alpine/blobs/sha256:ab"
    assert seen.headers[b"Host"] == [b"registry.test"]
    assert b"Proxy-Authorization" not in seen.headers


def test_a_pooled_tunnel_is_reused_for_its_host_only(world: World, bundle: str) -> None:
    agent = world.agent(ProxySettings.from_url(PROXY_URL), ca_file=bundle)
    far = world.tls_server(world.ca.issue(["registry.test", "cdn.test"]))
    first = agent.request(b"GET", b"https://registry.test/v2/")
    world.accept(world.proxy(far))
    assert world.read(first) == b"layer bytes"
    connections = len(world.reactor.tcpClients)

    again = agent.request(b"GET", b"https://registry.test/v2/again")
    world.flush()
    assert world.read(again) == b"layer bytes"
    assert len(world.reactor.tcpClients) == connections  # the same tunnel

    # Another host (a CDN redirect target) gets a tunnel of its own.
    other = agent.request(b"GET", b"https://cdn.test/blob")
    assert len(world.reactor.tcpClients) == connections + 1
    world.accept(world.proxy(far))
    assert world.read(other) == b"layer bytes"
    assert [h.split(b"\r\n")[0] for h in world.proxy_heads] == [
        b"CONNECT registry.test:443 HTTP/1.1",
        b"CONNECT cdn.test:443 HTTP/1.1",
    ]
    assert [s.headers[b"Host"] for s in world.upstream.seen] == [
        [b"registry.test"],
        [b"registry.test"],
        [b"cdn.test"],
    ]


def test_without_the_added_ca_the_upstream_certificate_is_refused(world: World) -> None:
    agent = world.agent(ProxySettings.from_url(PROXY_URL))
    d = agent.request(b"GET", b"https://registry.test/v2/")
    world.accept(world.proxy(world.tls_server(world.ca.issue(["registry.test"]))))
    failure = failed(d, UpstreamTLSError)
    assert str(failure.value) == (
        "TLS with registry.test:443 failed: certificate verify failed (not signed by a "
        "trusted CA: behind a TLS-intercepting proxy, or for a private registry, add its "
        "CA bundle with --upstream-ca)"
    )
    # Still a ConnectError: the upstream client maps it to "cannot reach" (502).
    assert failure.check(ConnectError)
    assert world.upstream.seen == []


def test_the_upstream_name_is_verified_not_just_the_chain(world: World, bundle: str) -> None:
    agent = world.agent(ProxySettings.from_url(PROXY_URL), ca_file=bundle)
    d = agent.request(b"GET", b"https://registry.test/v2/")
    # Signed by the trusted CA, but for another name: what a hijacked route shows.
    world.accept(world.proxy(world.tls_server(world.ca.issue(["evil.test"]))))
    failure = failed(d, UpstreamTLSError)
    assert str(failure.value) == (
        "TLS with registry.test:443 failed: its certificate is not valid for that name"
    )
    assert world.upstream.seen == []


def test_insecure_mode_accepts_any_certificate(world: World) -> None:
    agent = world.agent(ProxySettings.from_url(PROXY_URL), verify=False)
    d = agent.request(b"GET", b"https://registry.test/v2/")
    world.accept(world.proxy(world.tls_server(TestCA.generate().issue(["evil.test"]))))
    assert world.read(d) == b"layer bytes"


def test_proxy_407_on_connect_fails_the_request_naming_the_status(
    world: World, bundle: str
) -> None:
    agent = world.agent(ProxySettings.from_url(PROXY_URL), ca_file=bundle)
    d = agent.request(b"GET", b"https://registry.test/v2/")
    far = world.tls_server(world.ca.issue(["registry.test"]))
    world.accept(world.proxy(far, status=b"407 Proxy Authentication Required"))
    failure = failed(d, ProxyRefused)
    assert "answered CONNECT registry.test:443 with 407" in str(failure.value)
    assert_no_secrets(str(failure.value))


def test_http_through_the_proxy_is_absolute_form_with_credentials(world: World) -> None:
    agent = world.agent(ProxySettings.from_url(PROXY_URL))
    d = agent.request(b"GET", b"http://auth.test/token?service=registry.test&scope=x")
    assert world.accept(world.proxy(world.site())) == ("127.0.0.1", PROXY_PORT)
    assert world.read(d) == b"layer bytes"
    (seen,) = world.upstream.seen
    assert seen.uri == b"http://auth.test/token?service=registry.test&scope=x"
    assert seen.headers[b"Proxy-Authorization"] == [b"Basic " + CREDENTIALS_B64.encode()]
    assert seen.headers[b"Host"] == [b"auth.test"]


def test_http_proxy_407_fails_the_request_naming_the_status(world: World) -> None:
    world.upstream.body = b"proxy says no"
    agent = world.agent(ProxySettings.from_url(PROXY_URL))
    d = agent.request(b"GET", b"http://auth.test/token")

    @define(eq=False)
    class Demand407(Resource):
        isLeaf = True

        def __attrs_post_init__(self) -> None:
            Resource.__init__(self)

        def render(self, request: Request) -> bytes:
            request.setResponseCode(407)
            request.setHeader(b"Proxy-Authenticate", b'Basic realm="corp"')
            return b"no"

    world.accept(world.proxy(Site(Demand407(), reactor=world.reactor)))
    failure = failed(d, ProxyRefused)
    assert str(failure.value).startswith(
        "proxy proxy.test:3128 answered a request for auth.test:80 with 407"
    )
    assert "it refused the user and password of the proxy URL" in str(failure.value)


@define(eq=False)
class Answer401(Resource):
    """A 401 as tinyproxy 1.11 makes one up, or as a registry's challenge
    comes through a proxy (the Site's own Server header: not tinyproxy)."""

    isLeaf = True
    server: bytes | None

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Request) -> bytes:
        request.setResponseCode(401)
        if self.server is not None:
            request.setHeader(b"Server", self.server)
            request.setHeader(b"WWW-Authenticate", b'Basic realm="Tinyproxy"')
        else:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="http://auth.test/token"')
        return b"no"


def test_http_proxy_tinyproxy_401_fails_the_request_as_the_proxy_refusing(world: World) -> None:
    # tinyproxy before 1.12 answers wrong credentials with 401 (its issue #532).
    agent = world.agent(ProxySettings.from_url(PROXY_URL))
    d = agent.request(b"GET", b"http://registry.test/v2/")
    world.accept(world.proxy(Site(Answer401(b"tinyproxy/1.11.1"), reactor=world.reactor)))
    failure = failed(d, ProxyRefused)
    assert str(failure.value) == (
        "proxy proxy.test:3128 answered a request for registry.test:80 with 401 Unauthorized "
        "(it refused the user and password of the proxy URL)"
    )
    assert_no_secrets(str(failure.value))


def test_http_through_the_proxy_an_upstream_401_is_the_upstreams(world: World) -> None:
    agent = world.agent(ProxySettings.from_url(PROXY_URL))
    d = agent.request(b"GET", b"http://registry.test/v2/")
    world.accept(world.proxy(Site(Answer401(None), reactor=world.reactor)))
    response = succeeded(d)
    assert response.code == 401
    assert response.headers.getRawHeaders(b"www-authenticate") == [
        b'Bearer realm="http://auth.test/token"'
    ]


def test_no_proxy_hosts_go_direct_over_tls_and_in_origin_form(world: World, bundle: str) -> None:
    environ = {"https_proxy": PROXY_URL, "http_proxy": PROXY_URL, "no_proxy": ".internal.test"}
    agent = world.agent(proxy_settings(None, environ), ca_file=bundle)
    d = agent.request(b"GET", b"https://mirror.internal.test:5000/v2/")
    far = world.tls_server(world.ca.issue(["mirror.internal.test"]))
    # Straight to the registry's port, TLS first thing: no CONNECT.
    assert world.accept(far.buildProtocol(None)) == ("127.0.0.1", 5000)
    assert world.read(d) == b"layer bytes"

    plain = agent.request(b"GET", b"http://auth.internal.test/token")
    assert world.accept(world.site().buildProtocol(None)) == ("127.0.0.1", 80)
    assert world.read(plain) == b"layer bytes"
    assert world.proxy_heads == []
    assert [s.uri for s in world.upstream.seen] == [b"/v2/", b"/token"]
    assert all(b"Proxy-Authorization" not in s.headers for s in world.upstream.seen)


def test_without_proxy_settings_everything_goes_direct(world: World, bundle: str) -> None:
    agent = world.agent(None, ca_file=bundle)
    d = agent.request(b"GET", b"https://registry.test/v2/")
    far = world.tls_server(world.ca.issue(["registry.test"]))
    assert world.accept(far.buildProtocol(None)) == ("127.0.0.1", 443)
    assert world.read(d) == b"layer bytes"


# -- TLS settings ---------------------------------------------------------------------------


def test_the_added_bundle_extends_the_platform_roots(ca: TestCA, tmp_path: Path) -> None:
    system_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not system_bundle.exists():
        pytest.skip("no platform CA bundle (Debian package ca-certificates)")
    # Its first root only: Debian's bundle holds roots with serial number 0
    # (Go Daddy, Starfield), which cryptography warns about when it parses them.
    system_root = x509.load_pem_x509_certificate(system_bundle.read_bytes())
    leaf = x509.load_pem_x509_certificate(ca.issue(["registry.test"]).certificate_pem)
    ours = crypto.X509.from_cryptography(leaf)

    def verifies(trust: Any, certificate: Any) -> bool:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        trust._addCACertsToContext(context)
        store = context.get_cert_store()
        assert store is not None
        try:
            crypto.X509StoreContext(store, certificate).verify_certificate()
        except crypto.X509StoreContextError:
            return False
        return True

    plus = _PlatformTrustPlus((crypto.X509.from_cryptography(ca.certificate),))
    assert verifies(plus, ours)
    assert verifies(plus, crypto.X509.from_cryptography(system_root))
    assert not verifies(platformTrust(), ours)


def test_a_ca_appended_to_the_platform_bundle_is_read_whole_and_without_warnings(
    ca: TestCA, tmp_path: Path
) -> None:
    # The usual corporate recipe: cat corp-ca.pem >> ca-certificates.crt.
    # Debian's bundle holds roots with serial number 0, which cryptography
    # warns about now and means to refuse later: reading must not depend on it.
    system_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not system_bundle.exists():
        pytest.skip("no platform CA bundle (Debian package ca-certificates)")
    combined = tmp_path / "combined.pem"
    combined.write_bytes(system_bundle.read_bytes() + b"\n" + ca.certificate_pem)
    platform_count = system_bundle.read_bytes().count(b"-----BEGIN CERTIFICATE-----")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        certificates = read_ca_bundle(str(combined))

    assert len(certificates) == platform_count + 1
    assert certificates[-1].to_cryptography() == ca.certificate


def test_tls_settings_errors(tmp_path: Path, ca: TestCA) -> None:
    with pytest.raises(ConfigError, match="cannot read CA bundle"):
        tls_policy(ca_file=str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificates"):
        tls_policy(ca_file=str(tmp_path / "empty.pem"))
    (tmp_path / "broken.pem").write_bytes(
        ca.certificate_pem + b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(ConfigError, match="certificate 2 of 2 is broken"):
        tls_policy(ca_file=str(tmp_path / "broken.pem"))
    bundle = str(ca.write_bundle(tmp_path / "ca.pem"))
    with pytest.raises(ConfigError, match="contradict"):
        tls_policy(ca_file=bundle, verify=False)


def test_connection_creators_are_made_once_per_host_and_port(tmp_path: Path, ca: TestCA) -> None:
    policy = tls_policy(ca_file=str(ca.write_bundle(tmp_path / "ca.pem")))
    first = policy.creatorForNetloc(b"registry.test", 443)
    assert policy.creatorForNetloc(b"registry.test", 443) is first
    assert policy.creatorForNetloc(b"registry.test", 5000) is not first
