"""The `IAgent` every upstream request goes through (`make_agent`).

Each request goes directly, through a CONNECT tunnel (https: TLS end to end
with the upstream, the proxy sees only ``host:port``), or as an
absolute-form request to the proxy (http), as the `ProxySettings` say, with
TLS as `tls_policy` says.  Failures Twisted reports vaguely (a proxy's 407
to an absolute-form request, a failed TLS handshake) are renamed here into
errors an operator can act on.
"""

from __future__ import annotations

from typing import Any

from attrs import define
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
    ProxyAgent,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

from ..bodies import discard_body
from .addresses import AddressPolicy, GuardedHostnameEndpoint
from .errors import ProxyRefused, UpstreamTLSError
from .hosts import format_address, normal_host
from .proxies import ProxyServer, ProxySettings
from .trust import tls_policy
from .tunnel import ConnectTunnelEndpoint, offered_schemes, printable

DEFAULT_PORTS = {"http": 80, "https": 443}


@implementer(IAgentEndpointFactory)
@define(eq=False)
class _EgressEndpointFactory:
    """Direct (HostnameEndpoint) or tunnelled (ConnectTunnelEndpoint), TLS
    on top for https.

    The agent's pool keys connections by (scheme, host, port) of the target
    and the route for a target never changes, so a pooled tunnel is only
    ever reused for the host it was opened to.
    """

    _reactor: Any
    _proxy: ProxySettings | None
    _tls: IPolicyForHTTPS
    _connect_timeout: float
    # Direct connections go only to the addresses it allows (a proxy
    # resolves names itself; then only address literals are checked).
    _address_policy: AddressPolicy | None = None

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        scheme = uri.scheme.decode("ascii")
        if scheme not in DEFAULT_PORTS:
            raise SchemeNotSupported(f"unsupported scheme: {scheme!r}")
        host = normal_host(uri.host.decode("ascii"))
        server = self._proxy.proxy_for(scheme, host, uri.port) if self._proxy else None
        endpoint: IStreamClientEndpoint
        if server is None and self._address_policy is not None:
            endpoint = GuardedHostnameEndpoint(
                self._reactor, host, uri.port, self._address_policy, self._connect_timeout
            )
        elif server is None:
            endpoint = HostnameEndpoint(
                self._reactor, host, uri.port, timeout=self._connect_timeout
            )
        else:
            endpoint = ConnectTunnelEndpoint(
                self._reactor,
                HostnameEndpoint(
                    self._reactor, server.host, server.port, timeout=self._connect_timeout
                ),
                server,
                host,
                uri.port,
                self._connect_timeout,
            )
        if scheme == "https":
            creator = self._tls.creatorForNetloc(host.encode("ascii"), uri.port)
            # The clock is for TLS's aggregation of small writes; without it
            # Twisted would reach for the global reactor.
            endpoint = wrapClientTLS(creator, endpoint, clock=self._reactor)
        return endpoint


@implementer(IAgent)
@define(eq=False)
class _EgressAgent:
    """Sends http:// requests that have a proxy to it in absolute form
    (Twisted's ProxyAgent, plus ``Proxy-Authorization``), everything else
    through an Agent over `_EgressEndpointFactory`; names TLS failures."""

    _agent: IAgent
    _proxy: ProxySettings | None
    _forwarders: dict[ProxyServer, ProxyAgent]

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        # Only to choose the route; both agents validate the URI themselves.
        parsed = URI.fromBytes(uri.strip())
        host = normal_host(parsed.host.decode("ascii"))
        target = format_address(host, parsed.port)
        if parsed.scheme == b"http" and self._proxy is not None:
            server = self._proxy.proxy_for("http", host, parsed.port)
            if server is not None:
                headers = headers.copy() if headers is not None else Headers()
                if server.authorization is not None:
                    headers.setRawHeaders(b"proxy-authorization", [server.authorization])
                d: Deferred[IResponse] = self._forwarders[server].request(method, uri, headers, bodyProducer)
                return d.addCallback(_refuse_proxy_answer, server, target)
        d = self._agent.request(method, uri, headers, bodyProducer)
        if parsed.scheme == b"https":
            d.addErrback(_name_tls_failure, target)
        return d


def _refuse_proxy_answer(response: IResponse, server: ProxyServer, target: str) -> IResponse:
    """Report the proxy's own refusal as CONNECT's is reported; pass
    everything else through, the upstream's 401 challenges included."""
    if response.code != 407 and not _tinyproxy_401(response, server):
        return response
    offered = offered_schemes(
        {b"proxy-authenticate": response.headers.getRawHeaders(b"proxy-authenticate", [])}
    )
    discard_body(response)
    raise ProxyRefused(
        server.address,
        f"a request for {target}",
        response.code,
        printable(response.phrase),
        offered=offered,
        sent_credentials=server.authorization is not None,
    )


def _tinyproxy_401(response: IResponse, server: ProxyServer) -> bool:
    # 407 comes only from proxies (RFC 9110 15.5.8), but a 401 is usually the
    # upstream's challenge.  tinyproxy before 1.12 answers wrong credentials
    # with a 401 of its own (its issue #532); the answers it makes up carry
    # "Server: tinyproxy/VERSION", those it forwards keep the upstream's
    # headers and get no Server header from it.
    if response.code != 401 or server.authorization is None:
        return False
    product = b"".join(response.headers.getRawHeaders(b"server", [])[:1])
    return product.lower().startswith(b"tinyproxy/")


def _name_tls_failure(failure: Failure, target: str) -> Failure:
    """A failed TLS handshake, as an error an operator can act on.

    Twisted reports it as ResponseNeverReceived around an OpenSSL or
    service-identity error; the handshake precedes the request, so nothing
    reached the upstream and it is a failure to connect.
    """
    if not isinstance(failure.value, ResponseNeverReceived):
        return failure
    for reason in failure.value.reasons:
        if reason.check(VerificationError):
            return Failure(
                UpstreamTLSError(
                    f"TLS with {target} failed: its certificate is not valid for that name"
                )
            )
        if reason.check(SSL.Error):
            detail = _openssl_reasons(reason.value)
            hint = ""
            if "certificate verify failed" in detail:
                hint = (
                    " (not signed by a trusted CA: behind a TLS-intercepting proxy, or "
                    "for a private registry, add its CA bundle with --upstream-ca)"
                )
            return Failure(UpstreamTLSError(f"TLS with {target} failed: {detail}{hint}"))
    return failure


def _openssl_reasons(error: BaseException) -> str:
    # SSL.Error's argument is a list of (library, function, reason) tuples.
    try:
        reasons = [str(entry[2]) for entry in error.args[0] if entry[2]]
    except (IndexError, TypeError):
        reasons = []
    return ", ".join(reasons) or str(error)


def make_agent(
    reactor: Any,
    pool: HTTPConnectionPool,
    *,
    proxy: ProxySettings | None = None,
    ca_file: str | None = None,
    verify: bool = True,
    connect_timeout: float = 10.0,
    address_policy: AddressPolicy | None = None,
) -> IAgent:
    """The IAgent for every upstream request: registry, token service, CDN.

    `reactor` provides IReactorTCP, IReactorTime and name resolution;
    `pool` is this agent's own connection pool (do not share it with an
    agent that routes differently: pool keys do not include the route).
    https targets with a proxy go through a CONNECT tunnel, http targets with
    a proxy as absolute-form requests; the rest go direct.  TLS as
    `tls_policy` says; `connect_timeout` bounds the TCP connect (to the
    upstream or to the proxy) and the wait for the proxy's CONNECT answer.
    With `address_policy`, direct connections go only to the addresses it
    allows (for hosts the upstream redirects to).  ConfigError if `ca_file`
    is unusable.
    """
    tls = tls_policy(ca_file=ca_file, verify=verify)
    agent = Agent.usingEndpointFactory(
        reactor,
        _EgressEndpointFactory(reactor, proxy, tls, connect_timeout, address_policy),
        pool=pool,
    )
    forwarders = {}
    if proxy is not None and proxy.http is not None:
        # One ProxyAgent, hence one proxy endpoint: ProxyAgent pools its
        # connections by endpoint, so they are reused across targets.
        forwarders[proxy.http] = ProxyAgent(
            HostnameEndpoint(reactor, proxy.http.host, proxy.http.port, timeout=connect_timeout),
            reactor,
            pool,
        )
    return _EgressAgent(agent, proxy, forwarders)
