"""IP addresses and networks as the mirror compares them.

A scoped link-local address (``fe80::1%eth0``) is compared without its zone,
and an IPv4 address seen through an IPv6 socket (``::ffff:10.1.2.3``) as the
IPv4 address it is, so that ``--allow 10.0.0.0/8`` and the redirect policy
mean the same on every listener and resolver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from twisted.internet.address import IPv4Address, IPv6Address

from .errors import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str], option: str) -> tuple[Network, ...]:
    """CIDRs (IPv4 or IPv6; a bare address is a /32 or /128) -> networks."""
    networks = []
    for text in cidrs:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=True))
        except ValueError as e:
            raise ConfigError(f"{option} {text!r}: {e}") from None
    return tuple(networks)


def parse_address(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_address(peer: object) -> Address | None:
    """A connection's peer address; None for a peer that has none (a UNIX
    socket)."""
    if not isinstance(peer, (IPv4Address, IPv6Address)):
        return None
    return parse_address(peer.host)
