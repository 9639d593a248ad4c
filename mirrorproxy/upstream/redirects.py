"""Following an upstream's redirects: where to, and with which credentials.

Registries redirect blob GETs to CDNs (Docker Hub) and storage hosts
(registry.k8s.io, S3-backed registries), sometimes with a relative
``Location``.  A redirect is followed only to an http(s) URL with a host and
no credentials in it, never from https down to http, and never to an
internal address literal (see `egress.addresses`, which also checks the
addresses a host name resolves to).  Credentials are for the upstream's
origin alone: they are dropped as soon as scheme, host or port change, and
not picked up again by a later hop back.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from attrs import frozen

from .egress.addresses import AddressPolicy
from .egress.hosts import normal_host

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers that carry credentials, dropped with a change of origin.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})


class RedirectRefused(ValueError):
    """A redirect the mirror will not follow; the message says why."""


@frozen
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise RedirectRefused("to a malformed URL") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise RedirectRefused(f"to a non-HTTP(S) URL ({scheme or 'no'} scheme)")
        if parts.username is not None or parts.password is not None:
            raise RedirectRefused("to a URL with credentials in it")
        if not parts.hostname:
            raise RedirectRefused("to a URL with no host")
        try:
            port = parts.port
        except ValueError:
            raise RedirectRefused("to a URL with a bad port") from None
        return cls(scheme, normal_host(parts.hostname), port or _DEFAULT_PORTS[scheme])


def next_hop(current: str, location: str, policy: AddressPolicy) -> tuple[str, bool]:
    """Where a redirect from `current` leads, and whether credentials may go
    with it (same origin); RedirectRefused if it must not be followed."""
    try:
        target = urljoin(current, location.strip())
    except ValueError:
        raise RedirectRefused("to a malformed URL") from None
    here, there = Origin.of(current), Origin.of(target)
    if here.scheme == "https" and there.scheme == "http":
        raise RedirectRefused(f"from https to http ({there.host}): it would expose what TLS protects")
    refusal = policy.refuses_literal(there.host)
    if refusal is not None:
        raise RedirectRefused(f"to an internal address: {refusal}")
    return target, here == there
