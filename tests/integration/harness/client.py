"""A minimal blocking registry client for the harness's own checks.

It does the Bearer dance (401 challenge -> token from the realm -> retry) so
that the harness can confirm what it pushed and upload raw blobs. It is
deliberately not the mirror's client: tests judge the mirror with skopeo,
dockerd and plain HTTP.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
from collections.abc import Mapping
from urllib.parse import urlencode, urljoin, urlsplit

from attrs import define, field, frozen

TIMEOUT = 60.0
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@frozen
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = TIMEOUT,
) -> Response:
    """One HTTP request to an http:// URL, the whole body read; no redirects,
    no proxies."""
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname, url
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        payload = response.read()
        # Header names folded to lower case; repeated headers joined.
        found: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            found[key] = f"{found[key]}, {value}" if key in found else value
        return Response(response.status, found, payload)
    finally:
        connection.close()


def parse_bearer_challenge(header: str) -> dict[str, str]:
    """``Bearer realm="...",service="...",scope="..."`` -> its parameters."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "bearer":
        raise ValueError(f"not a Bearer challenge: {header!r}")
    return dict(_CHALLENGE_PARAM.findall(params))


@define
class RegistryClient:
    """Requests to one registry, authenticated as its 401 challenges ask.

    Tokens are kept per scope, so that a large upload is sent once, with its
    token, rather than first into a 401.
    """

    base_url: str
    credentials: tuple[str, str] | None = None
    _tokens: dict[str, str] = field(factory=dict, init=False)

    def token(self, challenge: Mapping[str, str], scope: str | None = None) -> str:
        query = {"service": challenge.get("service", "")}
        scope = scope or challenge.get("scope")
        if scope:
            query["scope"] = scope
        headers = {}
        if self.credentials:
            pair = ":".join(self.credentials).encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        answer = request(f"{challenge['realm']}?{urlencode(query)}", headers=headers)
        if answer.status != 200:
            raise RuntimeError(f"token request failed: {answer.status} {answer.body!r}")
        data = answer.json()
        assert isinstance(data, dict)
        return str(data.get("token") or data["access_token"])

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        scope: str | None = None,
    ) -> Response:
        """``method path``; on a Bearer 401, fetch a token for ``scope`` (or
        the challenge's) and retry once."""
        url = urljoin(self.base_url, path)
        headers = dict(headers or {})
        cached = self._tokens.get(scope or "")
        if cached:
            headers["Authorization"] = f"Bearer {cached}"
        answer = request(url, method, headers, body)
        challenge = answer.headers.get("www-authenticate")
        if answer.status != 401 or not challenge:
            return answer
        token = self.token(parse_bearer_challenge(challenge), scope)
        self._tokens[scope or ""] = token
        return request(url, method, {**headers, "Authorization": f"Bearer {token}"}, body)
