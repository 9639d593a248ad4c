"""A bounded soak: many concurrent clients pulling cold and warm content,
some leaving mid-body, some slow.  Zero wrong bytes, zero unexpected errors,
and the mirror's memory and file descriptors flat from start to end.

MIRRORPROXY_SOAK_SECONDS sets the duration (default 20; the figures in
docs/reliability.rst come from a longer run).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness.mirror import MirrorFactory
from .harness.oci import HOST, MiB
from .harness.publish import Publisher, RawBlob

pytestmark = pytest.mark.integration

CLIENTS = 200
SECONDS = float(os.environ.get("MIRRORPROXY_SOAK_SECONDS", "20"))
ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def rss_and_fds(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return rss * 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def get(port: int, path: str, headers: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: mirror\r\n{headers}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return reader, writer, status, fields


async def client(
    port: int,
    blobs: list[RawBlob],
    manifests: list[tuple[str, str]],
    deadline: float,
    rng: random.Random,
    tally: Counter[str],
) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        style = rng.choices(["whole", "leave", "slow", "manifest"], weights=[6, 2, 1, 3])[0]
        if style == "manifest":
            path, digest = rng.choice(manifests)
            reader, writer, status, fields = await get(port, path, f"Accept: {ACCEPT}\r\n")
            body = await reader.readexactly(int(fields["content-length"]))
            writer.close()
            ok = status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == digest
            tally["manifests" if ok else "wrong"] += 1
            continue
        blob = rng.choice(blobs)
        reader, writer, status, fields = await get(port, blob.path)
        if status != 200 or int(fields["content-length"]) != len(blob.data):
            tally["unexpected"] += 1
            writer.close()
            continue
        hasher, received = hashlib.sha256(), 0
        stop_at = rng.randrange(len(blob.data)) if style == "leave" else len(blob.data)
        while received < stop_at:
            chunk = await reader.read(min(256 * 1024, stop_at - received))
            if not chunk:
                break
            hasher.update(chunk)
            received += len(chunk)
            tally["bytes"] += len(chunk)
            if style == "slow":
                await asyncio.sleep(0.05)  # about 1-5 MiB/s: a slow client
        writer.close()
        if style == "leave":
            tally["left"] += 1
        elif received == len(blob.data) and "sha256:" + hasher.hexdigest() == blob.digest:
            tally["blobs"] += 1
        else:
            tally["wrong"] += 1


def test_soak(
    publisher: Publisher,
    start_mirror: MirrorFactory,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    rng = random.Random(20261128)
    blobs = [publisher.blob(f"soak/{unique('b')}", rng.randrange(256 * 1024, 4 * MiB)) for _ in range(24)]
    manifests: list[tuple[str, str]] = []
    for n in range(4):
        image = publisher.image(f"soak/{unique('img')}", f"t{n}", {HOST: (128 * 1024,)})
        manifests.append((f"/v2/{image.name}/manifests/{image.tag}", image.digest))
        manifests.append((f"/v2/{image.name}/manifests/{image.digest}", image.digest))
    mirror = start_mirror()

    async def run(seconds: float, clients: int) -> Counter[str]:
        tally: Counter[str] = Counter()
        deadline = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(
            *(client(mirror.port, blobs, manifests, deadline, random.Random(rng.random()), tally) for _ in range(clients))
        )
        return tally

    warm = asyncio.run(run(5, CLIENTS))  # the first fills; the process reaches its steady state
    start = rss_and_fds(mirror.process.pid)
    tally = asyncio.run(run(SECONDS, CLIENTS))
    end = rss_and_fds(mirror.process.pid)

    figures = {
        "clients": CLIENTS,
        "seconds": SECONDS,
        "requests": sum(tally[k] for k in ("blobs", "manifests", "left", "wrong", "unexpected")),
        "whole blobs": tally["blobs"],
        "manifests": tally["manifests"],
        "left mid-body": tally["left"],
        "bytes": tally["bytes"],
        "wrong": tally["wrong"],
        "unexpected": tally["unexpected"],
        "rss start MiB": round(start[0] / MiB, 1),
        "rss end MiB": round(end[0] / MiB, 1),
        "fds start": start[1],
        "fds end": end[1],
    }
    print("soak figures:", json.dumps(figures))
    (tmp_path / "soak.json").write_text(json.dumps(figures))
    assert warm["wrong"] == warm["unexpected"] == 0
    assert tally["wrong"] == 0 and tally["unexpected"] == 0
    assert tally["blobs"] > CLIENTS and tally["left"] > 0 and tally["manifests"] > 0
    assert end[0] - start[0] < 48 * MiB, figures
    assert end[1] <= start[1] + 8, figures
