"""Hosts an upstream redirects to are connected to only at addresses the
policy allows: what a name resolves to is checked, not the name.

A fake resolver stands in for DNS (nothing is looked up); connections land in
a MemoryReactor, so the tests see exactly which addresses were dialled.
"""

from __future__ import annotations

import ipaddress

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorPluggableNameResolver
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import HTTPConnectionPool
from zope.interface import directlyProvides

from mirrorproxy.upstream.egress.addresses import (
    AddressPolicy,
    GuardedHostnameEndpoint,
    InternalAddressRefused,
)
from mirrorproxy.upstream.egress.agent import make_agent

NAMES = {
    "inside.example": ["10.0.0.5"],
    "loopback.example": ["127.0.0.1", "::1"],
    "mixed.example": ["10.0.0.5", "93.184.216.34"],
    "cdn.example": ["93.184.216.34", "2606:2800:220:1::1"],
    "registry.corp": ["10.0.0.9"],
}


class FakeResolver:
    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
        receiver.resolutionBegan(None)
        literal = [hostName] if hostName.replace(".", "").isdigit() or ":" in hostName else []
        for address in NAMES.get(hostName, literal):
            kind = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(kind("TCP", address, portNumber))
        receiver.resolutionComplete()


def resolving_reactor() -> MemoryReactorClock:
    reactor = MemoryReactorClock()
    reactor.nameResolver = FakeResolver()
    directlyProvides(reactor, IReactorPluggableNameResolver)
    return reactor


def dialled(reactor: MemoryReactorClock) -> list[str]:
    return [host for host, *_ in reactor.tcpClients]


POLICY = AddressPolicy("registry.corp", (ipaddress.ip_network("192.168.0.0/16"),))


def connect(host: str, policy: AddressPolicy = POLICY):
    reactor = resolving_reactor()
    endpoint = GuardedHostnameEndpoint(reactor, host, 80, policy)
    d = endpoint.connect(Factory.forProtocol(Protocol))
    reactor.advance(1)  # HostnameEndpoint's staggered attempts
    return reactor, d


@pytest.mark.parametrize("host", ["inside.example", "loopback.example", "10.0.0.5", "127.0.0.1"])
def test_a_host_that_resolves_inside_is_never_dialled(host):
    reactor, d = connect(host)

    failure = []
    d.addErrback(failure.append)
    assert dialled(reactor) == []
    (reason,) = failure
    assert reason.check(InternalAddressRefused)
    assert "resolves only to internal addresses" in str(reason.value)


def test_only_the_global_addresses_of_a_mixed_name_are_dialled():
    reactor, d = connect("mixed.example")

    assert dialled(reactor) == ["93.184.216.34"]


def test_the_upstreams_own_host_is_dialled_wherever_it_is():
    reactor, d = connect("registry.corp")

    assert dialled(reactor) == ["10.0.0.9"]


def test_an_allowed_network_is_dialled():
    reactor, d = connect("inside.example", AddressPolicy("registry.corp", (ipaddress.ip_network("10.0.0.0/8"),)))

    assert dialled(reactor) == ["10.0.0.5"]


@pytest.mark.parametrize(
    "address, refused",
    [
        ("93.184.216.34", None),
        ("2606:2800:220:1::1", None),
        ("127.0.0.1", "loopback address 127.0.0.1"),
        ("::ffff:169.254.169.254", "link-local address 169.254.169.254"),
        ("fe80::1%eth0", "link-local address fe80::1"),
        ("100.64.0.1", "non-global address 100.64.0.1"),
        ("224.0.0.1", "multicast address 224.0.0.1"),
        ("192.168.7.7", None),  # the policy's allowed network
    ],
)
def test_the_policy_names_what_it_refuses(address, refused):
    assert POLICY.refusal("somewhere.example", address) == refused


def test_an_agent_with_the_policy_refuses_to_dial_inside():
    reactor = resolving_reactor()
    agent = make_agent(reactor, HTTPConnectionPool(reactor), address_policy=POLICY)

    d = agent.request(b"GET", b"http://inside.example/secret")
    reactor.advance(1)

    failure = []
    d.addErrback(failure.append)
    assert dialled(reactor) == []
    assert failure and failure[0].check(InternalAddressRefused)


def test_an_agent_without_the_policy_dials_as_before():
    reactor = resolving_reactor()
    agent = make_agent(reactor, HTTPConnectionPool(reactor))

    agent.request(b"GET", b"http://inside.example/")
    reactor.advance(1)

    assert dialled(reactor) == ["10.0.0.5"]
