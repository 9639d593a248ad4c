"""What the run ran on and with, described generically (no host names or
paths): cores, memory, OS, CPU model, tool versions, mirrorproxy's commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .systems import Tools


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as e:
        return f"unavailable ({e.strerror})"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def describe(tools: Tools, repo: Path) -> dict[str, Any]:
    commit = _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--", "mirrorproxy"],
        capture_output=True, text=True, timeout=30, check=False,
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu": _cpu_model(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tools": {
            "docker-registry": _first_line([tools.registry, "--version"]),
            "nginx": _first_line([tools.nginx, "-v"]),
            "skopeo": _first_line([tools.skopeo, "--version"]),
            "wrk": _first_line([tools.wrk, "-v"]),
            "redis-server": _first_line([tools.redis, "--version"]),
            "seaweedfs": _first_line([tools.weed, "version"]),
        },
        "mirrorproxy_commit": commit + (" (with uncommitted changes in mirrorproxy/)" if dirty else ""),
    }
