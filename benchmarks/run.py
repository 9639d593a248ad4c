"""``python -m benchmarks.run``: the whole benchmark, one command.

Starts the upstream and seeds it, runs the chosen workloads against every
system, prints the table, and writes the JSON results and the PNG chart.
Everything runs on 127.0.0.1 in a temporary directory that is removed at
the end; every process it starts is stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from attrs import asdict

from tests.integration.harness.skopeo import Skopeo

from . import chart, machine, report
from .content import seed
from .context import Bench, SystemKilled
from .params import FULL, SMOKE
from .registries import start_upstream
from .results import Results
from .systems import Starter, Tools
from .workloads import w1_warm, w2_pull, w3_herd, w4_manifests, w5_memory, w6_economy, w7_cluster

WORKLOADS: dict[str, ModuleType] = {
    "1": w1_warm, "2": w2_pull, "3": w3_herd, "4": w4_manifests, "5": w5_memory, "6": w6_economy,
    "7": w7_cluster,
}
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every workload and system in seconds")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results-full.json, or -smoke)")
    parser.add_argument("--chart", type=Path, default=None, help="PNG chart (default: --out with .png)")
    parser.add_argument("--only", default="", help="comma-separated workloads to run, e.g. 1,3")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run mirrorproxy under py-spy, writing raw profiles here (figures then skewed)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where caches go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    parser.add_argument("--render", type=Path, default=None,
                        help="run nothing: print the table of this results JSON and draw its chart")
    return parser.parse_args(argv)


def run(
    argv: list[str] | None = None, tools: Tools | None = None
) -> Results:
    args = parse_args(argv)
    if args.render is not None:
        return render_only(args.render, args.chart or args.render.with_suffix(".png"))
    params = SMOKE if args.smoke else FULL
    out = args.out or REPO / "benchmarks" / f"results-{params.mode}.json"
    chart_path = args.chart or out.with_suffix(".png")
    chosen = [w.strip() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    tools = tools or Tools.find()
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="mirrorproxy-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    started, wall = datetime.datetime.now(datetime.UTC), time.monotonic()
    results = Results(meta={
        "mode": params.mode,
        "command": "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine.describe(tools, REPO),
        "params": asdict(params),
        "upstream_auth": "none (anonymous upstream; see BENCHMARKS.rst)",
        "workloads": chosen,
        "profiled": args.profile is not None,
    })
    upstream = start_upstream(tools.registry, work_dir / "upstream")
    bench: Bench | None = None
    try:
        skopeo = Skopeo.prepare(tools.skopeo, work_dir / "skopeo")
        starter = Starter(tools, work_dir / "systems", args.profile)
        print(f"seeding the upstream ({params.mode} sizes)", file=sys.stderr, flush=True)
        content = seed(upstream, skopeo, work_dir / "publish", params)
        bench = Bench(params, tools, upstream, skopeo, content, starter, work_dir)
        for key in chosen:
            run_workload(bench, results, key)
            results.meta["duration_s"] = round(time.monotonic() - wall)
            results.write(out)
        for key in chosen:
            results.check(WORKLOADS[key].targets(results))
    finally:
        if bench is not None:
            bench.close()
        upstream.stop()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    results.meta["duration_s"] = round(time.monotonic() - wall)
    results.write(out)
    chart.draw(results, chart_path, f"mirrorproxy vs peers, {params.mode} run, {started:%Y-%m-%d}")
    print(report.render(results))
    print(f"results: {out}\nchart: {chart_path}", file=sys.stderr)
    return results


def render_only(path: Path, chart_path: Path) -> Results:
    results = Results.from_json(json.loads(path.read_text()))
    meta = results.meta
    chart.draw(results, chart_path, f"mirrorproxy vs peers, {meta['mode']} run, {meta['started'][:10]}")
    print(report.render(results))
    return results


def run_workload(bench: Bench, results: Results, key: str, attempts: int = 3) -> None:
    """Run one workload; start it over (its figures dropped) if a system was
    killed from outside while it ran."""
    for attempt in range(1, attempts + 1):
        bench.say(f"workload {key}")
        try:
            WORKLOADS[key].run(bench, results)
            return
        except SystemKilled as e:
            results.figures = [f for f in results.figures if f.workload != key]
            results.meta.setdefault("restarted", []).append(f"workload {key}: {e}")
            bench.say(f"workload {key}: {e}; starting it over ({attempt}/{attempts})")
            if attempt == attempts:
                raise


def main() -> None:
    run()


if __name__ == "__main__":
    main()
