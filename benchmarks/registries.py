"""The reference registry (Debian ``docker-registry``, distribution 2.8) in
its two roles here: the upstream, and peer 1, the same binary in proxy mode.

It owns their config files and processes. The upstream is returned as the
harness's ``UpstreamRegistry``, whose access-log reader counts what each
system asked upstream for. The upstream here serves anonymously (no token
auth): see BENCHMARKS.rst for why.
"""

from __future__ import annotations

import json
from pathlib import Path

from attrs import define

from tests.integration.harness.client import request
from tests.integration.harness.processes import Process, free_port
from tests.integration.harness.registry import UpstreamRegistry

START_TIMEOUT = 30.0


def _answers(url: str) -> bool:
    try:
        return request(f"{url}/v2/", timeout=2).status == 200
    except OSError:
        return False


def _start(binary: str, name: str, directory: Path, extra: dict[str, object]) -> tuple[Process, int]:
    """Write a config (filesystem storage under ``directory``, listening on a
    free port), start ``docker-registry serve``, wait for ``GET /v2/``."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "storage")},
            # As Debian's default config has it.
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "benchmark"},
        **extra,
    }
    config_path = directory / "config.yml"
    # JSON is YAML.
    config_path.write_text(json.dumps(config, indent=2))
    process = Process.start(
        name,
        [binary, "serve", str(config_path)],
        directory / "registry.log",
        stdout_path=directory / "access.log",
    )
    try:
        process.wait_until(lambda: _answers(f"http://127.0.0.1:{port}"), START_TIMEOUT, "200 from GET /v2/")
    except BaseException:
        process.stop()
        raise
    return process, port


def start_upstream(binary: str, directory: Path) -> UpstreamRegistry:
    """The upstream: an anonymous registry with filesystem storage."""
    process, port = _start(binary, "upstream", directory, {})
    return UpstreamRegistry(directory, process, port, directory / "access.log")


@define(eq=False)
class DistributionProxy:
    """Peer 1: ``docker-registry`` with ``proxy: remoteurl:`` and an empty store."""

    process: Process
    port: int

    name = "distribution"

    @classmethod
    def start(cls, binary: str, upstream_url: str, directory: Path, tag_ttl: float) -> DistributionProxy:
        # The proxy has no tag TTL: it asks upstream on every tag request.
        del tag_ttl
        process, port = _start(
            binary, "distribution-proxy", directory, {"proxy": {"remoteurl": upstream_url}}
        )
        return cls(process, port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.process.pid]

    def alive(self) -> bool:
        return self.process.running()

    def stop(self) -> None:
        self.process.stop()
