"""Workload 2: cold pull of a 5-layer image, through each mirror and straight
from the upstream, with skopeo (``copy --all docker://... dir:``), over
loopback and through the throttled link.

The direct pull crosses the same link as the mirrors' upstream fetches: a
mirror can at best add nothing to it.
"""

from __future__ import annotations

import shutil
import time
from urllib.parse import urlsplit

from ..context import Bench, CpuMeter
from ..results import LOOPBACK, LOWER, THROTTLED, Results, Target
from ..systems import DIRECT, MIRRORPROXY, MIRRORS

METRIC = "cold pull time"


def _pull(bench: Bench, url: str, out_name: str) -> float:
    out = bench.work_dir / out_name
    shutil.rmtree(out, ignore_errors=True)
    host = urlsplit(url).netloc
    started = time.perf_counter()
    bench.skopeo.pull_to_dir(host, bench.content.pull_image.reference, out)
    elapsed = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    return elapsed


def run(bench: Bench, results: Results) -> None:
    for variant in (LOOPBACK, THROTTLED):
        figure = results.figure("2", variant, METRIC, "s", LOWER)
        for rep in range(bench.params.pull_reps):
            # Rotate who goes first, so drift in the machine's load is shared.
            order = [DIRECT, *MIRRORS]
            order = order[rep % len(order):] + order[: rep % len(order)]
            for name in order:
                if name == DIRECT:
                    figure.add(DIRECT, _pull(bench, bench.upstream_url(variant), "pull-direct"))
                    continue
                with bench.running(name, variant, label=f"w2-{variant}") as system:
                    with CpuMeter(system.pids()) as cpu:
                        elapsed = _pull(bench, system.url, f"pull-{name}")
                    figure.add(name, elapsed, cores=cpu.cores)
            bench.say(
                f"w2 {variant}: rep {rep + 1}: "
                + ", ".join(f"{s} {v[-1]:.2f}s" for s, v in figure.samples.items())
            )


def targets(results: Results) -> list[Target]:
    found = []
    for variant in (LOOPBACK, THROTTLED):
        figure = results.find("2", variant, METRIC)
        found.append(
            Target("2", variant, "cold pull: mirrorproxy / direct <= 1.10",
                   figure.ratio(DIRECT, MIRRORPROXY), 1.10, "<=")
        )
    return found
