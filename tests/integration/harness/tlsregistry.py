"""The reference registry over TLS, with a certificate from a test CA.

It stands in for a private upstream (or for Docker Hub as a TLS-intercepting
corporate proxy re-signs it): ``docker-registry serve`` with
``http.tls.certificate``/``key`` for the name ``localhost`` only, the same
token auth as the plain upstream, and the plain upstream's storage directory,
so that whatever the Publisher pushes there can be pulled here over TLS.
Only this process reads that storage while tests run against it; the plain
registry writes it, and distribution keeps no cache in front of the
filesystem unless configured to.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from attrs import define

from ...testca import TestCA
from .processes import Process
from .registry import UpstreamRegistry
from .tokens import ISSUER, SERVICE, TokenIssuer

# distribution logs "listening on 127.0.0.1:PORT, tls" once it serves.
_LISTENING = re.compile(r"listening on (?:\[::\]|[\d.]+):(?P<port>\d+)")
#: The only name the registry's certificate is valid for.
TLS_NAME = "localhost"


@define(eq=False)
class TLSRegistry:
    """A running TLS registry; `access` reads its access log."""

    access: UpstreamRegistry
    ca_bundle: Path

    @property
    def port(self) -> int:
        return self.access.port

    @property
    def url(self) -> str:
        return f"https://{TLS_NAME}:{self.port}"

    @property
    def url_by_address(self) -> str:
        """The same registry by an address its certificate does not name."""
        return f"https://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        binary: str,
        issuer: TokenIssuer,
        storage_of: UpstreamRegistry,
        ca: TestCA,
        directory: Path,
    ) -> TLSRegistry:
        directory.mkdir(parents=True, exist_ok=True)
        certificate, key = ca.issue([TLS_NAME]).write(directory, "registry")
        ca_bundle = ca.write_bundle(directory / "test-ca.pem")
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(storage_of.directory / "storage")},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": "127.0.0.1:0",
                "secret": "integration-tests",
                "tls": {"certificate": str(certificate), "key": str(key)},
            },
            "auth": {
                "token": {
                    "realm": issuer.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(issuer.write_root_bundle(directory / "issuer.pem")),
                }
            },
        }
        config_path = directory / "config.yml"
        config_path.write_text(json.dumps(config, indent=2))
        access_log = directory / "access.log"
        process = Process.start(
            "docker-registry (TLS)",
            [binary, "serve", str(config_path)],
            directory / "registry.log",
            stdout_path=access_log,
        )
        port: list[int] = []

        def listening() -> bool:
            match = _LISTENING.search(process.log_path.read_text(errors="replace"))
            if match:
                port.append(int(match["port"]))
            return bool(match)

        try:
            process.wait_until(listening, 30, "'listening on' in its log")
        except BaseException:
            process.stop()
            raise
        return cls(UpstreamRegistry(directory, process, port[0], access_log), ca_bundle)

    def stop(self) -> None:
        self.access.stop()
