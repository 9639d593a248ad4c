"""Upstream egress: how the mirror's HTTP requests leave the host.

This package owns the way out, and nothing about registries:

- `proxies`: proxy settings: one proxy's address and Basic credentials
  (`ProxyServer`), which proxy a URL uses (`ProxySettings`, from
  ``--upstream-proxy`` or ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``), and
  NO_PROXY matching (`NoProxy`);
- `trust`: TLS to upstreams: verified with service-identity against the
  platform's roots plus an optional extra PEM bundle, or, only when asked,
  not at all;
- `tunnel`: the CONNECT tunnel to an upstream through a proxy;
- `agent`: the `IAgent` (`make_agent`) that sends each request directly,
  through a CONNECT tunnel (https: TLS end to end with the upstream, the
  proxy sees only ``host:port``), or as an absolute-form request to the
  proxy (http);
- `errors`: what goes wrong on the way, as Twisted's connection errors;
- `hosts`: host names and ``host:port`` as all of the above see them.

Every request of the one HTTPClient goes through here, so registry calls,
token requests and redirects to CDN hosts all take the same route.  Import
from the package; the modules are its layout, not its interface.
"""

from __future__ import annotations

from .agent import make_agent
from .errors import (
    ProxyError,
    ProxyProtocolError,
    ProxyRefused,
    ProxyTimeout,
    ProxyUnreachable,
    UpstreamTLSError,
)
from .proxies import NoProxy, ProxyServer, ProxySettings, proxy_settings
from .trust import INSECURE_WARNING, read_ca_bundle, tls_policy

# Not part of the interface: the unit tests check the trust store it builds.
from .tunnel import ConnectTunnelEndpoint, connect_request

__all__ = [
    "INSECURE_WARNING",
    "ConnectTunnelEndpoint",
    "NoProxy",
    "ProxyError",
    "ProxyProtocolError",
    "ProxyRefused",
    "ProxyServer",
    "ProxySettings",
    "ProxyTimeout",
    "ProxyUnreachable",
    "UpstreamTLSError",
    "connect_request",
    "make_agent",
    "proxy_settings",
    "read_ca_bundle",
    "tls_policy",
]
