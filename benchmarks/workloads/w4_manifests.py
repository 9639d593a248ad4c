"""Workload 4: requests per second for a cached manifest, by tag (within the
tag TTL) and by digest, with wrk. All systems run side by side, warmed by
one GET of each; repetitions take turns between them."""

from __future__ import annotations

import re
import subprocess
from contextlib import ExitStack

from tests.integration.harness.client import request
from tests.integration.harness.publish import ACCEPT_MANIFESTS

from ..context import Bench, CpuMeter
from ..results import HIGHER, LOOPBACK, Results, Target
from ..systems import DISTRIBUTION, MIRRORS

BY_TAG = "manifest by tag"
BY_DIGEST = "manifest by digest"

_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def wrk(binary: str, url: str, threads: int, connections: int, seconds: float) -> float:
    """wrk's requests per second for GETs of ``url``; an error if any failed."""
    argv = [
        binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "-H", f"Accept: {ACCEPT_MANIFESTS}", url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    out = done.stdout
    rate = _RATE.search(out)
    if done.returncode != 0 or rate is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{out}")
    bad = _NON_2XX.search(out)
    errors = _SOCKET_ERRORS.search(out)
    if bad or (errors and any(int(n) for n in errors.groups())):
        raise RuntimeError(f"wrk saw failed requests at {url}:\n{out}")
    return float(rate.group(1))


def run(bench: Bench, results: Results) -> None:
    p = bench.params
    image = bench.content.small_image
    paths = {
        BY_TAG: f"/v2/{image.name}/manifests/{image.tag}",
        BY_DIGEST: f"/v2/{image.name}/manifests/{image.digest}",
    }
    figures = {m: results.figure("4", LOOPBACK, m, "req/s", HIGHER) for m in paths}
    with ExitStack() as stack:
        systems = {n: stack.enter_context(bench.running(n, LOOPBACK, label="w4")) for n in MIRRORS}
        for name, system in systems.items():
            for path in paths.values():
                answer = request(system.url + path, headers={"Accept": ACCEPT_MANIFESTS})
                if answer.status != 200:
                    raise RuntimeError(f"w4: {name} answered {answer.status} to {path}")
        for rep in range(p.wrk_reps):
            for name, system in systems.items():
                for metric, path in paths.items():
                    mark = bench.upstream.mark()
                    with CpuMeter(system.pids()) as cpu:
                        rate = wrk(bench.tools.wrk, system.url + path, p.wrk_threads,
                                   p.wrk_connections, p.wrk_seconds)
                    asked = len(bench.upstream.requests(mark))
                    figures[metric].add(name, rate, cores=cpu.cores, upstream_requests=asked)
            bench.say(
                f"w4: rep {rep + 1}: "
                + "; ".join(
                    f"{m}: " + ", ".join(f"{s} {v[-1]:.0f}" for s, v in f.samples.items())
                    for m, f in figures.items()
                )
            )


def targets(results: Results) -> list[Target]:
    return [
        Target("4", LOOPBACK, "by tag: mirrorproxy / distribution >= 10",
               results.find("4", LOOPBACK, BY_TAG).ratio(DISTRIBUTION), 10.0, ">="),
        Target("4", LOOPBACK, "by digest: mirrorproxy / distribution >= 2",
               results.find("4", LOOPBACK, BY_DIGEST).ratio(DISTRIBUTION), 2.0, ">="),
    ]
