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
once every other client is done, if the spec says so.
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

from attrs import asdict, frozen

BUFFER = 1024 * 1024
SLOW_READ = 64 * 1024
# The first read of a response: its headers and first bytes, no more, so
# that the time to first byte is not the time to copy a whole buffer.
HEAD_READ = 16 * 1024


@frozen
class ClientSpec:
    path: str
    rate: int | None = None  # bytes per second, or None: as fast as possible
    expect_length: int | None = None
    expect_digest: str | None = None


@frozen
class ClientResult:
    status: int
    received: int
    ttfb: float | None  # seconds from t0 to the first body byte
    elapsed: float | None  # seconds from t0 to the last body byte
    error: str | None
    slow: bool

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
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    hasher = hashlib.sha256() if verify and spec.expect_digest else None
    try:
        await go.wait()
        request = (
            f"GET {spec.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: benchmark\r\n"
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
        return ClientResult(status, received, ttfb, elapsed, error, bool(spec.rate))
    except asyncio.CancelledError:
        return ClientResult(status, received, ttfb, None, "stopped", bool(spec.rate))
    except (OSError, ValueError, KeyError, IndexError) as e:
        return ClientResult(status, received, ttfb, None, f"{type(e).__name__}: {e}", bool(spec.rate))
    finally:
        sock.close()


async def _run(spec: dict[str, Any]) -> RunResult:
    loop = asyncio.get_running_loop()
    host, port = spec["host"], spec["port"]
    clients = [ClientSpec(**c) for c in spec["clients"]]
    sockets = []
    for _ in clients:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (host, port))
        sockets.append(sock)
    go, t0 = asyncio.Event(), [0.0]
    tasks = [
        asyncio.ensure_future(_one(loop, s, f"{host}:{port}", c, go, t0, spec.get("verify", False)))
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
