"""A real redis-server for the coordination tests: its own port on
127.0.0.1 (plain, or TLS only), its own directory, nothing saved (no RDB,
no AOF).

Faults on demand: `pause` (SIGSTOP: connections are accepted by the
kernel, nothing is answered, as a hung server), `resume`, `kill` (SIGKILL:
connections refused), and `restart` on the same port.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
from pathlib import Path
from urllib.parse import quote

from attrs import define, field

from ...testca import ServerFiles
from .processes import Process, free_port

START_TIMEOUT = 10.0


def answers_ping(port: int, password: str | None = None, ca_file: Path | None = None) -> bool:
    """Whether a server on `port` answers PING (after AUTH, if given; over
    TLS, checked against `ca_file`, if given)."""
    try:
        with _connect(port, ca_file) as sock:
            if password is not None:
                secret = password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _connect(port: int, ca_file: Path | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    if ca_file is None:
        return sock
    return ssl.create_default_context(cafile=str(ca_file)).wrap_socket(
        sock, server_hostname="127.0.0.1"
    )


@define(eq=False)
class RedisServer:
    binary: str
    directory: Path
    port: int
    password: str | None = None
    # A certificate (for 127.0.0.1) and key: TLS only, on `port`.
    tls: ServerFiles | None = None
    _process: Process | None = field(default=None, init=False)
    _paused: bool = field(default=False, init=False)

    @classmethod
    def start(
        cls,
        binary: str,
        directory: Path,
        password: str | None = None,
        tls: ServerFiles | None = None,
    ) -> RedisServer:
        server = cls(binary, directory, free_port(), password, tls)
        server._launch()
        return server

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def url(self, db: int = 0) -> str:
        userinfo = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}/{db}"

    def _launch(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            listen = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.certificate),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca_certificate),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        argv = [
            self.binary,
            *listen,
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
            lambda: answers_ping(
                self.port, self.password, self.tls.ca_certificate if self.tls else None
            ),
            START_TIMEOUT,
            "answer to PING",
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
