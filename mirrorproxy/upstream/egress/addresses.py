"""Where an upstream may send the mirror: no internal addresses.

A redirect is upstream telling the mirror where to connect next.  Followed
blindly, a hostile or compromised upstream could make the mirror fetch from
its own loopback, the cloud metadata service or any host of the private
network, and relay the answer.  So a redirect may lead to a global address,
to the configured upstream's own host (a lab or corporate registry lives on
a private address), or into networks the operator allowed
(``--upstream-redirect-allow``).

Host names are checked where it counts: on the addresses the connection is
made to (`GuardedHostnameEndpoint`), so a name that resolves inside, or
rebinds between a check and the connect, gets nowhere.  Through an HTTP
proxy the proxy resolves names; then only address literals in the URL are
checked (`AddressPolicy.refusal`), and the proxy's own rules apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from ...common.networks import Address, Network, parse_address
from .hosts import is_ip, normal_host


class InternalAddressRefused(ConnectError):
    """A host named by upstream resolves only to addresses it may not lead to."""

    def __init__(self, host: str, refused: Iterable[str]) -> None:
        self.host = host
        self.refused = tuple(refused)
        super().__init__(string=f"{host} resolves only to internal addresses ({', '.join(self.refused)})")

    def __str__(self) -> str:
        return f"{self.host} resolves only to internal addresses ({', '.join(self.refused)})"


def _kind(address: Address) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    return "non-global"


@frozen
class AddressPolicy:
    """Which addresses a host that upstream names may lead to."""

    own_host: str = field(converter=normal_host)
    allowed: tuple[Network, ...] = ()

    def trusts(self, host: str) -> bool:
        """Whether `host` is the configured upstream's own: any address goes."""
        return normal_host(host) == self.own_host

    def refusal(self, host: str, address: str) -> str | None:
        """Why connecting to `address` for `host` is refused; None if it is not."""
        if self.trusts(host):
            return None
        parsed = parse_address(address)
        if parsed.is_global and not parsed.is_multicast:
            return None
        if any(parsed in network for network in self.allowed):
            return None
        return f"{_kind(parsed)} address {parsed}"

    def refuses_literal(self, host: str) -> str | None:
        """For a URL's host: why it is refused, if it is an address literal."""
        host = normal_host(host)
        return self.refusal(host, host) if is_ip(host) else None


@implementer(IResolutionReceiver)
@define(eq=False)
class _Filter:
    """Passes the addresses the policy allows on to the endpoint's receiver;
    keeps the others, to say why nothing was left."""

    _receiver: Any
    _host: str
    _policy: AddressPolicy
    refused: list[str] = field(factory=list)

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        self._receiver.resolutionBegan(resolution)

    def addressResolved(self, address: IAddress) -> None:
        host = getattr(address, "host", None)
        if host is not None and self._policy.refusal(self._host, host) is not None:
            self.refused.append(str(parse_address(host)))
            return
        self._receiver.addressResolved(address)

    def resolutionComplete(self) -> None:
        self._receiver.resolutionComplete()


@implementer(IHostnameResolver)
@define(eq=False)
class _FilteringResolver:
    _resolver: IHostnameResolver
    _policy: AddressPolicy
    last: _Filter | None = None

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.last = _Filter(resolutionReceiver, hostName, self._policy)
        return self._resolver.resolveHostName(
            self.last, hostName, portNumber, addressTypes, transportSemantics
        )


@implementer(IReactorPluggableNameResolver)
class _ResolvingThrough:
    """The reactor, with another name resolver: what HostnameEndpoint uses."""

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise NotImplementedError("a view of the reactor, not the reactor")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@implementer(IStreamClientEndpoint)
@define(eq=False)
class GuardedHostnameEndpoint:
    """HostnameEndpoint that connects only to addresses `policy` allows, and
    fails with InternalAddressRefused when none is left."""

    _reactor: Any
    _host: str
    _port: int
    _policy: AddressPolicy
    _timeout: float = 30.0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if self._policy.refuses_literal(self._host) is not None:
            return fail(InternalAddressRefused(self._host, [str(parse_address(self._host))]))
        resolver = _FilteringResolver(IReactorPluggableNameResolver(self._reactor).nameResolver, self._policy)
        endpoint = HostnameEndpoint(
            _ResolvingThrough(self._reactor, resolver), self._host, self._port, timeout=self._timeout
        )

        def name_refusal(failure: Failure) -> Failure:
            if failure.check(DNSLookupError) and resolver.last is not None and resolver.last.refused:
                return Failure(InternalAddressRefused(self._host, resolver.last.refused))
            return failure

        return endpoint.connect(protocolFactory).addErrback(name_refusal)
