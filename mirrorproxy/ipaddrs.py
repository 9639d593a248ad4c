"""IP addresses as the mirror compares them against networks.

A scoped link-local address (``fe80::1%eth0``) is compared without its zone,
and an IPv4 address seen through an IPv6 socket (``::ffff:10.1.2.3``) as the
IPv4 address it is, so that ``--allow 10.0.0.0/8`` and the redirect policy
mean the same on every listener and resolver.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
