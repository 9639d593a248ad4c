"""The table people read: every figure's median per system and mirrorproxy's
ratio to each peer, then the targets; as reStructuredText simple tables,
which read as well in a terminal as in BENCHMARKS.rst. Figures comparing
something else than the peers (mirrorproxy's own setups: workload 7) get a
table of their own, each with the systems it compares."""

from __future__ import annotations

from collections.abc import Sequence

from .results import HIGHER, Figure, Results
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


def against_peers(figure: Figure) -> bool:
    return set(figure.samples) <= {DIRECT, *MIRRORS}


def figures_table(results: Results) -> str:
    header = ["#", "link", "metric", "unit", "better", DIRECT, *MIRRORS,
              "mp/distribution", "mp/nginx"]
    rows = []
    for f in filter(against_peers, results.figures):
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


def setups_table(figures: Sequence[Figure]) -> str:
    """Figures with their own systems: each row names the two it compares."""
    header = ["#", "link", "metric", "unit", "better", "A", "value A", "B", "value B", "B/A"]
    rows = []
    for f in figures:
        systems = list(f.samples) + ["-"] * (2 - len(f.samples))
        a, b = systems[:2]
        ratio_ = f.ratio(a, b) if a in f.samples and b in f.samples else None
        rows.append([f.workload, f.variant, f.metric, f.unit, "higher" if f.better == HIGHER else "lower",
                     a, number(f.value(a)), b, number(f.value(b)), ratio(ratio_)])
    return simple_table(header, rows)


def render(results: Results) -> str:
    tables = [figures_table(results)]
    own = [f for f in results.figures if not against_peers(f)]
    if own:
        tables.append(setups_table(own))
    return "\n\n".join([*tables, targets_table(results)]) + "\n"
