"""A real redis-server for the coordination tests: its own port on
127.0.0.1, its own directory, nothing saved (no RDB, no AOF).

Faults on demand: `pause` (SIGSTOP: connections are accepted by the
kernel, nothing is answered, as a hung server), `resume`, `kill` (SIGKILL:
connections refused), and `restart` on the same port.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from urllib.parse import quote

from attrs import define, field

from .processes import Process, free_port

START_TIMEOUT = 10.0


def answers_ping(port: int, password: str | None = None) -> bool:
    """Whether a server on `port` answers PING (after AUTH, if given)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            if password is not None:
                secret = password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@define(eq=False)
class RedisServer:
    binary: str
    directory: Path
    port: int
    password: str | None = None
    _process: Process | None = field(default=None, init=False)
    _paused: bool = field(default=False, init=False)

    @classmethod
    def start(cls, binary: str, directory: Path, password: str | None = None) -> RedisServer:
        server = cls(binary, directory, free_port(), password)
        server._launch()
        return server

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def url(self, db: int = 0) -> str:
        userinfo = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{userinfo}127.0.0.1:{self.port}/{db}"

    def _launch(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self.password is not None:
            argv += ["--requirepass", self.password]
        self._process = Process.start("redis-server", argv, self.log_path)
        self._paused = False
        self._process.wait_until(
            lambda: answers_ping(self.port, self.password), START_TIMEOUT, "answer to PING"
        )

    def _running(self) -> Process:
        assert self._process is not None and self._process.running(), "redis-server is not running"
        return self._process

    def pause(self) -> None:
        os.kill(self._running().pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        os.kill(self._running().pid, signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        process = self._running()
        os.kill(process.pid, signal.SIGKILL)
        process.stop()
        self._paused = False

    def restart(self) -> None:
        """Start again on the same port, empty (nothing was saved)."""
        if self._process is not None and self._process.running():
            self.stop()
        self._launch()

    def stop(self) -> None:
        if self._process is None:
            return
        if self._paused and self._process.running():
            os.kill(self._process.pid, signal.SIGCONT)
            self._paused = False
        self._process.stop()
