"""The PNG: how many times better mirrorproxy does than each peer, for every
figure, on a log scale (right of 1: mirrorproxy better, whichever way the
metric points)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .results import Figure, Results
from .systems import DISTRIBUTION, MIRRORPROXY, NGINX

CAP = 1000.0
COLOURS = {DISTRIBUTION: "#4878a8", NGINX: "#e0803a"}


def _bar(figure: Figure, peer: str) -> tuple[float, str]:
    """The bar's length and its label."""
    advantage = figure.advantage(peer)
    ours, theirs = figure.value(MIRRORPROXY), figure.value(peer)
    if advantage is None:
        if ours == 0 and theirs:
            return CAP, f"0 vs {theirs:.0f}"
        return 1.0, "n/a"
    clipped = min(max(advantage, 1 / CAP), CAP)
    return clipped, f"{advantage:.2f}x" if advantage < 100 else f"{advantage:.0f}x"


def draw(results: Results, path: Path, title: str) -> None:
    # Figures with no peer in them (workload 7's setups) have no bar to draw.
    figures = [f for f in results.figures if any(p in f.samples for p in COLOURS)]
    height = 1.2 + 0.42 * len(figures)
    fig, ax = plt.subplots(figsize=(9, height), dpi=80)
    labels = []
    for row, figure in enumerate(figures):
        labels.append(f"{figure.workload} {figure.variant[:5]}: {figure.metric}")
        for offset, peer in ((-0.2, DISTRIBUTION), (0.2, NGINX)):
            length, text = _bar(figure, peer)
            y = row + offset
            # Bars grow from 1 (a tie): right when mirrorproxy is better.
            ax.barh(y, length - 1, height=0.38, left=1, color=COLOURS[peer],
                    label=f"vs {peer}" if row == 0 else None)
            if length >= 1:
                ax.text(length * 1.08, y, text, va="center", ha="left", fontsize=7)
            else:
                ax.text(length / 1.08, y, text, va="center", ha="right", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(1 / 300, CAP * 8)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(figures)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mirrorproxy's advantage over the peer (x; right of 1 = mirrorproxy better)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="major", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
