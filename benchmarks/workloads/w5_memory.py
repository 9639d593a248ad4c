"""Workload 5: memory while many clients download different cold blobs, some
of them slowly. Each run starts the system with an empty cache; its peak
RSS is the kernel's high-water mark (VmHWM) of its processes.

Each repetition runs twice per system: the fast clients alone, then the
fast clients with the slow ones (which are stopped once the fast ones are
done). The ratio of the fast clients' times says what the slow clients
cost them.
"""

from __future__ import annotations

from ..context import Bench, CpuMeter, port_of
from ..loadclient import ClientSpec, run_clients
from ..memory import peak_rss
from ..params import MiB
from ..results import LOOPBACK, LOWER, THROTTLED, Results, Target
from ..systems import MIRRORPROXY, MIRRORS

RSS = "peak RSS, fast and slow clients"
RSS_FAST = "peak RSS, fast clients only"
ALONE = "fast clients' time, alone"
WITH_SLOW = "fast clients' time, with slow clients"
SLOWDOWN = "fast clients' slowdown from slow clients"


def run(bench: Bench, results: Results) -> None:
    p = bench.params
    blobs = bench.content.big_blobs[: p.memory_clients]
    fast = [ClientSpec(b.path, None, b.size, b.digest) for b in blobs[: p.memory_fast_clients]]
    slow = [ClientSpec(b.path, p.memory_slow_rate) for b in blobs[p.memory_fast_clients:]]
    for variant in (LOOPBACK, THROTTLED):
        fig = {m: results.figure("5", variant, m, u, LOWER) for m, u in (
            (RSS, "MiB"), (RSS_FAST, "MiB"), (ALONE, "s"), (WITH_SLOW, "s"), (SLOWDOWN, "x"),
        )}
        reps = p.memory_reps if variant == LOOPBACK else p.memory_throttled_reps
        for rep in range(reps):
            for name in MIRRORS[rep % 3:] + MIRRORS[: rep % 3]:
                times = []
                for with_slow in (False, True):
                    clients = fast + slow if with_slow else fast
                    with bench.running(name, variant, label=f"w5-{variant}") as system:
                        mark = bench.upstream.mark()
                        with CpuMeter(system.pids()) as cpu:
                            got = run_clients("127.0.0.1", port_of(system.url), clients, p.client_deadline,
                                              stop_slow_when_fast_done=True, verify=p.verify_digests)
                        rss = peak_rss(system.pids()) / MiB
                        if got.failures():
                            raise RuntimeError(f"w5: {name}: {got.failures()[0]}")
                    upstream_gets = sum(
                        1 for r in bench.upstream.requests(mark) if r.method == "GET" and r.status == 200
                    )
                    slow_bytes = sum(c.received for c in got.clients if c.slow)
                    times.append(got.wall)
                    if with_slow:
                        fig[RSS].add(name, rss)
                        fig[WITH_SLOW].add(name, got.wall, cores=cpu.cores, upstream_gets=upstream_gets,
                                           slow_clients_mib=round(slow_bytes / MiB, 1))
                    else:
                        fig[RSS_FAST].add(name, rss)
                        fig[ALONE].add(name, got.wall, cores=cpu.cores, upstream_gets=upstream_gets)
                fig[SLOWDOWN].add(name, times[1] / times[0])
                bench.say(
                    f"w5 {variant}: rep {rep + 1} {name}: peak RSS {fig[RSS].samples[name][-1]:.0f} MiB "
                    f"(fast only {fig[RSS_FAST].samples[name][-1]:.0f}), fast clients {times[0]:.2f}s "
                    f"alone, {times[1]:.2f}s with slow"
                )


def targets(results: Results) -> list[Target]:
    found = []
    for variant in (LOOPBACK, THROTTLED):
        found += [
            Target("5", variant, "mirrorproxy's peak RSS <= 150 MiB",
                   results.find("5", variant, RSS).value(MIRRORPROXY), 150.0, "<="),
            # "As fast as with no slow clients": within this machine's noise.
            Target("5", variant, "fast clients with slow ones / alone <= 1.10",
                   results.find("5", variant, SLOWDOWN).value(MIRRORPROXY), 1.10, "<="),
        ]
    return found
