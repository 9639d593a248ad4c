"""The benchmark (``python -m benchmarks.run``) in its smoke mode: every
workload against every system at tiny sizes, so that it cannot rot. Timings
at these sizes mean nothing and are not checked; the full run checks the
targets. What is checked is that the run is whole and sane, and that the
one count that does not depend on timing holds: in the thundering herd,
mirrorproxy asks upstream for the blob once, and so do three nodes sharing
a bucket (workload 7)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.run import WORKLOADS, run
from benchmarks.systems import DIRECT, MIRRORPROXY, MIRRORS, Tools
from benchmarks.workloads import w7_cluster
from benchmarks.workloads.w3_herd import GETS

from .harness.tools import require_tool

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_smoke_run_measures_every_workload_on_every_system(tmp_path: Path) -> None:
    tools = Tools.find(require_tool)
    out = tmp_path / "results.json"
    results = run(
        ["--smoke", "--out", str(out), "--work-dir", str(tmp_path / "work")], tools=tools
    )

    written = json.loads(out.read_text())
    assert written["meta"]["mode"] == "smoke"
    figures = written["figures"]
    assert {f["workload"] for f in figures} == set(WORKLOADS)
    for figure in figures:
        expected = {*MIRRORS, DIRECT} if figure["workload"] == "2" else set(MIRRORS)
        if figure["workload"] == "7":
            expected = set(w7_cluster.systems_of(figure["metric"]))
            if figure["metric"].startswith("cluster herd: TTFB on the other nodes"):
                expected = {w7_cluster.NODES}
        assert set(figure["median"]) == expected, figure["metric"]
        for system, value in figure["median"].items():
            assert value is not None and math.isfinite(value) and value >= 0, (figure, system)

    for variant in ("loopback", "throttled"):
        assert results.find("3", variant, GETS).samples[MIRRORPROXY] == [1], variant
    # Workload 7's smoke run is over loopback only (its processes take time to start).
    assert results.find("7", "loopback", w7_cluster.GETS).samples == {
        w7_cluster.ONE_NODE: [1], w7_cluster.NODES: [1]
    }

    assert written["targets"], "no target was checked"
    assert all(t["measured"] is not None for t in written["targets"]), written["targets"]

    chart = out.with_suffix(".png")
    assert chart.read_bytes().startswith(PNG_MAGIC)
    assert chart.stat().st_size < 200 * 1024
