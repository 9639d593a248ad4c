"""Workload 3: the thundering herd. Many clients at once GET one cold blob;
and, for comparison, one lone client GETs it cold. Each run starts the
system with an empty cache. Upstream GETs are counted in the upstream's
access log (answers with content only; a 401 moves no bytes)."""

from __future__ import annotations

import statistics
import time

from tests.integration.harness.registry import LogMark, UpstreamRegistry

from ..content import BlobRef
from ..context import Bench, CpuMeter, port_of
from ..loadclient import ClientSpec, RunResult, run_clients
from ..results import LOOPBACK, LOWER, THROTTLED, Results, Target
from ..systems import MIRRORPROXY, MIRRORS

GETS = "herd: upstream GETs"
TTFB_MEDIAN = "herd: time to first byte, median"
TTFB_MAX = "herd: time to first byte, max"
WALL = "herd: wall time"
LONE_TTFB = "lone cold client: time to first byte"
LONE_WALL = "lone cold client: wall time"

SETTLE_POLLS = 50


def upstream_fetches(upstream: UpstreamRegistry, blob: BlobRef, mark: LogMark) -> int:
    """GETs of ``blob`` with content since ``mark``, once the count stops
    changing (the registry logs a request as its handler returns)."""
    count = upstream.blob_fetches(blob.name, blob.digest, mark)
    for _ in range(SETTLE_POLLS):
        time.sleep(0.1)
        again = upstream.blob_fetches(blob.name, blob.digest, mark)
        if again == count:
            break
        count = again
    return count


def _check(name: str, got: RunResult) -> None:
    if got.failures():
        raise RuntimeError(f"w3: {name}: {len(got.failures())} clients failed: {got.failures()[0]}")


def run(bench: Bench, results: Results) -> None:
    p = bench.params
    blob = bench.content.herd_blob
    spec = ClientSpec(blob.path, None, blob.size, blob.digest)
    for variant in (LOOPBACK, THROTTLED):
        fig = {m: results.figure("3", variant, m, u, LOWER) for m, u in (
            (GETS, "GETs"), (TTFB_MEDIAN, "ms"), (TTFB_MAX, "ms"), (WALL, "s"),
            (LONE_TTFB, "ms"), (LONE_WALL, "s"),
        )}
        for rep in range(p.herd_reps):
            order = list(MIRRORS[rep % 3:] + MIRRORS[: rep % 3])
            for name in order:
                with bench.running(name, variant, label=f"w3-lone-{variant}") as system:
                    lone = run_clients("127.0.0.1", port_of(system.url), [spec], p.client_deadline,
                                       verify=p.verify_digests)
                    _check(name, lone)
                (client,) = lone.clients
                assert client.ttfb is not None
                fig[LONE_TTFB].add(name, client.ttfb * 1000)
                fig[LONE_WALL].add(name, lone.wall)
                with bench.running(name, variant, label=f"w3-herd-{variant}") as system:
                    mark = bench.upstream.mark()
                    with CpuMeter(system.pids()) as cpu:
                        herd = run_clients("127.0.0.1", port_of(system.url), [spec] * p.herd_clients,
                                           p.client_deadline, verify=p.verify_digests)
                    _check(name, herd)
                    gets = upstream_fetches(bench.upstream, blob, mark)
                ttfbs = [c.ttfb for c in herd.clients if c.ttfb is not None]
                fig[GETS].add(name, gets)
                fig[TTFB_MEDIAN].add(name, statistics.median(ttfbs) * 1000)
                fig[TTFB_MAX].add(name, max(ttfbs) * 1000)
                fig[WALL].add(name, herd.wall, cores=cpu.cores)
                bench.say(
                    f"w3 {variant}: rep {rep + 1} {name}: {gets} GETs, TTFB median "
                    f"{statistics.median(ttfbs) * 1000:.0f} ms max {max(ttfbs) * 1000:.0f} ms, "
                    f"wall {herd.wall:.2f}s (lone: {client.ttfb * 1000:.0f} ms, {lone.wall:.2f}s)"
                )


def targets(results: Results) -> list[Target]:
    found = []
    for variant in (LOOPBACK, THROTTLED):
        gets = results.find("3", variant, GETS).value(MIRRORPROXY)
        ttfb_max = results.find("3", variant, TTFB_MAX).value(MIRRORPROXY)
        lone_ttfb = results.find("3", variant, LONE_TTFB).value(MIRRORPROXY)
        wall = results.find("3", variant, WALL).value(MIRRORPROXY)
        lone_wall = results.find("3", variant, LONE_WALL).value(MIRRORPROXY)
        found += [
            Target("3", variant, "herd: mirrorproxy's upstream GETs = 1", gets, 1, "<="),
            Target("3", variant, "herd: max TTFB / lone client's TTFB <= 2",
                   ttfb_max / lone_ttfb if ttfb_max and lone_ttfb else None, 2.0, "<=",
                   f"{ttfb_max:.0f} ms / {lone_ttfb:.0f} ms" if ttfb_max and lone_ttfb else ""),
            Target("3", variant, "herd: wall / lone client's wall <= 1.3",
                   wall / lone_wall if wall and lone_wall else None, 1.3, "<=",
                   f"{wall:.2f} s / {lone_wall:.2f} s" if wall and lone_wall else ""),
        ]
    return found
