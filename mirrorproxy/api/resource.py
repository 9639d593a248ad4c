"""The /v2/ Resource tree: HTTP in, domain calls out, registry JSON errors out.

This module never calls upstream and never touches files itself: it parses
and checks what the client sent, asks the `RegistryCache` for a manifest, a blob or
a tag list, and writes the answer.
"""

from __future__ import annotations

import re
from typing import Awaitable, Callable
from urllib.parse import parse_qs

from attrs import define
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..cache.blobs import OpenBlob
from ..cache.cluster.peers import PEER_HEADER as _PEER_HEADER
from ..cache.follow import abort_connection
from ..cache.registrycache import RegistryCache
from ..registry.mediatypes import OCI_INDEX, parse_accept
from ..registry.names import Digest, is_tag, parse_name, parse_reference, parse_tag
from .errors import NAME_INVALID, UNSUPPORTED, RegistryError, registry_error
from .openresponses import OpenResponses
from .ranges import parse_range
from .routing import Router

log = Logger()

API_VERSION = (b"Docker-Distribution-API-Version", b"registry/2.0")
# Sent by a node of a cluster following another's fill.
PEER_HEADER = _PEER_HEADER.encode("ascii")
_ITEM = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|referrers)/(?P<reference>[^/]+)")
_KINDS = {"manifests": "manifest", "blobs": "blob", "referrers": "referrers"}
_TAGS = re.compile(r"/v2/(?P<name>.+)/tags/list")
MAX_TAGS_PAGE = 10000
_PAGE_SIZE = re.compile(r"[0-9]{1,6}")
# A media type (RFC 6838's restricted names), as artifactType takes.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


@define
class Route:
    kind: str  # "base", "manifest", "blob", "referrers" or "tags"
    name: str = ""
    reference: str = ""


def route(path: bytes) -> Route:
    """What a request path asks for; RegistryError if it is nothing we serve."""
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        raise RegistryError(400, NAME_INVALID, "request path is not ASCII") from None
    if text in ("/v2", "/v2/"):
        return Route("base")
    match = _ITEM.fullmatch(text)
    if match:
        return Route(_KINDS[match.group("kind")], match.group("name"), match.group("reference"))
    match = _TAGS.fullmatch(text)
    if match:
        return Route("tags", match.group("name"))
    raise RegistryError(404, UNSUPPORTED, "no such API endpoint on this registry mirror")


def describe(path: bytes) -> Route:
    """What a path asked for, for logs: never raises."""
    try:
        return route(path)
    except RegistryError:
        return Route("invalid")


@define(eq=False)
class _Exchange:
    """One request and whether its client is still there."""

    request: Request
    gone: bool = False
    # The repository as the request named it (a registry first, perhaps).
    asked_name: str = ""

    def __attrs_post_init__(self) -> None:
        self.request.notifyFinish().addBoth(self._finished)

    def _finished(self, _: object) -> None:
        self.gone = True


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def write_error(request: Request, error: RegistryError) -> None:
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    for name, value in error.headers:
        request.setHeader(name, value)
    body = error.body()
    request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
    request.write(body)
    request.finish()


class RegistryRoot(Resource):
    """The site's root: /v2/ and nothing else."""

    def __init__(self, router: Router, responses: OpenResponses | None = None) -> None:
        super().__init__()
        self.putChild(b"v2", V2Resource(router, responses))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self

    def render(self, request: Request) -> bytes:
        request.setHeader(*API_VERSION)
        write_error(request, RegistryError(404, UNSUPPORTED, "not a registry API path"))
        return NOT_DONE_YET  # type: ignore[return-value]


class V2Resource(Resource):
    """Everything under /v2/: the registry API, read side."""

    isLeaf = True

    def __init__(self, router: Router, responses: OpenResponses | None = None) -> None:
        super().__init__()
        self._router = router
        self._responses = responses

    def render(self, request: Request) -> int:
        if self._responses is not None:
            self._responses.track(request)
        request.setHeader(*API_VERSION)
        exchange = _Exchange(request)
        Deferred.fromCoroutine(self._serve(exchange)).addErrback(self._crashed, exchange)
        return NOT_DONE_YET

    def _crashed(self, failure: Failure, exchange: _Exchange) -> None:
        log.failure("unexpected error serving {path}", failure, path=exchange.request.path)
        if not exchange.gone:
            if exchange.request.startedWriting:
                abort_connection(exchange.request)
            else:
                write_error(exchange.request, registry_error(failure.value or Exception(), ""))

    async def _serve(self, exchange: _Exchange) -> None:
        request = exchange.request
        kind = ""
        try:
            if request.method not in (b"GET", b"HEAD"):
                raise RegistryError(
                    405, UNSUPPORTED, "this registry mirror is read-only: GET and HEAD only"
                )
            where = route(request.path)
            kind = where.kind
            if kind == "base":
                request.setHeader(b"Content-Type", b"application/json")
                request.setHeader(b"Content-Length", b"2")
                request.write(b"{}")
                request.finish()
                return
            namespaces = request.args.get(b"ns")
            host = request.getHeader(b"host")
            mirror, name = self._router.route(
                where.name,
                namespaces[0].decode("latin-1") if namespaces else None,
                host.decode("latin-1").rpartition(":")[0] or host.decode("latin-1") if host else None,
            )
            # For the access log and the metrics (the server's request type
            # has the attribute): which registry it was for.
            setattr(request, "registry", mirror.registry.namespace)
            exchange.asked_name = where.name
            name = mirror.canonical_name(parse_name(name))
            serve: Callable[[_Exchange, RegistryCache, str, str], Awaitable[None]] = {
                "manifest": self._manifest,
                "blob": self._blob,
                "tags": self._tags,
                "referrers": self._referrers,
            }[kind]
            await serve(exchange, mirror, name, where.reference)
        except Exception as e:
            if exchange.gone:
                return
            # A referrers answer's 404 is of its subject manifest's referrers.
            error = registry_error(e, "manifest" if kind == "referrers" else kind)
            if error.status == 500:
                log.failure("unexpected error serving {path}", path=request.path)
            elif error.status >= 500:
                log.warn(
                    "{method} {path}: {status} {code}: {message}",
                    method=request.method.decode("latin-1"),
                    path=request.path.decode("latin-1", "replace"),
                    status=error.status,
                    code=error.code,
                    message=error.message,
                )
            write_error(request, error)

    async def _manifest(self, exchange: _Exchange, mirror: RegistryCache, name: str, reference: str) -> None:
        request = exchange.request
        parsed = parse_reference(reference)
        accept = parse_accept(
            [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(b"accept", [])]
        )
        served = await mirror.manifests.get(name, parsed, accept, want_body=request.method == b"GET")
        if exchange.gone:
            return
        request.setHeader(b"Content-Type", served.media_type.encode("latin-1"))
        request.setHeader(b"Docker-Content-Digest", str(served.digest).encode("ascii"))
        request.setHeader(b"ETag", f'"{served.digest}"'.encode("ascii"))
        request.setHeader(b"Content-Length", str(served.size).encode("ascii"))
        request.setHeader(b"X-Cache", served.outcome.encode("ascii"))
        if served.subject is not None:
            request.setHeader(b"OCI-Subject", str(served.subject).encode("ascii"))
        if served.body is not None and request.method == b"GET":
            request.write(served.body)
            mirror.served_bytes["cache" if served.outcome.from_cache else "upstream"] += served.size
        request.finish()

    async def _referrers(self, exchange: _Exchange, mirror: RegistryCache, name: str, reference: str) -> None:
        request = exchange.request
        subject = Digest.parse(reference)
        wanted = request.args.get(b"artifactType", [])
        artifact_type = wanted[0].decode("latin-1") if wanted else None
        if len(wanted) > 1 or (artifact_type is not None and not _MEDIA_TYPE.fullmatch(artifact_type)):
            raise RegistryError(400, UNSUPPORTED, "artifactType must be one media type")
        served = await mirror.manifests.referrers.get(name, subject, artifact_type)
        if exchange.gone:
            return
        request.setHeader(b"Content-Type", OCI_INDEX.encode("ascii"))
        request.setHeader(b"Content-Length", str(len(served.body)).encode("ascii"))
        request.setHeader(b"X-Cache", served.outcome.encode("ascii"))
        if served.filters_applied:
            request.setHeader(b"OCI-Filters-Applied", served.filters_applied.encode("ascii"))
        if request.method == b"GET":
            request.write(served.body)
            mirror.served_bytes["cache" if served.outcome.from_cache else "upstream"] += len(served.body)
        request.finish()

    async def _blob(self, exchange: _Exchange, mirror: RegistryCache, name: str, reference: str) -> None:
        request = exchange.request
        digest = Digest.parse(reference)
        common = [
            (b"Docker-Content-Digest", str(digest).encode("ascii")),
            (b"ETag", f'"{digest}"'.encode("ascii")),
            (b"Content-Type", b"application/octet-stream"),
            # Blobs never change: let anything between us and the client keep them.
            (b"Cache-Control", b"max-age=31536000"),
        ]
        if request.method == b"HEAD":
            size = await mirror.blobs.size(name, digest)
            if exchange.gone:
                return
            for header in common:
                request.setHeader(*header)
            if size is not None:
                request.setHeader(b"Content-Length", str(size).encode("ascii"))
                request.setHeader(b"Accept-Ranges", b"bytes")
            request.finish()
            return
        # Another node of a cluster asking for what this one holds or is
        # fetching: never a fetch on its behalf (it would be a circle).
        peer = request.getHeader(PEER_HEADER) is not None
        location = None if peer else await mirror.blobs.redirect_url(digest)
        if location is not None:
            if exchange.gone:
                return
            # dockerd and containerd follow a mirror's 307 to another host
            # and send it no credentials; the URL carries its own signature.
            request.setResponseCode(307)
            for header in common:
                request.setHeader(*header)
            request.setHeader(b"Location", location.encode("ascii"))
            request.setHeader(b"X-Cache", b"REDIRECT")
            request.setHeader(b"Cache-Control", b"no-store")
            request.setHeader(b"Content-Length", b"0")
            request.finish()
            return
        with await mirror.blobs.open(name, digest, local_only=peer) as opened:
            await self._stream_blob(exchange, mirror, opened, common)

    async def _stream_blob(
        self,
        exchange: _Exchange,
        mirror: RegistryCache,
        opened: OpenBlob,
        common: list[tuple[bytes, bytes]],
    ) -> None:
        request = exchange.request
        if exchange.gone:
            return
        start, end = 0, None
        wanted = parse_range(_header(request, b"range"), opened.size) if opened.size is not None else None
        for header in common:
            request.setHeader(*header)
        request.setHeader(b"X-Cache", opened.outcome.encode("ascii"))
        if opened.size is not None:
            request.setHeader(b"Accept-Ranges", b"bytes")
            length = opened.size
            if wanted is not None:
                start, last = wanted
                end = last + 1
                length = end - start
                request.setResponseCode(206)
                request.setHeader(
                    b"Content-Range", f"bytes {start}-{last}/{opened.size}".encode("ascii")
                )
            request.setHeader(b"Content-Length", str(length).encode("ascii"))
        sent = await opened.stream(request, start, end)
        mirror.served_bytes["cache" if opened.outcome.from_cache else "upstream"] += sent

    async def _tags(self, exchange: _Exchange, mirror: RegistryCache, name: str, _: str) -> None:
        request = exchange.request
        query = []
        n = request.args.get(b"n")
        if n:
            text = n[0].decode("latin-1")
            # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
            if not _PAGE_SIZE.fullmatch(text) or int(text) > MAX_TAGS_PAGE:
                raise RegistryError(400, "PAGINATION_NUMBER_INVALID", f"invalid n={text[:20]!r}")
            query.append(f"n={int(text)}")
        last = request.args.get(b"last")
        if last:
            query.append(f"last={parse_tag(last[0].decode('latin-1'))}")
        page = await mirror.tags.get(name, "&".join(query))
        if exchange.gone:
            return
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", str(len(page.body)).encode("ascii"))
        link = _next_page_link(page.link, name, exchange.asked_name) if page.link else None
        if link is not None:
            request.setHeader(b"Link", link.encode("ascii"))
        request.write(page.body)
        request.finish()


_NEXT_LINK = re.compile(
    r'\s*<(?:https?://[^/>]+)?(?:/[^>?]*?)?(?P<path>/v2/[^>?]+/tags/list)(?:\?(?P<query>[^>]*))?>\s*;\s*rel="?next"?\s*'
)


def _next_page_link(link: str, name: str, asked: str) -> str | None:
    """Upstream's next-page link (`name`'s, under whatever path prefix the
    upstream has), pointed at this mirror as the client named the repository
    (`asked`); None unless it is a next page of this very tag list (anything
    else upstream put there is not relayed)."""
    match = _NEXT_LINK.fullmatch(link)
    if match is None or match.group("path") != f"/v2/{name}/tags/list":
        return None
    query = []
    for key, values in parse_qs(match.group("query") or "", keep_blank_values=True).items():
        if key == "n" and len(values) == 1 and _PAGE_SIZE.fullmatch(values[0]):
            query.append(f"n={values[0]}")
        elif key == "last" and len(values) == 1 and is_tag(values[0]):
            query.append(f"last={values[0]}")
        else:
            return None
    return f'</v2/{asked}/tags/list{"?" + "&".join(query) if query else ""}>; rel="next"'
