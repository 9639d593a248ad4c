"""Upstream egress: how the mirror's HTTP requests leave the host.

This module owns the way out, and nothing about registries:

- proxy settings: one proxy's address and Basic credentials (`ProxyServer`),
  which proxy a URL uses (`ProxySettings`, from ``--upstream-proxy`` or
  ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``), and NO_PROXY matching
  (`NoProxy`);
- TLS to upstreams: verified with service-identity against the platform's
  roots plus an optional extra PEM bundle, or, only when asked, not at all;
- the `IAgent` (`make_agent`) that sends each request directly, through a
  CONNECT tunnel (https: TLS end to end with the upstream, the proxy sees
  only ``host:port``), or as an absolute-form request to the proxy (http).

Every request of the one HTTPClient goes through here, so registry calls,
token requests and redirects to CDN hosts all take the same route.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import define, field, frozen
from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    CertificateOptions,
    OpenSSLDefaultPaths,
    optionsForClientTLS,
    platformTrust,
)
from twisted.logger import Logger
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

from .bodies import discard_body
from .config import ConfigError

log = Logger()

#: For the caller to log (as a warning) at startup when verification is off.
INSECURE_WARNING = (
    "TLS certificates of upstream hosts are NOT verified (--upstream-insecure): "
    "anyone on the path to upstream, the proxy included, can impersonate it and "
    "feed the cache forged tags and images"
)

DEFAULT_PORTS = {"http": 80, "https": 443}
# A CONNECT answer is a status line and a few headers; anything this long
# is not a proxy we can talk to.
MAX_CONNECT_RESPONSE_HEAD = 64 * 1024
# Connection creators (one SSL context each) kept per host:port; a mirror
# talks to a handful of hosts, so this bound is only a backstop.
_TLS_CACHE_SIZE = 256


# -- errors -------------------------------------------------------------------
#
# They subclass Twisted's ConnectError (and TimeoutError), so the upstream
# client maps them as it maps any failure to reach upstream (502, or 504 for
# timeouts).  Messages name the proxy by host:port only: never credentials.


class ProxyError(net_error.ConnectError):
    """The upstream could not be reached through the proxy."""

    def __init__(self, message: str) -> None:
        super().__init__(string=message)

    def __str__(self) -> str:
        return str(self.args[0])


class ProxyUnreachable(ProxyError):
    """The TCP connection to the proxy itself failed."""


class ProxyTimeout(ProxyError, net_error.TimeoutError):
    """The proxy did not accept the connection, or did not answer CONNECT, in time."""


class ProxyRefused(ProxyError):
    """The proxy answered CONNECT with a status that is not 2xx, or an
    absolute-form request with 407."""

    def __init__(
        self,
        proxy: str,
        request: str,
        status: int,
        reason: str,
        *,
        offered: tuple[str, ...] = (),
        sent_credentials: bool = False,
    ) -> None:
        message = f"proxy {proxy} answered {request} with {status} {reason}".rstrip()
        # 401 too: tinyproxy before 1.12 answers wrong credentials with 401
        # (its issue #532), and a 401 to CONNECT can only be the proxy's.
        if status in (401, 407):
            message += f" ({_credentials_hint(offered, sent_credentials)})"
        super().__init__(message)
        self.proxy = proxy
        self.status = status
        self.reason = reason


def _credentials_hint(offered: tuple[str, ...], sent_credentials: bool) -> str:
    if offered and "basic" not in (scheme.lower() for scheme in offered):
        return f"it wants {', '.join(offered)} authentication; mirrorproxy can only send Basic"
    if not sent_credentials:
        return "it wants credentials: put user:password@ in the proxy URL"
    return "it refused the user and password of the proxy URL"


class UpstreamTLSError(net_error.ConnectError):
    """TLS with an upstream host failed: its certificate was not trusted, or
    did not name the host.  Nothing was sent to it."""

    def __init__(self, message: str) -> None:
        super().__init__(string=message)

    def __str__(self) -> str:
        return str(self.args[0])


class ProxyProtocolError(ProxyError):
    """The proxy's answer to CONNECT was not HTTP."""


# -- settings -----------------------------------------------------------------


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _normal_host(host: str) -> str:
    """Lower case, no IPv6 brackets, no trailing dot (``example.com.`` is
    ``example.com``)."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".") if not _is_ip(host) else host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@frozen
class ProxyServer:
    """One HTTP proxy: where it is, and the Basic credentials it wants.

    Credentials are kept out of the repr and of `str()`, so neither a log
    line nor an error message can carry them.
    """

    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str, what: str = "proxy URL") -> ProxyServer:
        """``http://[user:password@]host[:port][/]``; a URL without a scheme
        means http:// (as curl and Go read it), a missing port 80 (as Go and
        Python do; curl would use 1080).  Percent-escapes in the credentials
        are decoded.  ConfigError messages never repeat the credentials."""
        text = text.strip()
        if not text:
            raise ConfigError(f"{what} is empty")
        if "://" not in text:
            text = "http://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise ConfigError(f"{what} has a bad host or port") from None
        scheme = parts.scheme.lower()
        if scheme == "https":
            raise ConfigError(
                f"{what}: https:// proxies (TLS to the proxy itself) are not supported; "
                "use the proxy's http:// address (https upstreams still get TLS end to "
                "end through CONNECT)"
            )
        if scheme != "http":
            raise ConfigError(f"{what}: only http:// proxies are supported, not {scheme}://")
        if not parts.hostname:
            raise ConfigError(f"{what} has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"{what} must be http://[user:password@]host[:port] with no path")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if username is not None and ":" in username:
            # RFC 7617: the user-id of Basic credentials cannot hold a colon.
            raise ConfigError(f"{what}: the proxy user name must not contain ':'")
        if not username and password is not None:
            raise ConfigError(f"{what} has a password but no user name")
        if username is not None and password is None:
            password = ""
        if port == 0:
            raise ConfigError(f"{what} has a bad host or port")
        return cls(_normal_host(parts.hostname), port if port else 80, username or None, password)

    @property
    def address(self) -> str:
        """``host:port``, safe to log."""
        return _format_address(self.host, self.port)

    def __str__(self) -> str:
        return f"http://{self.address}"

    @property
    def authorization(self) -> bytes | None:
        """The ``Proxy-Authorization`` value, if the URL held credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return b"Basic " + base64.b64encode(pair)


@frozen
class _DomainRule:
    # Without a leading dot: matches itself and every name under it.
    domain: str
    port: int | None


@frozen
class _AddressRule:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None


_PORT_SUFFIX = re.compile(r"^(?P<host>.*?):(?P<port>\d+)$")


@frozen
class NoProxy:
    """The hosts to reach directly even when a proxy is set (``NO_PROXY``).

    Entries are separated by commas or white space, case does not matter:

    - ``*`` (an entry of its own): every host;
    - ``example.com``, ``.example.com`` and ``*.example.com``: that name and
      every name under it (a leading dot or ``*.`` changes nothing, as in
      curl and Python; Go's ``.example.com`` would not match ``example.com``
      itself);
    - ``10.1.2.3``, ``::1``, ``[::1]``: that address; ``10.0.0.0/8``,
      ``fd00::/8``: any address in that network;
    - any of those but ``*`` and networks followed by ``:PORT`` (IPv6 in
      brackets): only connections to that port (as in Go).

    Names and addresses never match each other: no DNS is consulted, so
    ``localhost`` does not cover ``127.0.0.1``.  Unlike Go, loopback hosts are
    not exempted implicitly (curl does not either): list them.  Entries that
    fit none of these forms are kept in `ignored` for a startup warning.
    """

    everything: bool = False
    domains: tuple[_DomainRule, ...] = ()
    addresses: tuple[_AddressRule, ...] = ()
    ignored: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> NoProxy:
        everything = False
        domains: list[_DomainRule] = []
        addresses: list[_AddressRule] = []
        ignored: list[str] = []
        for entry in re.split(r"[\s,]+", text.strip()):
            if not entry:
                continue
            if entry == "*":
                everything = True
                continue
            rule = _parse_entry(entry.lower())
            if isinstance(rule, _DomainRule):
                domains.append(rule)
            elif isinstance(rule, _AddressRule):
                addresses.append(rule)
            else:
                ignored.append(entry)
        return cls(everything, tuple(domains), tuple(addresses), tuple(ignored))

    def matches(self, host: str, port: int) -> bool:
        """Whether a connection to ``host:port`` skips the proxy."""
        if self.everything:
            return True
        host = _normal_host(host)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return any(
                (rule.port is None or rule.port == port)
                and (host == rule.domain or host.endswith("." + rule.domain))
                for rule in self.domains
            )
        return any(
            (rule.port is None or rule.port == port)
            and address.version == rule.network.version
            and address in rule.network
            for rule in self.addresses
        )

    def describe(self) -> str:
        if self.everything:
            return "*"
        parts = [d.domain if d.port is None else f"{d.domain}:{d.port}" for d in self.domains] + [
            str(a.network) if a.port is None else f"{a.network}:{a.port}" for a in self.addresses
        ]
        return ", ".join(parts)


def _parse_entry(entry: str) -> _DomainRule | _AddressRule | None:
    if "/" in entry:
        try:
            return _AddressRule(ipaddress.ip_network(entry, strict=False), None)
        except ValueError:
            return None
    host, port = entry, None
    if entry.startswith("["):
        # [v6] or [v6]:port
        close = entry.find("]")
        if close < 0:
            return None
        host, rest = entry[1:close], entry[close + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif entry.count(":") == 1:
        found = _PORT_SUFFIX.match(entry)
        if found is None:
            return None
        host, port = found["host"], int(found["port"])
    if port is not None and not 0 < port < 65536:
        return None
    try:
        return _AddressRule(ipaddress.ip_network(host), port)
    except ValueError:
        pass
    if ":" in host:
        return None
    host = host.removeprefix("*.")
    host = host.strip(".")
    if not host or "*" in host:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return _DomainRule(host, port)


def _from_env(environ: Mapping[str, str], name: str) -> tuple[str | None, str | None]:
    """A variable's value, the lower-case spelling first (curl, wget, Python;
    Go reads the upper-case one first), and a note if both are set and differ.
    An empty value counts as unset, as everywhere."""
    lower = (environ.get(name.lower()) or "").strip() or None
    upper = (environ.get(name.upper()) or "").strip() or None
    note = None
    if lower is not None and upper is not None and lower != upper:
        note = f"{name.lower()} and {name.upper()} are both set and differ; using {name.lower()}"
    return (lower if lower is not None else upper), note


@frozen
class ProxySettings:
    """Which proxy each upstream URL goes through.

    `http` is for http:// URLs (absolute-form requests to the proxy), `https`
    for https:// URLs (CONNECT tunnels); either may be None (direct).
    `no_proxy` lists hosts reached directly whatever the scheme.  `notes` are
    things an operator should hear about at startup (conflicting variables,
    ignored NO_PROXY entries); they never hold credentials.
    """

    http: ProxyServer | None = None
    https: ProxyServer | None = None
    no_proxy: NoProxy = field(factory=NoProxy)
    notes: tuple[str, ...] = ()

    @classmethod
    def from_url(cls, url: str, no_proxy: str = "") -> ProxySettings:
        """One proxy for both schemes (``--upstream-proxy URL``)."""
        server = ProxyServer.parse(url, "--upstream-proxy")
        bypass = NoProxy.parse(no_proxy)
        return cls(server, server, bypass, _ignored_note(bypass))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ProxySettings | None:
        """``https_proxy``/``HTTPS_PROXY``, ``http_proxy``/``HTTP_PROXY`` and
        ``no_proxy``/``NO_PROXY``; None when neither proxy variable is set.
        ``ALL_PROXY`` is not read (it is often a SOCKS proxy)."""
        notes: list[str] = []
        https_text, note = _from_env(environ, "HTTPS_PROXY")
        notes += [note] if note else []
        http_text, note = _from_env(environ, "HTTP_PROXY")
        notes += [note] if note else []
        no_proxy_text, note = _from_env(environ, "NO_PROXY")
        notes += [note] if note else []
        if https_text is None and http_text is None:
            return None
        https = ProxyServer.parse(https_text, "HTTPS_PROXY") if https_text else None
        http = ProxyServer.parse(http_text, "HTTP_PROXY") if http_text else None
        if https is None:
            # The most common mistake: Docker Hub is https, so HTTP_PROXY alone
            # leaves every registry request going direct.
            notes.append(
                "HTTP_PROXY is set but HTTPS_PROXY is not: https upstreams are reached directly"
            )
        bypass = NoProxy.parse(no_proxy_text or "")
        return cls(http, https, bypass, tuple(notes) + _ignored_note(bypass))

    def proxy_for(self, scheme: str, host: str, port: int) -> ProxyServer | None:
        """The proxy for a connection to ``scheme://host:port``, or None: direct."""
        server = self.https if scheme == "https" else self.http if scheme == "http" else None
        if server is None or self.no_proxy.matches(host, port):
            return None
        return server

    def describe(self) -> str:
        """For the startup log: routes and bypasses, never credentials."""
        parts = [
            f"https via {self.https}" if self.https else "https direct",
            f"http via {self.http}" if self.http else "http direct",
        ]
        bypass = self.no_proxy.describe()
        if bypass:
            parts.append(f"direct to {bypass}")
        return "; ".join(parts)


def _ignored_note(bypass: NoProxy) -> tuple[str, ...]:
    if not bypass.ignored:
        return ()
    return (f"NO_PROXY entries not understood and ignored: {', '.join(bypass.ignored)}",)


def proxy_settings(option: str | None, environ: Mapping[str, str]) -> ProxySettings | None:
    """The proxy settings the service runs with.

    ``--upstream-proxy`` wins over the environment's proxy variables and is
    used for both schemes (curl's ``-x``); ``NO_PROXY`` from the environment
    applies either way.  None: everything goes direct.
    """
    if option:
        no_proxy, note = _from_env(environ, "NO_PROXY")
        settings = ProxySettings.from_url(option, no_proxy or "")
        if note:
            settings = ProxySettings(
                settings.http, settings.https, settings.no_proxy, (note, *settings.notes)
            )
        return settings
    return ProxySettings.from_environment(environ)


# -- TLS ----------------------------------------------------------------------


def read_ca_bundle(path: str) -> tuple[x509.Certificate, ...]:
    """The certificates of a PEM bundle; ConfigError if there are none.

    Read once at startup (blocking, before the reactor runs), never per
    connection.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read CA bundle {path}: {e.strerror or e}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"CA bundle {path} holds no PEM certificates (or a broken one)") from None
    return tuple(certificates)


class _PlatformTrustPlus(OpenSSLDefaultPaths):
    """The platform's trust roots, and ours besides.

    Twisted's `trustRootFromCertificates` replaces the platform roots; a
    corporate CA must be trusted in addition to them, since the same mirror
    may reach some hosts through a TLS-intercepting proxy and others (in
    NO_PROXY) directly.
    """

    def __init__(self, extra: tuple[x509.Certificate, ...]) -> None:
        self._extra = [crypto.X509.from_cryptography(c) for c in extra]

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
            server_name = None if _is_ip(hostname) else hostname.encode("idna")
            return _UnverifiedCreator(server_name, context)

        return _TLSPolicy(unverified)
    trust = _PlatformTrustPlus(read_ca_bundle(ca_file)) if ca_file else platformTrust()

    def verified(hostname: str) -> IOpenSSLClientConnectionCreator:
        return optionsForClientTLS(hostname, trustRoot=trust)

    return _TLSPolicy(verified)


# -- the CONNECT tunnel -------------------------------------------------------

_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?$")
_UNSAFE_IN_TARGET = re.compile(r"[^A-Za-z0-9.\-_~!$&'()*+,;=:\[\]%]")


def connect_request(host: str, port: int, authorization: bytes | None) -> bytes:
    """The bytes of ``CONNECT host:port`` (RFC 9110 9.3.6), credentials included."""
    target = _format_address(host, port)
    if _UNSAFE_IN_TARGET.search(target):
        raise ValueError(f"not a host to CONNECT to: {target!r}")
    lines = [
        b"CONNECT " + target.encode("ascii") + b" HTTP/1.1",
        b"Host: " + target.encode("ascii"),
    ]
    if authorization is not None:
        lines.append(b"Proxy-Authorization: " + authorization)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _printable(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("latin-1")[:limit]
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _parse_head(head: bytes) -> tuple[int, str, dict[bytes, list[bytes]]]:
    """A response head -> status, reason phrase, headers (lower-case names)."""
    status_line, *header_lines = head.split(b"\r\n")
    found = _STATUS_LINE.match(status_line)
    if found is None:
        raise ValueError(status_line)
    headers: dict[bytes, list[bytes]] = {}
    for line in header_lines:
        name, sep, value = line.partition(b":")
        if sep:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(found[1]), _printable(found[2] or b""), headers


def _offered_schemes(headers: dict[bytes, list[bytes]]) -> tuple[str, ...]:
    # Only the scheme names (Basic, Negotiate, NTLM, ...): enough to tell an
    # operator why Basic credentials will not do, without echoing anything else.
    schemes = []
    for value in headers.get(b"proxy-authenticate", []) + headers.get(b"www-authenticate", []):
        for challenge in value.split(b","):
            word = challenge.strip().split(b" ", 1)[0]
            if word and b"=" not in word:
                schemes.append(_printable(word, 40))
    return tuple(dict.fromkeys(schemes))


@define(eq=False)
class _TunnelProtocol(Protocol):
    """Speaks to the proxy until the tunnel is open, then steps aside.

    It stays the transport's protocol for the life of the connection and
    hands every later byte, and the end of the connection, to the protocol
    the caller's factory builds once the proxy has said 2xx (for https, a
    TLSMemoryBIOProtocol, whose handshake therefore starts only inside the
    tunnel).
    """

    _request: bytes
    _proxy: str
    _target: str
    _wrapped_factory: IProtocolFactory
    _established: Deferred[IProtocol]
    _clock: IReactorTime
    _timeout: float
    _buffer: bytes = b""
    _tunnelled: IProtocol | None = None
    _timer: IDelayedCall | None = None
    _abandoned: bool = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self._abandoned:
            self.transport.abortConnection()
            return
        self._timer = self._clock.callLater(self._timeout, self._timed_out)
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        if self._tunnelled is not None:
            self._tunnelled.dataReceived(data)
            return
        if self._established.called:
            # Failed or cancelled; the connection is being aborted.
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CONNECT_RESPONSE_HEAD:
                self._fail(
                    ProxyProtocolError(f"proxy {self._proxy} sent an endless answer to CONNECT")
                )
            return
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        self._buffer = b""
        try:
            status, reason, headers = _parse_head(head)
        except ValueError:
            self._fail(
                ProxyProtocolError(
                    f"proxy {self._proxy} answered CONNECT {self._target} with something "
                    f"that is not HTTP: {_printable(head[:80])!r}"
                )
            )
            return
        if not 200 <= status < 300:
            log.debug(
                "proxy {proxy} refused CONNECT {target}: {status}",
                proxy=self._proxy,
                target=self._target,
                status=status,
            )
            self._fail(
                ProxyRefused(
                    self._proxy,
                    f"CONNECT {self._target}",
                    status,
                    reason,
                    offered=_offered_schemes(headers),
                    sent_credentials=b"Proxy-Authorization:" in self._request,
                )
            )
            return
        self._stop_timer()
        # A 2xx answer to CONNECT has no body (RFC 9110 9.3.6): whatever
        # follows the head already belongs to the tunnel.
        assert self.transport is not None
        protocol = self._wrapped_factory.buildProtocol(self.transport.getPeer())
        if protocol is None:
            self._fail(ProxyError(f"no protocol for the tunnel to {self._target}"))
            return
        self._tunnelled = protocol
        protocol.makeConnection(self.transport)
        self._established.callback(protocol)
        if rest:
            protocol.dataReceived(rest)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._stop_timer()
        if self._tunnelled is not None:
            self._tunnelled.connectionLost(reason)
        elif not self._established.called:
            self._established.errback(
                ProxyError(
                    f"proxy {self._proxy} closed the connection "
                    f"before answering CONNECT {self._target}"
                )
            )

    def abandon(self) -> None:
        """The caller gave up (cancelled) before the tunnel opened."""
        self._abandoned = True
        self._stop_timer()
        if self.transport is not None and self._tunnelled is None:
            self.transport.abortConnection()

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(
            ProxyTimeout(
                f"proxy {self._proxy} did not answer CONNECT {self._target} "
                f"within {self._timeout:g}s"
            )
        )

    def _fail(self, error: Exception) -> None:
        self._stop_timer()
        if not self._established.called:
            self._established.errback(error)
        if self.transport is not None:
            self.transport.abortConnection()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


@define(eq=False)
class _TunnelFactory(Factory):
    """Builds the one `_TunnelProtocol` of one connection to the proxy."""

    _build: Callable[[], _TunnelProtocol]
    _wrapped_factory: IProtocolFactory
    built: _TunnelProtocol | None = None

    def buildProtocol(self, addr: IAddress | None) -> _TunnelProtocol:
        self.built = self._build()
        return self.built

    # The caller's factory is in effect connecting: let it know, as an
    # endpoint connecting it directly would.
    def doStart(self) -> None:
        self._wrapped_factory.doStart()

    def doStop(self) -> None:
        self._wrapped_factory.doStop()


@implementer(IStreamClientEndpoint)
@define(eq=False)
class ConnectTunnelEndpoint:
    """A stream to ``host:port`` through an HTTP proxy's CONNECT tunnel.

    `connect` connects to the proxy, sends CONNECT (with
    ``Proxy-Authorization`` when the proxy URL has credentials), and fires
    with the caller's protocol once the proxy answers 2xx; any other answer
    fails it with `ProxyRefused`.  Wrap it with `wrapClientTLS` for https.
    Cancelling stops whichever step is under way.
    """

    _clock: IReactorTime
    _proxy_endpoint: IStreamClientEndpoint
    _proxy: ProxyServer
    _host: str
    _port: int
    # For the CONNECT answer, once connected to the proxy; connecting to the
    # proxy has the proxy endpoint's own timeout.
    _timeout: float = 30.0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        target = _format_address(self._host, self._port)
        proxy = self._proxy.address
        request = connect_request(self._host, self._port, self._proxy.authorization)
        factory: _TunnelFactory

        def cancel(_: Deferred[IProtocol]) -> None:
            # Whichever step is under way: connecting to the proxy (a no-op
            # once connected), or waiting for its answer.
            connecting.cancel()
            if factory.built is not None:
                factory.built.abandon()

        established: Deferred[IProtocol] = Deferred(cancel)
        factory = _TunnelFactory(
            lambda: _TunnelProtocol(
                request, proxy, target, protocolFactory, established, self._clock, self._timeout
            ),
            protocolFactory,
        )

        def not_connected(failure: Failure) -> None:
            if established.called or failure.check(
                CancelledError, net_error.ConnectingCancelledError
            ):
                # Only our canceller cancels `connecting`; Deferred.cancel
                # fails `established` with CancelledError once it returns.
                return
            if failure.check(net_error.TimeoutError):
                established.errback(
                    ProxyTimeout(f"cannot connect to proxy {proxy}: {failure.value}")
                )
            else:
                established.errback(
                    ProxyUnreachable(f"cannot connect to proxy {proxy}: {failure.value}")
                )

        connecting = self._proxy_endpoint.connect(factory)
        connecting.addErrback(not_connected)
        return established


# -- the agent ----------------------------------------------------------------


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

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        scheme = uri.scheme.decode("ascii")
        if scheme not in DEFAULT_PORTS:
            raise SchemeNotSupported(f"unsupported scheme: {scheme!r}")
        host = _normal_host(uri.host.decode("ascii"))
        server = self._proxy.proxy_for(scheme, host, uri.port) if self._proxy else None
        endpoint: IStreamClientEndpoint
        if server is None:
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
        host = _normal_host(parsed.host.decode("ascii"))
        target = _format_address(host, parsed.port)
        if parsed.scheme == b"http" and self._proxy is not None:
            server = self._proxy.proxy_for("http", host, parsed.port)
            if server is not None:
                headers = headers.copy() if headers is not None else Headers()
                if server.authorization is not None:
                    headers.setRawHeaders(b"proxy-authorization", [server.authorization])
                d = self._forwarders[server].request(method, uri, headers, bodyProducer)
                return d.addCallback(_refuse_407, server, target)
        d = self._agent.request(method, uri, headers, bodyProducer)
        if parsed.scheme == b"https":
            d.addErrback(_name_tls_failure, target)
        return d


def _refuse_407(response: IResponse, server: ProxyServer, target: str) -> IResponse:
    # 407 comes only from proxies (RFC 9110 15.5.8), so it is never an
    # upstream's answer: report it as CONNECT's 407 is reported.  Other
    # statuses may be the upstream's own and pass through (a proxy's 401
    # cannot be told from a registry's challenge).
    if response.code != 407:
        return response
    offered = _offered_schemes(
        {b"proxy-authenticate": response.headers.getRawHeaders(b"proxy-authenticate", [])}
    )
    discard_body(response)
    raise ProxyRefused(
        server.address,
        f"a request for {target}",
        407,
        _printable(response.phrase),
        offered=offered,
        sent_credentials=server.authorization is not None,
    )


def _name_tls_failure(failure: Failure, target: str) -> Failure:
    """A failed TLS handshake, as an error an operator can act on.

    Twisted reports it as ResponseNeverReceived around an OpenSSL or
    service-identity error; the handshake precedes the request, so nothing
    reached the upstream and it is a failure to connect.
    """
    if not failure.check(ResponseNeverReceived):
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
) -> IAgent:
    """The IAgent for every upstream request: registry, token service, CDN.

    `reactor` provides IReactorTCP, IReactorTime and name resolution;
    `pool` is this agent's own connection pool (do not share it with an
    agent that routes differently: pool keys do not include the route).
    https targets with a proxy go through a CONNECT tunnel, http targets with
    a proxy as absolute-form requests; the rest go direct.  TLS as
    `tls_policy` says; `connect_timeout` bounds the TCP connect (to the
    upstream or to the proxy) and the wait for the proxy's CONNECT answer.
    ConfigError if `ca_file` is unusable.
    """
    tls = tls_policy(ca_file=ca_file, verify=verify)
    agent = Agent.usingEndpointFactory(
        reactor, _EgressEndpointFactory(reactor, proxy, tls, connect_timeout), pool=pool
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
