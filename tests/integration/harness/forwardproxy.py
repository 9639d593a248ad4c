"""A real forward proxy for the egress tests: Debian's ``tinyproxy``.

It owns tinyproxy's configuration (127.0.0.1 only, Basic authentication,
CONNECT to any port), its process, and the reading of its log, which is how
tests show what went through the proxy: one ``Request`` line per CONNECT
tunnel or absolute-form request.

tinyproxy 1.11 (Debian 12) answers a request without credentials with 407,
but one with wrong credentials with 401 (fixed upstream in 1.12, tinyproxy
issue #532); the tests accept either for a wrong password.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from attrs import define, frozen

from .processes import Process, free_port

START_TIMEOUT = 30.0
# tinyproxy's log line for every request it reads, e.g.
# CONNECT   Nov 28 08:00:51.000 [28525]: Request (file descriptor 5): CONNECT 127.0.0.1:443 HTTP/1.1
_REQUEST = re.compile(
    r"Request \(file descriptor \d+\): (?P<method>[A-Z]+) (?P<target>\S+) HTTP/1\.[01]$"
)


@frozen
class ProxiedRequest:
    method: str
    target: str  # host:port for CONNECT, the absolute URL otherwise


@frozen
class ProxyLogMark:
    offset: int


@define(eq=False)
class ForwardProxy:
    """tinyproxy on 127.0.0.1, demanding ``credentials``."""

    process: Process
    port: int
    credentials: tuple[str, str]
    log_path: Path

    @classmethod
    def start(cls, binary: str, directory: Path, credentials: tuple[str, str]) -> ForwardProxy:
        directory.mkdir(parents=True, exist_ok=True)
        # tinyproxy cannot bind port 0 and report it; see free_port's caveat.
        port = free_port()
        log_path = directory / "tinyproxy.log"
        user, password = credentials
        config = directory / "tinyproxy.conf"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "Listen 127.0.0.1",
                    "Timeout 60",
                    f'LogFile "{log_path}"',
                    # Connect level logs each request line, CONNECTs included.
                    "LogLevel Connect",
                    "MaxClients 50",
                    "Allow 127.0.0.1",
                    f"BasicAuth {user} {password}",
                    "DisableViaHeader Yes",
                    # No ConnectPort line: CONNECT to any port is allowed, and
                    # the registry under test listens on a random one.
                    "",
                ]
            )
        )
        config.chmod(0o600)
        # -d: stay in the foreground, so that stopping the process stops it.
        process = Process.start(
            "tinyproxy", [binary, "-d", "-c", str(config)], directory / "tinyproxy.out"
        )
        proxy = cls(process, port, credentials, log_path)
        try:
            process.wait_until(proxy._accepts, START_TIMEOUT, f"a listener on port {port}")
        except BaseException:
            process.stop()
            raise
        return proxy

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def url(self, credentials: tuple[str, str] | None = None, *, anonymous: bool = False) -> str:
        """The proxy URL, with its credentials (or others, or none)."""
        if anonymous:
            return f"http://127.0.0.1:{self.port}"
        user, password = credentials or self.credentials
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop()

    def mark(self) -> ProxyLogMark:
        try:
            return ProxyLogMark(self.log_path.stat().st_size)
        except FileNotFoundError:
            return ProxyLogMark(0)

    def requests(self, since: ProxyLogMark | None = None) -> list[ProxiedRequest]:
        """Requests tinyproxy read, oldest first.

        tinyproxy logs a request line as soon as it has read it, before it
        connects upstream, so every request whose answer a client has seen
        is already here.
        """
        try:
            with open(self.log_path, "rb") as log:
                log.seek(since.offset if since else 0)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            match = _REQUEST.search(line)
            if match:
                found.append(ProxiedRequest(match["method"], match["target"]))
        return found

    def connects(self, since: ProxyLogMark | None = None) -> list[str]:
        """The host:port of every CONNECT tunnel asked for."""
        return [r.target for r in self.requests(since) if r.method == "CONNECT"]
