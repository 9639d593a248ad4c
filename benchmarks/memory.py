"""What a system's processes cost, read from /proc: peak resident memory
(VmHWM, the kernel's own high-water mark, so no sampling can miss a peak)
and CPU time, over a process and its descendants."""

from __future__ import annotations

import os
from collections.abc import Iterable

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (bounded: a tree of at most 256)."""
    tree, frontier = [pid], [pid]
    while frontier and len(tree) < 256:
        children = [c for p in frontier for c in _children(p)]
        tree += children
        frontier = children
    return tree


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss(pids: Iterable[int]) -> int:
    """Sum of the processes' peak resident set sizes, in bytes.

    For several processes (nginx's master and workers) the peaks may not
    have coincided, so the sum is an upper bound.
    """
    return sum(_status_kib(pid, "VmHWM") for pid in pids) * 1024


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU time the processes (all their threads) used so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS
