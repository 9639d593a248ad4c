"""What goes wrong upstream, as exceptions the API maps to registry errors.

An upstream's error answer becomes one of these by its status, with the
registry error code and message its JSON body carries (when it has one).
"""

from __future__ import annotations

import json

# How much of an error answer's body is read for its code and message.
ERROR_BODY_LIMIT = 64 * 1024
# Statuses with which upstreams (or proxies in front of them) refuse a HEAD.
_NO_HEAD = frozenset({400, 405, 501})


class UpstreamError(Exception):
    """Upstream did not give us what we asked for."""


class UpstreamNotFound(UpstreamError):
    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UpstreamDenied(UpstreamError):
    """Upstream refused us even with a token: private, or does not exist."""


class UpstreamRateLimited(UpstreamError):
    def __init__(self, retry_after: str | None) -> None:
        super().__init__("upstream rate limit reached")
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """Unreachable, 5xx, or an answer that makes no sense (502)."""


class UpstreamTimeout(UpstreamError):
    """Upstream did not answer in time (504)."""


class UpstreamInvalid(UpstreamUnavailable):
    """Upstream answered with content that fails its own checks."""


class HeadRefused(UpstreamUnavailable):
    """Upstream answered a HEAD with a status that says it does not do HEAD
    there (405, 501; 400 from some proxies), not that the thing is missing."""


class ManifestNotAcceptable(UpstreamError):
    """Upstream's manifest is of a type the client did not accept (404, as
    distribution answers; not a sign that the tag is missing)."""


def error_for(status: int, body: bytes, method: str, kind: str, retry_after: str | None) -> UpstreamError:
    """The exception for upstream's answer `status` (not 2xx) to a `kind`
    request, `body` being the start of its body (empty for a HEAD)."""
    code, message = _first_error(body) or (None, f"upstream answered {status}")
    if method == "HEAD" and status in _NO_HEAD:
        return HeadRefused(f"upstream answered {status} to a {kind} HEAD")
    if status == 404:
        return UpstreamNotFound(code, message)
    if status in (401, 403):
        return UpstreamDenied(message)
    if status == 429:
        return UpstreamRateLimited(retry_after)
    if status >= 500:
        return UpstreamUnavailable(f"upstream error {status}: {message}")
    return UpstreamUnavailable(f"unexpected upstream answer {status} to a {kind} {method}")


def _first_error(body: bytes) -> tuple[str | None, str] | None:
    try:
        errors = json.loads(body)["errors"]
        first = errors[0]
        return str(first.get("code")), str(first.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
