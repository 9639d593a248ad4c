"""Egress errors: an upstream that could not be reached through the proxy,
or with whom TLS failed.

They subclass Twisted's ConnectError (and TimeoutError), so the upstream
client maps them as it maps any failure to reach upstream (502, or 504 for
timeouts).  Messages name the proxy by host:port only: never credentials.
"""

from __future__ import annotations

from twisted.internet import error as net_error


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
    absolute-form request with 407 (or with tinyproxy's own 401)."""

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
