"""The upstream registry client: requests, auth, redirects, errors.

It speaks to one upstream registry over an injected treq HTTPClient and
knows nothing of the clients the mirror serves.  Bodies are never buffered
here except small ones (manifests, tag lists, errors); blob bodies are handed
back to the caller to stream.
"""

from __future__ import annotations

import errno
from collections import Counter
from urllib.parse import urlencode, urlsplit

from attrs import define, field
from treq.client import HTTPClient
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from ..registry.documents import DocumentInvalid, check_tag_list
from ..registry.mediatypes import OCI_INDEX, upstream_accept
from ..registry.names import Digest
from .answers import FetchedManifest, ManifestHead, ReferrersPage, TagsPage, content_length, header
from .auth import Authenticator, AuthError, pull_scope
from .bodies import BodySilent, BodyTooLarge, BodyTruncated, discard_body, read_body
from .documents import manifest_head, referrers_page, verified_manifest
from .egress.addresses import AddressPolicy, InternalAddressRefused
from .errors import (
    ERROR_BODY_LIMIT,
    HeadRefused,
    UpstreamDenied,
    UpstreamError,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for,
)
from .realms import realm_allowed
from .redirects import CREDENTIAL_HEADERS, RedirectRefused, next_hop
from .settings import Timeouts, UpstreamRegistry

log = Logger()

MAX_REDIRECTS = 5
# distribution refuses manifests over 4 MiB; so do we.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_SMALL_BODY = 1024 * 1024
# How long an upstream that refused a manifest HEAD is asked by GET alone
# before a HEAD is tried again (Docker Hub counts GETs, not HEADs).
HEADS_REFUSED_FOR = 3600.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@define(eq=False)
class UpstreamClient:
    """Registry API calls against one upstream."""

    registry: UpstreamRegistry
    _http: HTTPClient
    _clock: IReactorTime
    _auth: Authenticator
    _timeouts: Timeouts = field(factory=Timeouts)
    # Where redirects may lead (by default: the registry's own host and
    # global addresses), and the client redirect hops go through: one whose
    # connections are checked against that policy.
    _redirect_policy: AddressPolicy | None = None
    _redirect_http: HTTPClient | None = None
    # (method, kind, status) -> count; the metrics read it.
    requests: Counter[tuple[str, str, int]] = field(factory=Counter)
    # When upstream last answered, and last failed to; for /readyz.
    last_answer: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    # Docker Hub's `ratelimit-remaining` (e.g. "97;w=21600"), latest seen.
    ratelimit_remaining: int | None = None
    # Token services refused the credentials (each is logged once).
    _foreign_realms: set[str] = field(factory=set)
    # Until when manifest HEADs are not sent: upstream refused one.
    _heads_refused_until: float = float("-inf")

    def __attrs_post_init__(self) -> None:
        if self._redirect_policy is None:
            self._redirect_policy = AddressPolicy(urlsplit(self.registry.url).hostname or "")

    @property
    def token_requests(self) -> int:
        return self._auth.token_requests

    # -- the registry API ---------------------------------------------------

    async def head_manifest(
        self, repository: str, reference: str, accept: list[str], confirm_absence: bool = False
    ) -> ManifestHead:
        """What a manifest is, by HEAD where upstream does HEAD, by GET
        (the manifest comes with the answer) where it refuses one; and where a
        HEAD's 404 would contradict what the caller knows (`confirm_absence`),
        by GET too: an upstream whose HEAD is found out lying is then asked by
        GET alone for a while."""
        if self._clock.seconds() >= self._heads_refused_until:
            try:
                response = await self._send("HEAD", repository, f"manifests/{reference}", "manifest", accept)
            except HeadRefused as e:
                self._refuses_heads(str(e))
            except UpstreamNotFound:
                if not confirm_absence:
                    raise
                head = await self._head_by_get(repository, reference, accept)
                self._refuses_heads("it answered 404 to a HEAD for a manifest its GET returns")
                return head
            else:
                discard_body(response)
                return manifest_head(response, accept)
        return await self._head_by_get(repository, reference, accept)

    async def _head_by_get(self, repository: str, reference: str, accept: list[str]) -> ManifestHead:
        fetched = await self.get_manifest(repository, reference, accept)
        return ManifestHead(fetched.digest, fetched.media_type, len(fetched.body), fetched)

    def _refuses_heads(self, reason: str) -> None:
        log.warn(
            "{registry} does not answer manifest HEADs ({reason}): tags are resolved by GET for {seconds}s",
            registry=self.registry.namespace,
            reason=reason,
            seconds=HEADS_REFUSED_FOR,
        )
        self._heads_refused_until = self._clock.seconds() + HEADS_REFUSED_FOR

    async def get_manifest(
        self, repository: str, reference: str | Digest, accept: list[str]
    ) -> FetchedManifest:
        response = await self._send(
            "GET", repository, f"manifests/{reference}", "manifest", accept
        )
        body = await self._read_small(response, MAX_MANIFEST_SIZE, "manifest")
        return verified_manifest(response, body, repository, reference)

    async def get_referrers(self, repository: str, subject: Digest, artifact_type: str | None) -> ReferrersPage:
        """The image index of `subject`'s referrers (of one artifact type)."""
        query = "?" + urlencode({"artifactType": artifact_type}) if artifact_type else ""
        response = await self._send(
            "GET", repository, f"referrers/{subject}{query}", "referrers", extra={"Accept": OCI_INDEX}
        )
        body = await self._read_small(response, MAX_MANIFEST_SIZE, "referrers index")
        return referrers_page(response, body, repository, subject)

    async def head_blob(self, repository: str, digest: Digest) -> int | None:
        response = await self._send("HEAD", repository, f"blobs/{digest}", "blob")
        discard_body(response)
        return content_length(response)

    async def get_blob(self, repository: str, digest: Digest, start: int = 0) -> IResponse:
        """A response whose body the caller must deliver or discard.

        From `start` on, a 206 whose body begins at `start`, or a 200 with the
        whole blob from an upstream that ignores ranges (the caller skips).
        """
        extra = {"Range": f"bytes={start}-"} if start else None
        response = await self._send("GET", repository, f"blobs/{digest}", "blob", extra=extra)
        if start and response.code == 206:
            content_range = header(response, b"content-range") or ""
            if not content_range.startswith(f"bytes {start}-"):
                discard_body(response)
                raise UpstreamInvalid(f"upstream resumed {digest} at the wrong place: {content_range!r}")
        return response

    async def get_tags(self, repository: str, query: str) -> TagsPage:
        path = "tags/list" + (f"?{query}" if query else "")
        response = await self._send("GET", repository, path, "tags")
        body = await self._read_small(response, MAX_SMALL_BODY, "tag list")
        try:
            check_tag_list(body)
        except DocumentInvalid as e:
            log.error("upstream's tag list of {repository} refused: {reason}", repository=repository, reason=str(e))
            raise UpstreamInvalid(f"upstream's tag list of {repository} refused: {e}") from None
        return TagsPage(body, header(response, b"link"))

    # -- plumbing -------------------------------------------------------------

    async def _send(
        self,
        method: str,
        repository: str,
        path: str,
        kind: str,
        accept: list[str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> IResponse:
        url = f"{self.registry.url}/v2/{repository}/{path}"
        scope = pull_scope(repository)
        headers = dict(extra or {})
        if kind == "manifest":
            headers["Accept"] = ", ".join(upstream_accept(accept or []))
        for attempt in (1, 2):
            authorization = await self._authorization(scope)
            request_headers = dict(headers)
            if authorization:
                request_headers["Authorization"] = authorization
            response = await self._follow(method, url, request_headers, kind)
            if response.code == 401 and attempt == 1:
                # Several challenges may come in several header lines.
                challenge = ", ".join(
                    v.decode("latin-1")
                    for v in response.headers.getRawHeaders(b"www-authenticate", [])
                )
                discard_body(response)
                if authorization:
                    self._auth.forget(scope)
                if self._auth.learn(challenge):
                    continue
                raise UpstreamDenied("upstream asks for credentials it does not say how to get")
            if not 200 <= response.code < 300:
                if method == "HEAD":
                    discard_body(response)
                body = b"" if method == "HEAD" else await self._error_body(response)
                raise error_for(response.code, body, method, kind, header(response, b"retry-after"))
            return response
        raise AssertionError("unreachable")

    async def _authorization(self, scope: str) -> str | None:
        try:
            return await self._auth.authorization(scope)
        except AuthError as e:
            if e.denied:
                raise UpstreamDenied(str(e)) from None
            raise UpstreamUnavailable(str(e)) from None
        except UpstreamError:
            raise
        except Exception as e:
            raise UpstreamUnavailable(f"token service failed: {e}") from None

    async def token_fetch(self, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """Fetch a token; the Authenticator's way out to the network, and
        where credentials are kept from a realm they do not belong to."""
        if "Authorization" in headers and not realm_allowed(self.registry.url, url):
            headers = {k: v for k, v in headers.items() if k != "Authorization"}
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
            if origin not in self._foreign_realms:
                self._foreign_realms.add(origin)
                log.warn(
                    "{registry}'s token service {realm} is not on its domain: "
                    "asking it for tokens without the configured credentials",
                    registry=self.registry.namespace,
                    realm=origin,
                )
        response = await self._follow("GET", url, headers, "token")
        if response.code == 429:
            discard_body(response)
            raise UpstreamRateLimited(header(response, b"retry-after"))
        try:
            body = await read_body(response, MAX_SMALL_BODY, self._clock, self._timeouts.body_silence)
        except (BodyTooLarge, BodySilent, BodyTruncated) as e:
            raise UpstreamUnavailable(f"token service: {e}") from None
        return response.code, body

    async def _follow(
        self, method: str, url: str, headers: dict[str, str], kind: str
    ) -> IResponse:
        http = self._http
        assert self._redirect_policy is not None
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._request(http, method, url, headers, kind)
            if response.code not in _REDIRECTS:
                return response
            location = header(response, b"location")
            discard_body(response)
            if not location:
                raise UpstreamInvalid(f"upstream redirect without a Location ({kind})")
            try:
                url, same_origin = next_hop(url, location, self._redirect_policy)
            except RedirectRefused as e:
                log.warn(
                    "refused a redirect from upstream ({kind} {method}) {reason}",
                    kind=kind,
                    method=method,
                    reason=str(e),
                )
                raise UpstreamInvalid(f"refused a redirect from upstream {e}") from None
            if not same_origin:
                # Credentials are for the registry's origin, never for its CDN.
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
            # Hosts upstream sends us to are connected to only at addresses
            # the policy allows.
            http = self._redirect_http or self._http
        raise UpstreamInvalid(f"more than {MAX_REDIRECTS} redirects from upstream ({kind})")

    async def _request(
        self, http: HTTPClient, method: str, url: str, headers: dict[str, str], kind: str
    ) -> IResponse:
        try:
            d = http.request(
                method,
                url,
                headers=Headers({k: [v] for k, v in headers.items()}),
                unbuffered=True,
                allow_redirects=False,
            )
        except ValueError as e:
            # An URL Twisted cannot send to (a bad host name, say).
            raise UpstreamInvalid(f"cannot send a request to {url[:200]!r}: {e}") from None
        timed_out = False

        def on_timeout() -> None:
            nonlocal timed_out
            timed_out = True
            d.cancel()

        timer = self._clock.callLater(self._timeouts.headers, on_timeout)
        where = urlsplit(url).netloc
        try:
            response = await d
        except CancelledError:
            if not timed_out:
                raise
            failure: UpstreamError = UpstreamTimeout(
                f"upstream did not answer within {self._timeouts.headers:g}s"
            )
        except InternalAddressRefused as e:
            log.warn("refused a redirect from upstream ({kind} {method}): {reason}", kind=kind, method=method, reason=str(e))
            failure = UpstreamInvalid(f"refused a redirect from upstream to an internal address: {e}")
        except net_error.TimeoutError:
            failure = UpstreamTimeout(f"timed out connecting to {where}")
        except (net_error.ConnectError, net_error.DNSLookupError) as e:
            shortage = getattr(e, "osError", None)
            if shortage in (errno.EMFILE, errno.ENFILE):
                # No descriptor for a socket: the mirror's shortage, passing.
                self.requests[(method, kind, 0)] += 1
                raise OSError(shortage, f"no file descriptor to reach {where}") from None
            failure = UpstreamUnavailable(f"cannot reach {where}: {e}")
        except ResponseNeverReceived as e:
            if timed_out:
                failure = UpstreamTimeout(
                    f"upstream did not answer within {self._timeouts.headers:g}s"
                )
            else:
                failure = UpstreamUnavailable(f"no answer from {where}: {e}")
        except ResponseFailed as e:
            failure = UpstreamUnavailable(f"malformed answer from {where}: {_reasons(e)}")
        except ValueError as e:
            failure = UpstreamInvalid(f"cannot send a request to {where}: {e}")
        else:
            self.requests[(method, kind, response.code)] += 1
            if response.code < 500:
                self.last_answer = self._clock.seconds()
            else:
                self._failed(UpstreamUnavailable(f"upstream answered {response.code} to a {kind} {method}"))
            remaining = header(response, b"ratelimit-remaining")
            if remaining and remaining.partition(";")[0].strip().isdigit():
                self.ratelimit_remaining = int(remaining.partition(";")[0])
            return response
        finally:
            if timer.active():
                timer.cancel()
        self.requests[(method, kind, 0)] += 1
        self._failed(failure)
        raise failure

    def _failed(self, error: BaseException) -> None:
        self.last_failure = self._clock.seconds()
        self.last_error = str(error)

    async def ping(self) -> None:
        """Ask upstream's ``/v2/``: any answer short of a 5xx (a 401 from a
        registry that wants tokens included) means it is there."""
        response = await self._request(self._http, "GET", f"{self.registry.url}/v2/", {}, "base")
        discard_body(response)
        if response.code >= 500:
            raise UpstreamUnavailable(f"upstream answered {response.code} to GET /v2/")

    async def _error_body(self, response: IResponse) -> bytes:
        """The start of an error answer's body, for its registry error; empty
        if upstream cannot even send that."""
        try:
            return await read_body(response, ERROR_BODY_LIMIT, self._clock, self._timeouts.body_silence)
        except Exception:
            return b""

    async def _read_small(self, response: IResponse, limit: int, what: str) -> bytes:
        try:
            return await read_body(response, limit, self._clock, self._timeouts.body_silence)
        except BodyTooLarge:
            raise UpstreamInvalid(f"upstream {what} is larger than {limit} bytes") from None
        except BodySilent:
            raise UpstreamTimeout(f"upstream went silent sending a {what}") from None
        except BodyTruncated as e:
            raise UpstreamUnavailable(str(e)) from None


def _reasons(error: ResponseFailed) -> str:
    """What Twisted's HTTP parser made of an answer it could not read."""
    return "; ".join(reason.getErrorMessage() for reason in error.reasons)[:300] or "unreadable"
