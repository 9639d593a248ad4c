"""Child processes: start with output to a log file, wait for readiness with
a deadline, stop cleanly (terminate, then kill), and show a log's tail.

Every wait here polls a condition; nothing sleeps in place of knowing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from attrs import define, field

POLL_INTERVAL = 0.05


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1.

    Only for programs that cannot report the port they bound to 0 (the
    mirror's command line names its port). Another process could take the
    port between now and the program's bind; the kernel picks ephemeral ports
    at random, so that is unlikely, and it shows as a failed start, never as
    a wrong result.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


@define(eq=False)
class Process:
    """One child process whose stdout and stderr go to ``log_path``."""

    name: str
    log_path: Path
    _popen: subprocess.Popen[bytes] = field(repr=False)

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout_path: Path | None = None,
    ) -> Process:
        """Start ``argv``; stdout goes to ``stdout_path`` if given, else to the log.

        The child gets its own session so that a Ctrl-C at the terminal
        reaches pytest only, and pytest's teardown stops the child in order.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log, open(stdout_path or log_path, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        return cls(name, log_path, popen)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def running(self) -> bool:
        return self._popen.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise RuntimeError(
                    f"{self.name} exited with {self._popen.returncode} before {what}; "
                    f"log tail:\n{self.tail()}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: no {what} within {timeout}s; log tail:\n{self.tail()}"
                )
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit status."""
        if self.running():
            self._popen.terminate()
            try:
                return self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
        return self._popen.wait(timeout)

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


def child_env(**overrides: str) -> dict[str, str]:
    """Our environment with proxies removed, plus ``overrides``.

    Everything the tests start talks to 127.0.0.1 only; an inherited proxy
    setting must not route that traffic elsewhere.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    env.update(overrides)
    return env
