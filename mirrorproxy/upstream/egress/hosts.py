"""Hosts as egress compares and prints them: one spelling of a host name,
``host:port`` with IPv6 in brackets, and whether a host is an IP address.

NO_PROXY matching, the choice of route, the CONNECT target and SNI all go
through these, so they agree about which host a URL names.
"""

from __future__ import annotations

import ipaddress


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normal_host(host: str) -> str:
    """Lower case, no IPv6 brackets, no trailing dot (``example.com.`` is
    ``example.com``)."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".") if not is_ip(host) else host


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
