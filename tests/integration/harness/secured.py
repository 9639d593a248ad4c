"""``twistd -n mirrorproxy`` with the options that restrict or secure it:
``--htpasswd``, ``--allow`` and a TLS (``ssl:``) listener.

`mirror.Mirror` starts the plain mirror and waits for ``GET /v2/`` to answer
200; a guarded mirror answers 401 and a TLS one needs a verifying client, so
this module owns those command lines and that readiness check.  The check
accepts any answer that carries ``Docker-Distribution-API-Version``: the
mirror's Site is up, whatever it decided about us.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from collections.abc import Sequence
from pathlib import Path

from attrs import define

from .mirror import START_TIMEOUT, twistd
from .pki import ServerFiles
from .processes import Process, child_env, free_port


@define(eq=False)
class SecuredMirror:
    process: Process
    port: int
    cache_dir: Path
    tls: ServerFiles | None

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
        options: Sequence[str] = (),
        tls: ServerFiles | None = None,
    ) -> SecuredMirror:
        """Start the mirror with ``options`` (e.g. ``--htpasswd FILE``) on a
        free port of 127.0.0.1, over TLS with ``tls``'s files if given."""
        port = free_port()
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
            *options,
        ]
        cache_dir.mkdir(parents=True, exist_ok=True)
        process = Process.start("mirror", argv, log_path, env=child_env(), cwd=log_path.parent)
        mirror = cls(process, port, cache_dir, tls)
        try:
            process.wait_until(mirror._answers, START_TIMEOUT, f"an answer from {mirror.url}/v2/")
        except BaseException:
            process.stop()
            raise
        return mirror

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        context = ssl.create_default_context(cafile=str(self.tls.ca_certificate))
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)

    def get(
        self, path: str, credentials: tuple[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One GET: status, headers (names lower case) and body."""
        headers = {}
        if credentials is not None:
            pair = ":".join(credentials).encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        connection = self.connection()
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            connection.close()

    def _answers(self) -> bool:
        try:
            _, headers, _ = self.get("/v2/")
        except (OSError, http.client.HTTPException):
            return False
        return headers.get("docker-distribution-api-version") == "registry/2.0"

    def stop(self) -> None:
        status = self.process.stop()
        if status not in (0, -15):
            raise RuntimeError(f"mirror exited with {status}; log tail:\n{self.process.tail()}")
