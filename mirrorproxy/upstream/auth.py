"""Upstream authentication as Docker Hub does it.

A 401 carries ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``;
the mirror asks the realm for a token (anonymously, or with Basic
credentials), caches it per realm/service/scope until it expires, and lets
one token request per scope be in flight.  ``Basic`` challenges are answered
with the credentials directly.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..common.coalescer import Coalescer
from .settings import Credentials

log = Logger()

# RFC 7235 auth-param: token "=" ( token / quoted-string )
_PARAM = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)'
)
_SCHEME = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$|(?=,))")

DEFAULT_TOKEN_LIFETIME = 60.0
# Refresh a little early so a token never expires on its way upstream.
_EXPIRY_MARGIN = 0.9
_PRUNE_AT = 1024


class AuthError(Exception):
    """No token: the service refused us (`denied`) or answered unusably."""

    def __init__(self, message: str, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied


@frozen
class Challenge:
    scheme: str
    params: dict[str, str] = field(hash=False)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges."""
    challenges: list[Challenge] = []
    position = 0
    while position < len(header):
        scheme_match = _SCHEME.match(header, position)
        if not scheme_match:
            break
        position = scheme_match.end()
        params: dict[str, str] = {}
        while position < len(header):
            param_match = _PARAM.match(header, position)
            if not param_match:
                break
            value = param_match.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param_match.group(1).lower()] = value
            position = param_match.end()
        challenges.append(Challenge(scheme_match.group(1).lower(), params))
        if position < len(header) and header[position] == ",":
            position += 1
    return challenges


def basic_authorization(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode("utf-8")
    return "Basic " + base64.b64encode(pair).decode("ascii")


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


@frozen
class _Token:
    value: str = field(repr=False)
    expires_at: float


# Fetches a URL with the given headers; returns (status, body).
TokenFetcher = Callable[[str, dict[str, str]], Awaitable[tuple[int, bytes]]]


@define(eq=False)
class Authenticator:
    """Turns an upstream's challenges into ``Authorization`` headers."""

    _fetch: TokenFetcher
    _clock: IReactorTime
    _credentials: Credentials | None = None
    # The last challenge the upstream sent, so later requests for other
    # repositories can get their token before asking (saving a 401 round trip).
    _challenge: Challenge | None = None
    _tokens: dict[tuple[str, str, str], _Token] = field(factory=dict)
    _pending: Coalescer = field(factory=Coalescer)
    token_requests: int = 0

    def learn(self, www_authenticate: str) -> bool:
        """Remember a 401's challenge; whether it is one we can answer."""
        for challenge in parse_challenges(www_authenticate):
            if challenge.scheme == "bearer" and challenge.realm:
                self._challenge = challenge
                return True
            if challenge.scheme == "basic" and self._credentials is not None:
                self._challenge = challenge
                return True
        return False

    def forget(self, scope: str) -> None:
        """Drop a token the upstream rejected."""
        if self._challenge is not None and self._challenge.scheme == "bearer":
            self._tokens.pop(self._key(self._challenge, scope), None)

    @property
    def knows_challenge(self) -> bool:
        return self._challenge is not None

    async def authorization(self, scope: str) -> str | None:
        """The header value to send for `scope`, or None before any challenge."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            assert self._credentials is not None
            return basic_authorization(self._credentials)
        key = self._key(challenge, scope)
        token = self._tokens.get(key)
        if token is not None and token.expires_at > self._clock.seconds():
            return "Bearer " + token.value
        fresh: _Token = await self._pending.run(key, lambda: Deferred.fromCoroutine(self._new_token(challenge, key)))
        return "Bearer " + fresh.value

    def _key(self, challenge: Challenge, scope: str) -> tuple[str, str, str]:
        return (challenge.realm or "", challenge.params.get("service", ""), scope)

    async def _new_token(self, challenge: Challenge, key: tuple[str, str, str]) -> _Token:
        realm, service, scope = key
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https"):
            raise AuthError(f"token realm is not an http(s) URL: {realm!r}", denied=True)
        query = {}
        if service:
            query["service"] = service
        query["scope"] = scope
        separator = "&" if parts.query else "?"
        url = realm + separator + urlencode(query)
        headers = {"Accept": "application/json"}
        if self._credentials is not None:
            headers["Authorization"] = basic_authorization(self._credentials)
        self.token_requests += 1
        status, body = await self._fetch(url, headers)
        if status != 200:
            raise AuthError(
                f"token service {parts.netloc} answered {status}", denied=status in (401, 403)
            )
        try:
            document = json.loads(body)
            value = document.get("token") or document.get("access_token")
            lifetime = float(document.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise AuthError(f"token service {parts.netloc} answered garbage") from None
        if not isinstance(value, str) or not value:
            raise AuthError(f"token service {parts.netloc} sent no token")
        now = self._clock.seconds()
        token = _Token(value, now + lifetime * _EXPIRY_MARGIN)
        if len(self._tokens) >= _PRUNE_AT:
            # One token per repository pulled: drop the expired ones now and then.
            self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > now}
        self._tokens[key] = token
        log.debug("new upstream token for {scope}, {lifetime}s", scope=scope, lifetime=lifetime)
        return token
