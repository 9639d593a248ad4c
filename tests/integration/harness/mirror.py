"""The system under test: ``twistd -n mirrorproxy`` as a real subprocess.

It owns the mirror's command line, its log file and its readiness check.
Extra options (``--htpasswd``, ``--allow``, ``--config``) go on the command
line as given; with `ServerFiles` the mirror listens with TLS (``ssl:``).
Upstream credentials, when a test has them, travel in the environment, never
on the command line.

A guarded mirror answers ``GET /v2/`` with 401 or 403 and a TLS one needs a
verifying client, so the readiness check connects as `connection` does and
accepts any answer that carries ``Docker-Distribution-API-Version``: the
mirror's Site is up, whatever it decided about us.
"""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from attrs import define

from ...testca import ServerFiles
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
    tls: ServerFiles | None = None
    killed: bool = False

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @classmethod
    def start(
        cls,
        upstream_url: str,
        cache_dir: Path,
        log_path: Path,
        credentials: tuple[str, str] | None = None,
        tag_ttl: int = 300,
        *,
        options: Sequence[str] = (),
        tls: ServerFiles | None = None,
        port: int | None = None,
        command_prefix: Sequence[str] = (),
        answers_us: bool = True,
    ) -> Mirror:
        """Start the mirror on a free port of 127.0.0.1 with ``options``
        (e.g. ``--htpasswd FILE``) after its own, over TLS with ``tls``'s
        files if given; wait until it answers.

        ``command_prefix`` runs twistd through another command (``ip netns
        exec NAME``: see harness.netns); ``port`` is then the port it listens
        on there, which this process must reach as 127.0.0.1:``port`` too (a
        bridge out of the namespace).  ``answers_us=False``: the mirror is
        not expected to let this host in (``--allow`` elsewhere)."""
        port = port or free_port()
        if tls is None:
            listen = f"tcp:{port}:interface=127.0.0.1"
        else:
            # Twisted's endpoint syntax: ':' and '=' inside values would need
            # escaping; the test's temporary paths have neither.
            listen = (
                f"ssl:{port}:interface=127.0.0.1"
                f":privateKey={tls.key}:certKey={tls.certificate}"
            )
        argv = [
            *command_prefix,
            twistd(),
            "-n",
            "--pidfile=",
            "mirrorproxy",
            "--listen",
            listen,
            "--upstream",
            upstream_url,
            "--cache-dir",
            str(cache_dir),
            "--tag-ttl",
            str(tag_ttl),
            *options,
        ]
        env = child_env()
        if credentials is not None:
            env["MIRRORPROXY_UPSTREAM_USERNAME"], env["MIRRORPROXY_UPSTREAM_PASSWORD"] = credentials
        cache_dir.mkdir(parents=True, exist_ok=True)
        # twistd may leave files (twistd.log, a pid file) in its working
        # directory; keep them out of the source tree.
        process = Process.start("mirror", argv, log_path, env=env, cwd=log_path.parent)
        mirror = cls(process, port, cache_dir, tls)
        ready = mirror._answers if answers_us else mirror._refuses_us
        try:
            process.wait_until(ready, START_TIMEOUT, f"an answer from {mirror.url}/v2/")
        except BaseException:
            process.stop()
            raise
        return mirror

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        """A connection to the mirror; over TLS, one that verifies it."""
        if self.tls is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        context = ssl.create_default_context(cafile=str(self.tls.ca_certificate))
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)

    def get(
        self, path: str, credentials: tuple[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[int, dict[str, str], bytes]:
        """One GET: status, headers (names lower case) and body."""
        headers = {}
        if credentials is not None:
            pair = ":".join(credentials).encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        connection = self.connection(timeout)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            connection.close()

    def _answers(self) -> bool:
        try:
            _, headers, _ = self.get("/v2/", timeout=2)
        except (OSError, http.client.HTTPException):
            return False
        return headers.get("docker-distribution-api-version") == "registry/2.0"

    def _refuses_us(self) -> bool:
        """Whether the mirror is up and closes this host's connections at
        accept (its --allow leaves 127.0.0.1 out): connected, then an
        end of stream before anything was sent."""
        if "MirrorSite starting on" not in self.process.tail(400):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                return connection.recv(1) == b""
        except ConnectionResetError:
            return True
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


# start_mirror(cache_dir=..., upstream_url=..., credentials=..., options=..., tls=...) -> Mirror
MirrorFactory = Callable[..., Mirror]
