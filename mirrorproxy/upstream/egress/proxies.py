"""Proxy settings: which proxy, if any, each upstream URL goes through.

One proxy's address and Basic credentials (`ProxyServer`), the proxies for
http:// and https:// URLs from ``--upstream-proxy`` or
``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` (`ProxySettings`,
`proxy_settings`), and NO_PROXY matching (`NoProxy`).  Parsed once at
startup; nothing here connects anywhere.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from attrs import field, frozen

from ...common.errors import ConfigError
from ..auth import basic_authorization
from ..settings import Credentials
from .hosts import format_address, normal_host


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
        return cls(normal_host(parts.hostname), port if port else 80, username or None, password)

    @property
    def address(self) -> str:
        """``host:port``, safe to log."""
        return format_address(self.host, self.port)

    def __str__(self) -> str:
        return f"http://{self.address}"

    @property
    def authorization(self) -> bytes | None:
        """The ``Proxy-Authorization`` value, if the URL held credentials."""
        if self.username is None:
            return None
        credentials = Credentials(self.username, self.password or "")
        return basic_authorization(credentials).encode("ascii")


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
        host = normal_host(host)
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
