"""The system under test: ``twistd -n mirrorproxy`` as a real subprocess.

It owns the mirror's command line, its log file and its readiness check
(``GET /v2/`` answering 200). Upstream credentials, when a test has them,
travel in the environment, never on the command line.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from attrs import define

from .client import request
from .processes import Process, child_env, free_port

START_TIMEOUT = 30.0


def twistd() -> str:
    """The twistd of the Python running the tests: the one that sees the
    installed mirrorproxy plugin."""
    return os.path.join(os.path.dirname(sys.executable), "twistd")


@define(eq=False)
class Mirror:
    process: Process
    port: int
    cache_dir: Path
    killed: bool = False

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @classmethod
    def start(
        cls,
        upstream_url: str,
        cache_dir: Path,
        log_path: Path,
        credentials: tuple[str, str] | None = None,
        tag_ttl: int = 300,
    ) -> Mirror:
        port = free_port()
        argv = [
            twistd(),
            "-n",
            "--pidfile=",
            "mirrorproxy",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--upstream",
            upstream_url,
            "--cache-dir",
            str(cache_dir),
            "--tag-ttl",
            str(tag_ttl),
        ]
        env = child_env()
        if credentials is not None:
            env["MIRRORPROXY_UPSTREAM_USERNAME"], env["MIRRORPROXY_UPSTREAM_PASSWORD"] = credentials
        cache_dir.mkdir(parents=True, exist_ok=True)
        # twistd may leave files (twistd.log, a pid file) in its working
        # directory; keep them out of the source tree.
        process = Process.start("mirror", argv, log_path, env=env, cwd=log_path.parent)
        mirror = cls(process, port, cache_dir)
        try:
            process.wait_until(mirror._answers, START_TIMEOUT, f"200 from GET {mirror.url}/v2/")
        except BaseException:
            process.stop()
            raise
        return mirror

    def _answers(self) -> bool:
        try:
            return request(f"{self.url}/v2/", timeout=2).status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.stop()
        self.killed = True

    def stop(self) -> None:
        """Stop the mirror; a clean shutdown must not take long or fail."""
        if self.killed:
            return
        status = self.process.stop()
        if status not in (0, -15):
            raise RuntimeError(f"mirror exited with {status}; log tail:\n{self.process.tail()}")


# start_mirror(cache_dir=..., upstream_url=..., credentials=...) -> Mirror
MirrorFactory = Callable[..., Mirror]
