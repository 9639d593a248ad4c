"""The mirror wired to the fake registry, synchronously, for unit tests.

Upstream is `FakeRegistry` behind StubTreq; time is a `Clock`; blocking file
work runs inline (the service runs it in a thread pool); clients are real
HTTP channels of the mirror's Site over StringTransports.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import attrs
from attrs import define, field
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mirrorproxy.api.resource import RegistryRoot
from mirrorproxy.api.routing import Router
from mirrorproxy.cache.registrycache import RegistryCache
from mirrorproxy.server.channel import MirrorSite
from mirrorproxy.server.config import Settings
from mirrorproxy.server.service import build_caches
from mirrorproxy.storage.filesystem import FilesystemStore
from mirrorproxy.upstream.settings import Credentials, Timeouts, UpstreamRegistry

from ..fakeregistry import UPSTREAM_URL, FakeRegistry


def run_inline(function: Any, *args: Any) -> Deferred[Any]:
    return maybeDeferred(function, *args)


def cache_turned_read_only() -> Any:
    """A thread pool whose cache went read-only after start: nothing can be
    created in it (as after ext4's errors=remount-ro)."""

    def run(function: Any, *args: Any) -> Deferred[Any]:
        if function is os.open and args[1] & os.O_CREAT:

            def read_only(*_: Any) -> None:
                raise OSError(errno.EROFS, "Read-only file system", args[0])

            return run_inline(read_only)
        return run_inline(function, *args)

    return run


def disk_fills_after(first_writes: int):
    """A thread pool whose disk is full after `first_writes` jobs that wrote
    to a file: from then on every pwrite(2) fails with ENOSPC."""
    import errno

    writing_jobs = []

    def run(function, *args):
        real = os.pwrite
        wrote = []

        def pwrite(fd, data, offset):
            if not wrote:
                wrote.append(True)
                writing_jobs.append(function)
            if len(writing_jobs) > first_writes:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data, offset)

        os.pwrite = pwrite
        try:
            return run_inline(function, *args)
        finally:
            os.pwrite = real

    return run


@define(eq=False)
class ManualRunner:
    """A thread pool that runs nothing until the test says so."""

    jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = field(factory=list)

    def __call__(self, function: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((function, args, d))
        return d

    def run_one(self, name: str) -> None:
        """Run the first waiting job that calls `name`, and only that one."""
        job = next(j for j in self.jobs if j[0].__name__ == name)
        self.jobs.remove(job)
        function, args, d = job
        maybeDeferred(function, *args).chainDeferred(d)

    def run_all(self) -> int:
        count = 0
        while self.jobs:
            function, args, d = self.jobs.pop(0)
            maybeDeferred(function, *args).chainDeferred(d)
            count += 1
        return count


@define
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool  # the whole body, as framed by Content-Length or chunks
    aborted: bool

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def parse_response(raw: bytes, aborted: bool) -> Response | None:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body, complete = b"", False
        while True:
            size_line, sep, after = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if size == 0:
                complete = after.startswith(b"\r\n")
                break
            if len(after) < size + 2:
                body += after[:size]
                break
            body += after[:size]
            rest = after[size + 2 :]
        return Response(status, headers, body, complete, aborted)
    length = int(headers.get("content-length", "0"))
    return Response(status, headers, rest, len(rest) == length, aborted)


class WindowTransport(StringTransport):
    """A client that stops reading: once `window` bytes sit unread, it
    pauses its producer, as a socket whose send buffer is full does."""

    def __init__(self, window: int | None = None) -> None:
        super().__init__()
        self.window = window
        self.paused_by_window = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.window is not None and len(self.value()) > self.window and self.producer is not None:
            if not self.paused_by_window:
                self.paused_by_window = True
                self.producer.pauseProducing()

    def open_window(self) -> None:
        self.window = None
        if self.paused_by_window and self.producer is not None:
            self.paused_by_window = False
            self.producer.resumeProducing()


@define(eq=False)
class Client:
    """One client connection to the mirror."""

    transport: WindowTransport
    protocol: Any

    def response(self) -> Response | None:
        return parse_response(self.transport.value(), self.transport.disconnected)

    def pause(self) -> None:
        self.transport.producer.pauseProducing()

    def resume(self) -> None:
        self.transport.producer.resumeProducing()

    def disconnect(self) -> None:
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionLost()))


@define(eq=False, slots=False)
class Harness:
    cache_dir: str
    registry: FakeRegistry = field(factory=FakeRegistry)
    clock: Clock = field(factory=Clock)
    tag_ttl: float = 300.0
    upstream_url: str = UPSTREAM_URL
    timeouts: Timeouts = field(factory=Timeouts)
    run: Any = run_inline
    max_cache_size: int | None = None
    redirect_allow: tuple[str, ...] = ()
    credentials: Credentials | None = None
    negative_ttl: float = 30.0
    # More registries than `registry` at `upstream_url`: [NAMESPACE=]URL ->
    # the fake registry behind it; `hosts` maps host names to namespaces.
    others: dict[str, FakeRegistry] = field(factory=dict)
    hosts: tuple[tuple[str, str], ...] = ()

    def __attrs_post_init__(self) -> None:
        self.stub = StubTreq(self.registry)
        self.settings = Settings(
            upstream=UpstreamRegistry.from_entry(self.upstream_url),
            cache_dir=self.cache_dir,
            tag_ttl=self.tag_ttl,
            timeouts=self.timeouts,
            max_cache_size=self.max_cache_size,
            upstream_redirect_allow=self.redirect_allow,
            credentials=self.credentials,
            negative_ttl=self.negative_ttl,
            hosts=self.hosts,
        )
        if self.others:
            first = self.settings.served()[0]
            extra = [attrs.evolve(first, upstream=UpstreamRegistry.from_entry(e), credentials=None) for e in self.others]
            self.settings = attrs.evolve(self.settings, registries=(first, *extra))
        self.fakes = {
            registry.namespace: fake
            for registry, fake in zip(self.settings.served(), [self.registry, *self.others.values()])
        }
        self.stubs = {namespace: StubTreq(fake) for namespace, fake in self.fakes.items()}
        self.stubs[self.settings.served()[0].namespace] = self.stub
        self.store = FilesystemStore(self.cache_dir, self.run)
        self.store.prepare()
        self.build()

    def build(self) -> None:
        """(Re)build the mirror from `settings`, over the same fakes."""
        self.mirrors = build_caches(
            self.settings, lambda registry: (self.stubs[registry.namespace], None), self.clock, self.run  # type: ignore[arg-type, return-value]
        )
        default = self.settings.default_registry()
        self.router = Router(self.mirrors, default.namespace if default else None, dict(self.settings.hosts))
        self.mirror: RegistryCache = self.mirrors[0]
        Deferred.fromCoroutine(self.mirror.store.measure())
        self.site = MirrorSite(RegistryRoot(self.router), reactor=self.clock)

    def connect(self, window: int | None = None) -> Client:
        protocol = self.site.buildProtocol(None)
        transport = WindowTransport(window)
        protocol.makeConnection(transport)
        return Client(transport, protocol)

    def send(self, method: str, path: str, headers: dict[str, str] | None = None) -> Client:
        client = self.connect()
        headers = {"Host": "mirror.test", **{k.title(): v for k, v in (headers or {}).items()}}
        lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
        client.protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return client

    def pump(self, rounds: int = 10_000) -> None:
        """Move bytes until upstream has nothing more to send."""
        self._flush()
        for _ in range(rounds):
            moved = [fake.tick() for fake in self.fakes.values()]
            self._flush()
            if not any(moved):
                break
        self._flush()

    def _flush(self) -> None:
        for stub in self.stubs.values():
            stub.flush()

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
        client = self.send(method, path, headers)
        self.pump()
        response = client.response()
        assert response is not None, f"no response to {method} {path}: {client.transport.value()[:200]!r}"
        return response

    def get(self, path: str, **headers: str) -> Response:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})

    def head(self, path: str, **headers: str) -> Response:
        return self.request("HEAD", path, {k.replace("_", "-"): v for k, v in headers.items()})


# -- blobs at the fake upstream -------------------------------------------------------


def blob_path(digest: str) -> str:
    return f"/v2/library/busybox/blobs/{digest}"


def upstream_blob(harness, size: int) -> tuple[bytes, str]:
    """``size`` random bytes at the upstream; the bytes and their digest."""
    data = os.urandom(size)
    return data, harness.registry.add_blob(data)


def held_blob(harness, size: int) -> tuple[bytes, str]:
    """As `upstream_blob`, but upstream sends the body only as the test says,
    through ``harness.registry.held[digest]``."""
    data, digest = upstream_blob(harness, size)
    harness.registry.hold.add(digest)
    return data, digest
