"""The run's figures and targets: medians of samples, mirrorproxy's ratio to
each peer, and the JSON file.

A `Figure` is one measured quantity of one workload (and link variant) for
every system, with all its samples; its value is their median. A `Target` is
one of issue 6's checks, evaluated on the medians.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attrs import asdict, define, field, frozen

from .systems import MIRRORPROXY, PEERS

HIGHER, LOWER = "higher", "lower"
LOOPBACK, THROTTLED = "loopback", "throttled"


@define
class Figure:
    """One metric of one workload for every system, as samples."""

    workload: str  # "1" .. "6"
    variant: str  # LOOPBACK or THROTTLED
    metric: str  # what was measured, for people
    unit: str
    better: str  # HIGHER or LOWER
    samples: dict[str, list[float]] = field(factory=dict)
    # What else was seen per system (CPU use, errors, request breakdowns).
    notes: dict[str, dict[str, Any]] = field(factory=dict)

    def add(self, system: str, value: float, **notes: Any) -> None:
        self.samples.setdefault(system, []).append(value)
        if notes:
            seen = self.notes.setdefault(system, {})
            for key, note in notes.items():
                seen.setdefault(key, []).append(note)

    def value(self, system: str) -> float | None:
        values = self.samples.get(system)
        return statistics.median(values) if values else None

    def ratio(self, peer: str, system: str = MIRRORPROXY) -> float | None:
        """``system``'s median over ``peer``'s (raw, whatever the direction)."""
        ours, theirs = self.value(system), self.value(peer)
        if ours is None or theirs is None:
            return None
        if theirs == 0:
            return None if ours else 1.0
        return ours / theirs

    def advantage(self, peer: str) -> float | None:
        """How many times better mirrorproxy is than ``peer`` (>1: better),
        or None where a zero makes the ratio meaningless."""
        ratio = self.ratio(peer)
        if ratio is None or ratio == 0:
            return None
        return ratio if self.better == HIGHER else 1 / ratio

    def key(self) -> tuple[str, str, str]:
        return (self.workload, self.variant, self.metric)


@frozen
class Target:
    """One of issue 6's targets, checked against this run's medians."""

    workload: str
    variant: str
    text: str
    measured: float | None
    limit: float
    op: str  # "<=" or ">="
    detail: str = ""

    @property
    def met(self) -> bool:
        if self.measured is None:
            return False
        return self.measured <= self.limit if self.op == "<=" else self.measured >= self.limit


@define
class Results:
    meta: dict[str, Any]
    figures: list[Figure] = field(factory=list)
    targets: list[Target] = field(factory=list)

    def figure(self, workload: str, variant: str, metric: str, unit: str, better: str) -> Figure:
        for existing in self.figures:
            if existing.key() == (workload, variant, metric):
                return existing
        created = Figure(workload, variant, metric, unit, better)
        self.figures.append(created)
        return created

    def find(self, workload: str, variant: str, metric: str) -> Figure:
        for existing in self.figures:
            if existing.key() == (workload, variant, metric):
                return existing
        raise KeyError((workload, variant, metric))

    def check(self, targets: Iterable[Target]) -> None:
        self.targets.extend(targets)

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "figures": [
                {
                    **asdict(f),
                    "median": {s: f.value(s) for s in f.samples},
                    "ratio": {p: f.ratio(p) for p in PEERS},
                }
                for f in self.figures
            ],
            "targets": [{**asdict(t), "met": t.met} for t in self.targets],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        """Results as written by `to_json` (to draw or print them again)."""
        figures = [
            Figure(f["workload"], f["variant"], f["metric"], f["unit"], f["better"],
                   f["samples"], f["notes"])
            for f in data["figures"]
        ]
        fields = ("workload", "variant", "text", "measured", "limit", "op", "detail")
        targets = [Target(**{k: t[k] for k in fields}) for t in data["targets"]]
        return cls(data["meta"], figures, targets)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
