"""What every workload works with: the parameters, the tools, the upstream
and its content, the throttled link, and starting a system with an empty
cache for the length of a ``with`` block."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from attrs import define, field

from tests.integration.harness.registry import UpstreamRegistry
from tests.integration.harness.skopeo import Skopeo
from tests.integration.harness.slowlink import SlowLink

from .content import Content
from .memory import cpu_seconds
from .params import Params
from .results import LOOPBACK, THROTTLED
from .systems import Starter, System, Tools


class SystemKilled(Exception):
    """A system's process died during a measurement. The systems never exit
    by themselves, so something else on the machine stopped it (a broad
    ``pkill``, say): the measurement is void, not a finding."""


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


@define(eq=False)
class Bench:
    params: Params
    tools: Tools
    upstream: UpstreamRegistry
    skopeo: Skopeo
    content: Content
    starter: Starter
    work_dir: Path
    _link: SlowLink | None = field(default=None)
    _started: float = field(factory=time.monotonic)

    def say(self, message: str) -> None:
        """Progress, on stderr, so a long run shows where it is."""
        print(f"[{time.monotonic() - self._started:7.1f}s] {message}", file=sys.stderr, flush=True)

    def upstream_url(self, variant: str) -> str:
        """The upstream as the systems see it: directly, or through the
        shared throttled link (one link for the whole run)."""
        if variant == LOOPBACK:
            return self.upstream.url
        assert variant == THROTTLED, variant
        if self._link is None:
            self._link = SlowLink(self.upstream.port, self.params.throttle_rate, shared=True)
        return self._link.url

    @contextmanager
    def running(
        self, name: str, variant: str, tag_ttl: float | None = None, label: str = ""
    ) -> Iterator[System]:
        """A system with an empty cache, stopped (and its cache deleted) after."""
        system = self.starter.start(
            name, self.upstream_url(variant), self.params.tag_ttl if tag_ttl is None else tag_ttl, label
        )
        try:
            yield system
            if not system.alive():
                raise SystemKilled(f"{name} was stopped from outside during the measurement")
        except SystemKilled:
            raise
        except Exception as e:
            if not system.alive():
                raise SystemKilled(f"{name} died during the measurement: {e}") from e
            raise
        finally:
            try:
                self.starter.discard(system)
            except RuntimeError as e:
                # A system stopped from outside may not exit as we expect.
                self.say(f"stopping {name}: {e}")

    def close(self) -> None:
        if self._link is not None:
            self._link.stop()
            self._link = None


@define
class CpuMeter:
    """CPU seconds a system used between `start` and `stop`, per second of wall time."""

    pids: list[int]
    _cpu: float = 0.0
    _wall: float = 0.0

    def __enter__(self) -> Self:
        self._cpu, self._wall = cpu_seconds(self.pids), time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self._cpu = cpu_seconds(self.pids) - self._cpu
        self._wall = time.perf_counter() - self._wall

    @property
    def cores(self) -> float:
        """Average number of cores busy (1.0: one core, all the time)."""
        return round(self._cpu / self._wall, 2) if self._wall else 0.0
