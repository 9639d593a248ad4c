"""Many concurrent HTTP GETs of blobs, timed per client: a separate process.

Run as ``python -m benchmarks.loadclient`` with a JSON spec on stdin; prints
a JSON report on stdout. ``run_clients`` does that from the benchmark. It is
its own process so that its reading never competes for the benchmark
driver's GIL, and it reads with ``recv_into`` a reused buffer so that it
costs as little CPU as a client can.

Every client connects first; then all send their request together (t0).
Per client it records the status, the bytes of body received, the time to
the first body byte and to the last, both from t0. A client with a ``rate``
reads at most that many bytes a second; those "slow" clients are stopped
once every other client is done, if the spec says so. A client may have a
port of its own (clients spread over several servers), and may follow one
redirect as dockerd does: a GET of the ``Location`` on a new connection,
with no credentials (it never sends any).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attrs import asdict, frozen

BUFFER = 1024 * 1024
SLOW_READ = 64 * 1024
# The first read of a response: its headers and first bytes, no more, so
# that the time to first byte is not the time to copy a whole buffer.
HEAD_READ = 16 * 1024
REDIRECTS = (301, 302, 303, 307, 308)


@frozen
class ClientSpec:
    path: str
    rate: int | None = None  # bytes per second, or None: as fast as possible
    expect_length: int | None = None
    expect_digest: str | None = None
    port: int | None = None  # None: the run's port
    follow_redirect: bool = False


@frozen
class ClientResult:
    status: int
    received: int
    ttfb: float | None  # seconds from t0 to the first body byte
    elapsed: float | None  # seconds from t0 to the last body byte
    error: str | None
    slow: bool
    cache: str | None = None  # the first answer's X-Cache
    redirected: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200


@frozen
class RunResult:
    clients: tuple[ClientResult, ...]
    wall: float  # t0 to the last fast client's last byte

    def fast(self) -> list[ClientResult]:
        return [c for c in self.clients if not c.slow]

    def failures(self) -> list[ClientResult]:
        return [c for c in self.fast() if not c.ok]


async def _one(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    host: str,
    spec: ClientSpec,
    go: asyncio.Event,
    t0: list[float],
    verify: bool,
) -> ClientResult:
    status, received, ttfb, elapsed = 0, 0, None, None
    cache, redirected = None, False
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    hasher = hashlib.sha256() if verify and spec.expect_digest else None
    try:
        await go.wait()
        status, headers, body = await _request(loop, sock, host, spec.path, view)
        cache = headers.get("x-cache")
        if status in REDIRECTS and spec.follow_redirect:
            sock.close()
            sock, status, headers, body = await _follow(loop, headers["location"], view)
            redirected = True
        if "chunked" in headers.get("transfer-encoding", ""):
            raise ValueError("chunked body: the blob's length was not announced")
        length = int(headers["content-length"]) if "content-length" in headers else None
        if body:
            ttfb = time.perf_counter() - t0[0]
            received = len(body)
            if hasher:
                hasher.update(body)
        started = time.perf_counter()
        while length is None or received < length:
            if spec.rate:
                want = SLOW_READ
                n = await loop.sock_recv_into(sock, view[:want])
            else:
                n = await loop.sock_recv_into(sock, view)
            if n == 0:
                break
            if ttfb is None:
                ttfb = time.perf_counter() - t0[0]
            received += n
            if hasher:
                hasher.update(view[:n])
            # sock_recv_into returns without yielding when data is waiting:
            # without this, a client whose data keeps coming would starve
            # the others' first reads, and their TTFB would measure us.
            await asyncio.sleep(0)
            if spec.rate:
                # Pacing, not synchronisation: hold this client to its rate.
                ahead = received / spec.rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        elapsed = time.perf_counter() - t0[0]
        error = None
        if length is not None and received != length:
            error = f"body ended after {received} of {length} bytes"
        elif spec.expect_length is not None and received != spec.expect_length and status == 200:
            error = f"got {received} bytes, expected {spec.expect_length}"
        elif hasher and status == 200 and "sha256:" + hasher.hexdigest() != spec.expect_digest:
            error = "digest mismatch"
        return ClientResult(status, received, ttfb, elapsed, error, bool(spec.rate), cache, redirected)
    except asyncio.CancelledError:
        return ClientResult(status, received, ttfb, None, "stopped", bool(spec.rate), cache, redirected)
    except (OSError, ValueError, KeyError, IndexError) as e:
        error = f"{type(e).__name__}: {e}"
        return ClientResult(status, received, ttfb, None, error, bool(spec.rate), cache, redirected)
    finally:
        sock.close()


async def _request(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, host: str, target: str, view: memoryview
) -> tuple[int, dict[str, str], bytes]:
    """Send a GET of ``target``; the answer's status, headers (names lower
    case) and the body bytes that came with them."""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: benchmark\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    await loop.sock_sendall(sock, request)
    head = b""
    while b"\r\n\r\n" not in head:
        n = await loop.sock_recv_into(sock, view[:HEAD_READ])
        if n == 0:
            raise ConnectionError(f"closed before headers ({len(head)} bytes)")
        head += bytes(view[:n])
    head, _, body = head.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, headers, body


async def _follow(
    loop: asyncio.AbstractEventLoop, location: str, view: memoryview
) -> tuple[socket.socket, int, dict[str, str], bytes]:
    """GET an absolute ``http://`` Location on a connection of its own."""
    url = urlsplit(location)
    if url.scheme != "http" or url.hostname is None:
        raise ValueError(f"cannot follow a redirect to {location!r}")
    sock = await _connect(loop, url.hostname, url.port or 80)
    target = url.path + (f"?{url.query}" if url.query else "")
    try:
        return (sock, *await _request(loop, sock, url.netloc, target, view))
    except BaseException:
        sock.close()
        raise


async def _connect(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _run(spec: dict[str, Any]) -> RunResult:
    loop = asyncio.get_running_loop()
    host, port = spec["host"], spec["port"]
    clients = [ClientSpec(**c) for c in spec["clients"]]
    sockets = [await _connect(loop, host, c.port or port) for c in clients]
    go, t0 = asyncio.Event(), [0.0]
    tasks = [
        asyncio.ensure_future(_one(loop, s, f"{host}:{c.port or port}", c, go, t0, spec.get("verify", False)))
        for s, c in zip(sockets, clients)
    ]
    fast = [t for t, c in zip(tasks, clients) if not c.rate]
    slow = [t for t, c in zip(tasks, clients) if c.rate]
    t0[0] = time.perf_counter()
    go.set()
    deadline = float(spec["deadline"])
    _, pending = await asyncio.wait(fast or tasks, timeout=deadline)
    wall = time.perf_counter() - t0[0]
    stop = list(pending) + (slow if spec.get("stop_slow_when_fast_done") else [])
    for task in stop:
        task.cancel()
    if not spec.get("stop_slow_when_fast_done") and slow:
        await asyncio.wait(slow, timeout=max(1.0, deadline - wall))
        for task in slow:
            task.cancel()
    results = await asyncio.gather(*tasks)
    return RunResult(tuple(results), wall)


def run_clients(
    host: str,
    port: int,
    clients: Sequence[ClientSpec],
    deadline: float,
    stop_slow_when_fast_done: bool = False,
    verify: bool = False,
) -> RunResult:
    """Run the clients in a child process; its report, parsed."""
    spec = {
        "host": host,
        "port": port,
        "clients": [asdict(c) for c in clients],
        "deadline": deadline,
        "stop_slow_when_fast_done": stop_slow_when_fast_done,
        "verify": verify,
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadclient"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=deadline + 60,
        check=False,
        # Where ``benchmarks`` is importable, whatever our own directory.
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load client exited {done.returncode}: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    return RunResult(tuple(ClientResult(**c) for c in report["clients"]), report["wall"])


def main() -> None:
    spec = json.load(sys.stdin)
    result = asyncio.run(_run(spec))
    json.dump({"clients": [asdict(c) for c in result.clients], "wall": result.wall}, sys.stdout)


if __name__ == "__main__":
    main()
