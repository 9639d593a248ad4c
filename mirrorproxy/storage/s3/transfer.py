"""The S3 store's byte path: requests signed by botocore, sent by treq.

botocore signs (SigV4, the declared payload hash included in the signature);
treq carries the bytes, so a blob streams from its spool file to the server
and from the server to a reader without a thread per transfer and without
being held in memory whole.  Signing runs in the thread pool, since fetching
credentials may block (a profile's process, an instance's metadata).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from attrs import define
from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IBodyProducer

from ...common.runner import Runner
from .body import SpoolBody
from .bucket import S3Error, b64_sha256

log = Logger()

# The hash a GET (no body) declares.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# How much of an error's body is worth reading for its code.
_ERROR_LIMIT = 64 * 1024


class _DeclaredPayload(S3SigV4Auth):  # type: ignore[misc]
    """botocore's S3 signer, told the body's sha256 instead of reading a
    body it does not hold (the bytes follow from a file, through treq)."""

    def __init__(self, credentials: Any, region: str, payload_sha256: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_sha256 = payload_sha256

    def payload(self, request: AWSRequest) -> str:
        return self._payload_sha256


def object_url(endpoint_url: str, bucket: str, key: str, query: str = "") -> str:
    """The path-style URL of `key`, quoted as botocore quotes keys."""
    url = f"{endpoint_url.rstrip('/')}/{bucket}/{quote(key, safe='/~')}"
    return f"{url}?{query}" if query else url


def sign(
    bucket: Any, method: str, key: str, payload_sha256: str, headers: dict[str, str], query: str = ""
) -> tuple[str, dict[str, str]]:
    """The URL and signed headers of a request to `key` (blocking: it may fetch credentials)."""
    url = object_url(bucket.client.meta.endpoint_url, bucket.name, key, query)
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    signer = _DeclaredPayload(bucket.frozen_credentials(), bucket.client.meta.region_name, payload_sha256)
    signer.add_auth(request)
    return url, dict(request.headers.items())


@define(eq=False)
class Transfer:
    """Signed requests for one bucket, sent with `_treq`."""

    _bucket: Any
    _treq: Any
    _run: Runner
    _clock: IReactorTime
    # Seconds a request may go without progress: sending nothing, or
    # waiting for its answer's headers or its (bounded) body.
    _silence: float = 60.0

    async def _send(
        self,
        method: str,
        key: str,
        payload_sha256: str,
        headers: dict[str, str],
        query: str = "",
        body: Any = None,
    ) -> Any:
        url, signed = await self._run(sign, self._bucket, method, key, payload_sha256, headers, query)
        as_lists = {name: [value] for name, value in signed.items()}
        sent = self._treq.request(method, url, headers=as_lists, data=body, unbuffered=True)
        # Until the answer's headers: silence, not duration, fails a request
        # (a large upload may take long; each chunk it sends resets the clock).
        watchdog = _Watchdog(self._clock, self._silence, sent)
        if isinstance(body, SpoolBody):
            body.progressed = watchdog.reset
        try:
            return await sent
        except CancelledError:
            raise
        except Exception as e:  # connection refused, timed out, reset: all one to the caller
            if watchdog.fired:
                raise self._error(method, key, f"no progress for {self._silence:g} s") from None
            # A request cancelled before its answer fails with the cancellation wrapped.
            if any(reason.check(CancelledError) for reason in getattr(e, "reasons", [])):
                raise CancelledError() from None
            raise self._error(method, key, _reasons(e)) from None
        finally:
            watchdog.stop()

    def _error(self, method: str, key: str, why: str, code: str | None = None) -> S3Error:
        return S3Error(f"S3 {method} s3://{self._bucket.name}/{key}: {why}", code)

    async def _body(self, response: Any, method: str, key: str) -> bytes:
        """An answer's whole body (a bounded one: a range, an error), in time."""
        reading = response.content()
        reading.addTimeout(self._silence, self._clock)
        try:
            body: bytes = await reading
        except defer.TimeoutError:
            raise self._error(method, key, f"the answer's body took over {self._silence:g} s") from None
        except Exception as e:
            raise self._error(method, key, f"the answer's body failed: {_reasons(e)}") from None
        return body

    async def _failure(self, response: Any, method: str, key: str) -> S3Error:
        """The error an unexpected answer is (its body read, to free the connection)."""
        body = await self._body(response, method, key)
        code = _error_code(body[:_ERROR_LIMIT]) or str(response.code)
        return self._error(method, key, f"{response.code} {code}", code)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Exactly `length` bytes of the object at `key` from `offset`."""
        end = offset + length - 1
        response = await self._send("GET", key, EMPTY_SHA256, {"Range": f"bytes={offset}-{end}"})
        if response.code not in (200, 206):
            raise await self._failure(response, "GET", key)
        # A 200 is the whole object: right only if that is the range asked for.
        whole = response.code == 200 and offset == 0
        if (response.code != 206 and not whole) or response.length != length:
            response.deliverBody(_Abort())
            raise self._error("GET", key, f"{response.code}, not the {length} bytes asked for")
        data = await self._body(response, "GET", key)
        if len(data) != length:
            raise self._error("GET", key, f"{len(data)} bytes, not the {length} asked for")
        return data

    async def open_stream(self, key: str, start: int = 0) -> Any:
        """The object at `key` from `start` on, its body not yet read (the
        caller delivers or discards it): a 200 with the whole object or a
        206 from `start`; None if there is no such object."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        response = await self._send("GET", key, EMPTY_SHA256, headers)
        if response.code == 404:
            await self._body(response, "GET", key)
            return None
        if response.code not in (200, 206):
            raise await self._failure(response, "GET", key)
        return response

    async def put(self, key: str, body: IBodyProducer, sha256_hex: str, if_absent: bool = False) -> bool:
        """PUT `body`, whose sha256 the server checks (the signed payload hash
        and the checksum header); False if `if_absent` and an object was already there."""
        headers = {"x-amz-checksum-sha256": b64_sha256(sha256_hex)}
        if if_absent:
            headers["If-None-Match"] = "*"
        response = await self._send("PUT", key, sha256_hex, headers, body=body)
        if if_absent and response.code == 412:
            await self._body(response, "PUT", key)
            return False
        if response.code != 200:
            raise await self._failure(response, "PUT", key)
        await self._body(response, "PUT", key)
        return True

    async def put_part(
        self, key: str, upload_id: str, number: int, body: IBodyProducer, sha256_hex: str
    ) -> str:
        """Upload part `number` of an upload; its ETag, which completing the upload names."""
        query = f"partNumber={number}&uploadId={quote(upload_id, safe='-_.~')}"
        headers = {"x-amz-checksum-sha256": b64_sha256(sha256_hex)}
        response = await self._send("PUT", key, sha256_hex, headers, query=query, body=body)
        if response.code != 200:
            raise await self._failure(response, "UploadPart", key)
        await self._body(response, "UploadPart", key)
        etag: str = response.headers.getRawHeaders(b"etag", [b""])[0].decode("latin-1")
        if not etag:
            raise self._error("UploadPart", key, "no ETag in the answer")
        return etag


class _Watchdog:
    """Cancels a request that makes no progress for `silence` seconds."""

    def __init__(self, clock: IReactorTime, silence: float, request: Deferred[Any]) -> None:
        self.fired = False
        self._silence = silence
        self._request = request
        self._call: IDelayedCall | None = clock.callLater(silence, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self._call = None
        self._request.cancel()

    def reset(self) -> None:
        if self._call is not None:
            self._call.reset(self._silence)

    def stop(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


def _reasons(error: Exception) -> str:
    """What went wrong, on one line (the client's wrapping errors hold Failures)."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(reason.value) or reason.type.__name__ for reason in reasons)
    return str(error) or type(error).__name__


def _error_code(body: bytes) -> str | None:
    start, end = body.find(b"<Code>"), body.find(b"</Code>")
    if start < 0 or end < start:
        return None
    return body[start + len(b"<Code>") : end].decode("utf-8", "replace")


class _Abort:
    """Drops the connection an unwanted body (an ignored Range: maybe the
    whole blob) would arrive on, rather than reading it."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass
