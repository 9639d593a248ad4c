"""The upstream: distribution's reference registry (``docker-registry serve``)
behind token auth from our issuer, standing in for registry-1.docker.io (or,
with a ``service`` name of its own, for another registry: ghcr.io, quay.io).

It owns the registry's config, its process, and the reading of its access
log, which is how tests count what the mirror asked upstream for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from attrs import define, frozen

from .processes import Process
from .tokens import ISSUER, SERVICE, TokenIssuer

# gorilla/handlers' combined log format, which distribution writes to stdout
# for every request, e.g.:
# 127.0.0.1 - - [28/Nov/2026:07:40:01 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "skopeo/1.9.3"
_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<target>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "(?P<agent>[^"]*)"'
)
_LISTENING = re.compile(r"listening on (?:\[::\]|[\d.]+):(?P<port>\d+)")


@frozen
class AccessLogEntry:
    method: str
    path: str
    query: str
    status: int
    user_agent: str


@frozen
class LogMark:
    """A position in the access log; count what happened after it."""

    offset: int


@define(eq=False)
class UpstreamRegistry:
    """A running registry on 127.0.0.1 with token auth and filesystem storage."""

    directory: Path
    process: Process
    port: int
    access_log: Path
    # The token service name its challenges carry and its tokens must be for.
    service: str = SERVICE

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        """The root of the registry's filesystem storage."""
        return self.directory / "storage"

    @classmethod
    def start(
        cls,
        binary: str,
        issuer: TokenIssuer,
        directory: Path,
        *,
        storage: Path | None = None,
        http: Mapping[str, object] | None = None,
        name: str = "docker-registry",
        service: str = SERVICE,
    ) -> UpstreamRegistry:
        """Write a config, start the registry on port 0, wait until it listens.

        ``storage`` is another registry's storage root to serve instead of
        its own; ``http`` adds to the config's ``http:`` (``tls:``, say);
        ``service`` is the token service name it challenges with and accepts
        tokens for only (a token for another registry's service is refused,
        as between real registries).
        """
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(storage or directory / "storage")},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": "127.0.0.1:0", "secret": "integration-tests", **(http or {})},
            "auth": {
                "token": {
                    "realm": issuer.realm,
                    "service": service,
                    "issuer": ISSUER,
                    "rootcertbundle": str(issuer.write_root_bundle(directory / "issuer.pem")),
                }
            },
        }
        config_path = directory / "config.yml"
        # JSON is YAML; no YAML library needed.
        config_path.write_text(json.dumps(config, indent=2))
        access_log = directory / "access.log"
        process = Process.start(
            name,
            [binary, "serve", str(config_path)],
            directory / "registry.log",
            stdout_path=access_log,
        )
        port: list[int] = []

        def listening() -> bool:
            # Port 0 avoids racing for a free port; the registry logs the
            # address it actually bound ("listening on 127.0.0.1:PORT", with
            # ", tls" after it when it serves TLS).
            match = _LISTENING.search(process.log_path.read_text(errors="replace"))
            if match:
                port.append(int(match["port"]))
            return bool(match)

        try:
            process.wait_until(listening, 30, "'listening on' in its log")
        except BaseException:
            process.stop()
            raise
        return cls(directory, process, port[0], access_log, service)

    def stop(self) -> None:
        self.process.stop()

    def blob_file(self, digest: str) -> Path:
        """Where the registry's filesystem storage keeps a blob's bytes."""
        algorithm, _, hex_digest = digest.partition(":")
        return (
            self.storage / "docker" / "registry" / "v2" / "blobs"
            / algorithm / hex_digest[:2] / hex_digest / "data"
        )

    def mark(self) -> LogMark:
        return LogMark(self.access_log.stat().st_size)

    def requests(self, since: LogMark | None = None) -> list[AccessLogEntry]:
        """Requests the registry has finished answering, oldest first.

        distribution logs a request after its handler returns and before
        net/http flushes the last bytes of the response, so every request
        whose response a client has completely read is already here.
        """
        with open(self.access_log, "rb") as log:
            log.seek(since.offset if since else 0)
            text = log.read().decode(errors="replace")
        entries = []
        for line in text.splitlines():
            match = _ACCESS_LINE.match(line)
            if match:
                path, _, query = match["target"].partition("?")
                entries.append(
                    AccessLogEntry(
                        match["method"], path, query, int(match["status"]), match["agent"]
                    )
                )
        return entries

    def count(self, method: str, path: str, since: LogMark | None = None) -> int:
        """How many ``method`` requests for exactly ``path`` (query ignored),
        whatever their answer."""
        return sum(1 for r in self.requests(since) if r.method == method and r.path == path)

    def fetches(self, path: str, since: LogMark | None = None) -> int:
        """How many GETs of ``path`` were answered with content (2xx).

        A client's first GET may meet a 401 challenge and be retried with a
        token; that challenge moves no content, so it is not a fetch.
        """
        return sum(
            1
            for r in self.requests(since)
            if r.method == "GET" and r.path == path and 200 <= r.status < 300
        )

    def blob_fetches(self, name: str, digest: str, since: LogMark | None = None) -> int:
        return self.fetches(f"/v2/{name}/blobs/{digest}", since)
