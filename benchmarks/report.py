"""The table people read: every figure's median per system and mirrorproxy's
ratio to each peer, then the targets; as reStructuredText simple tables,
which read as well in a terminal as in BENCHMARKS.rst."""

from __future__ import annotations

from collections.abc import Sequence

from .results import HIGHER, Results
from .systems import DIRECT, DISTRIBUTION, MIRRORS, NGINX


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def simple_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    rule = "  ".join("=" * w for w in widths)
    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


def figures_table(results: Results) -> str:
    header = ["#", "link", "metric", "unit", "better", DIRECT, *MIRRORS,
              "mp/distribution", "mp/nginx"]
    rows = []
    for f in results.figures:
        rows.append([
            f.workload, f.variant, f.metric, f.unit, "higher" if f.better == HIGHER else "lower",
            number(f.value(DIRECT)),
            *(number(f.value(s)) for s in MIRRORS),
            ratio(f.ratio(DISTRIBUTION)), ratio(f.ratio(NGINX)),
        ])
    return simple_table(header, rows)


def targets_table(results: Results) -> str:
    header = ["#", "link", "target", "measured", "met"]
    rows = [
        [t.workload, t.variant, t.text,
         number(t.measured) + (f" ({t.detail})" if t.detail else ""),
         "yes" if t.met else "NO"]
        for t in results.targets
    ]
    return simple_table(header, rows)


def render(results: Results) -> str:
    return figures_table(results) + "\n\n" + targets_table(results) + "\n"
