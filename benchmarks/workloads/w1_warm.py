"""Workload 1: warm blob throughput. One client downloads a cached blob; then
several clients download different cached blobs at once.

All three systems run side by side with their caches warmed by one full
download of each blob; repetitions take turns between the systems so that
the machine's noise spreads over all of them.
"""

from __future__ import annotations

from contextlib import ExitStack

from ..context import Bench, CpuMeter, port_of
from ..loadclient import ClientSpec, RunResult, run_clients
from ..params import MiB
from ..results import HIGHER, LOOPBACK, Figure, Results, Target
from ..systems import DISTRIBUTION, MIRRORS, NGINX

ONE = "one client"
PARALLEL = "{n} clients in parallel, aggregate"


def run(bench: Bench, results: Results) -> None:
    p = bench.params
    blobs = bench.content.big_blobs[: p.warm_parallel]
    specs = [ClientSpec(b.path, None, b.size, b.digest) for b in blobs]
    one = results.figure("1", LOOPBACK, ONE, "MiB/s", HIGHER)
    many = results.figure("1", LOOPBACK, PARALLEL.format(n=p.warm_parallel), "MiB/s", HIGHER)
    with ExitStack() as stack:
        systems = {name: stack.enter_context(bench.running(name, LOOPBACK, label="w1")) for name in MIRRORS}
        for name, system in systems.items():
            bench.say(f"w1: warming {name}")
            warmed = run_clients("127.0.0.1", port_of(system.url), specs, p.client_deadline, verify=p.verify_digests)
            if warmed.failures():
                raise RuntimeError(f"w1: warming {name} failed: {warmed.failures()[0]}")
        for rep in range(max(p.warm_single_reps, p.warm_parallel_reps)):
            for name, system in systems.items():
                port = port_of(system.url)
                if rep < p.warm_single_reps:
                    with CpuMeter(system.pids()) as cpu:
                        got = run_clients("127.0.0.1", port, specs[:1], p.client_deadline, verify=p.verify_digests)
                    _record(one, name, got, blobs[0].size, cpu.cores)
                if rep < p.warm_parallel_reps:
                    with CpuMeter(system.pids()) as cpu:
                        got = run_clients("127.0.0.1", port, specs, p.client_deadline, verify=p.verify_digests)
                    _record(many, name, got, sum(b.size for b in blobs), cpu.cores)
            measured = [f"{f.metric}: {_last(f)}" for f, reps in ((one, p.warm_single_reps), (many, p.warm_parallel_reps)) if rep < reps]
            bench.say(f"w1: rep {rep + 1}: " + "; ".join(measured))


def _record(figure: Figure, name: str, got: RunResult, size: int, cores: float) -> None:
    if got.failures():
        raise RuntimeError(f"w1: {name}: {got.failures()[0]}")
    figure.add(name, size / MiB / got.wall, cores=cores)


def _last(figure: Figure) -> str:
    return ", ".join(f"{s} {v[-1]:.0f}" for s, v in figure.samples.items())


def targets(results: Results) -> list[Target]:
    found = []
    for figure in results.figures:
        if figure.workload != "1":
            continue
        found += [
            Target("1", LOOPBACK, f"{figure.metric}: mirrorproxy / distribution >= 1.0",
                   figure.ratio(DISTRIBUTION), 1.0, ">="),
            Target("1", LOOPBACK, f"{figure.metric}: mirrorproxy / nginx >= 0.8",
                   figure.ratio(NGINX), 0.8, ">="),
        ]
    return found
