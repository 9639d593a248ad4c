"""TLS to upstream hosts: what the mirror trusts, or, only when asked, that
it trusts anything.

Verified with service-identity against the platform's roots plus an
optional extra PEM bundle (`read_ca_bundle`, ``--upstream-ca``), or not at
all (``--upstream-insecure``, with `INSECURE_WARNING` for the caller to
log).  `tls_policy` is the IPolicyForHTTPS the agent uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from attrs import define, field
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    CertificateOptions,
    OpenSSLDefaultPaths,
    optionsForClientTLS,
    platformTrust,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ...common.errors import ConfigError
from .hosts import is_ip

#: For the caller to log (as a warning) at startup when verification is off.
INSECURE_WARNING = (
    "TLS certificates of upstream hosts are NOT verified (--upstream-insecure): "
    "anyone on the path to upstream, the proxy included, can impersonate it and "
    "feed the cache forged tags and images"
)

# Connection creators (one SSL context each) kept per host:port; a mirror
# talks to a handful of hosts, so this bound is only a backstop.
_TLS_CACHE_SIZE = 256


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def read_ca_bundle(path: str) -> tuple[crypto.X509, ...]:
    """The certificates of a PEM bundle; ConfigError if there are none.

    Read once at startup (blocking, before the reactor runs), never per
    connection.  Parsed by OpenSSL, which verifies with them, not by
    `cryptography`: a corporate CA is often appended to the platform's
    bundle, whose old roots with a serial number of 0 `cryptography` warns
    about and means to refuse.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read CA bundle {path}: {e.strerror or e}") from None
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ConfigError(f"CA bundle {path} holds no PEM certificates")
    certificates = []
    for number, block in enumerate(blocks, 1):
        try:
            certificates.append(crypto.load_certificate(crypto.FILETYPE_PEM, block))
        except crypto.Error:
            raise ConfigError(f"CA bundle {path}: certificate {number} of {len(blocks)} is broken") from None
    return tuple(certificates)


class _PlatformTrustPlus(OpenSSLDefaultPaths):
    """The platform's trust roots, and ours besides.

    Twisted's `trustRootFromCertificates` replaces the platform roots; a
    corporate CA must be trusted in addition to them, since the same mirror
    may reach some hosts through a TLS-intercepting proxy and others (in
    NO_PROXY) directly.
    """

    def __init__(self, extra: tuple[crypto.X509, ...]) -> None:
        self._extra = extra

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        super()._addCACertsToContext(context)
        store = context.get_cert_store()
        assert store is not None
        for certificate in self._extra:
            store.add_cert(certificate)


@implementer(IOpenSSLClientConnectionCreator)
@define(eq=False)
class _UnverifiedCreator:
    """TLS that checks nothing about the peer (``--upstream-insecure``), but
    still sends SNI, which virtual hosts and CDNs need to pick a certificate."""

    _server_name: bytes | None
    _context: SSL.Context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        connection.set_connect_state()
        return connection


@implementer(IPolicyForHTTPS)
@define(eq=False)
class _TLSPolicy:
    """Connection creators per host:port, made once and reused.

    Twisted's own policy builds a new SSL context (and loads the platform's
    CA store) for every request, even one answered on a pooled connection;
    keeping them also lets OpenSSL resume sessions.
    """

    _make: Callable[[str], IOpenSSLClientConnectionCreator]
    _cache: dict[tuple[bytes, int], IOpenSSLClientConnectionCreator] = field(factory=dict)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        key = (hostname, port)
        creator = self._cache.get(key)
        if creator is None:
            if len(self._cache) >= _TLS_CACHE_SIZE:
                self._cache.clear()
            creator = self._cache[key] = self._make(hostname.decode("ascii"))
        return creator


def tls_policy(*, ca_file: str | None = None, verify: bool = True) -> IPolicyForHTTPS:
    """How TLS to upstream hosts is checked.

    By default: the platform's trust roots and service-identity's hostname
    (or IP address) check.  `ca_file` adds the certificates of a PEM bundle
    to those roots.  ``verify=False`` checks nothing; the caller must log
    `INSECURE_WARNING`.  ConfigError for an unreadable bundle.
    """
    if not verify:
        if ca_file:
            raise ConfigError("a CA bundle and turning verification off contradict each other")
        context = CertificateOptions().getContext()

        def unverified(hostname: str) -> IOpenSSLClientConnectionCreator:
            server_name = None if is_ip(hostname) else hostname.encode("idna")
            return _UnverifiedCreator(server_name, context)

        return _TLSPolicy(unverified)
    trust = _PlatformTrustPlus(read_ca_bundle(ca_file)) if ca_file else platformTrust()

    def verified(hostname: str) -> IOpenSSLClientConnectionCreator:
        return optionsForClientTLS(hostname, trustRoot=trust)

    return _TLSPolicy(verified)
