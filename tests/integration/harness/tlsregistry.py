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

from pathlib import Path

from attrs import define

from ...testca import TestCA
from .registry import UpstreamRegistry
from .tokens import TokenIssuer

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
        access = UpstreamRegistry.start(
            binary,
            issuer,
            directory,
            storage=storage_of.storage,
            http={"tls": {"certificate": str(certificate), "key": str(key)}},
            name="docker-registry (TLS)",
        )
        return cls(access, ca_bundle)

    def stop(self) -> None:
        self.access.stop()
