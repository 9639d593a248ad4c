"""A throwaway certificate authority for TLS tests, unit and integration.

It owns an EC P-256 root and issues server certificates for given DNS names
and IP addresses, valid from an hour ago for a day: what a private registry
or a TLS-intercepting proxy would present, signed by a CA no platform trusts.
For a server started as a process (the mirror's ``ssl:`` listener) it also
writes the certificate, its key and the CA's certificate where that server
and its clients read them; for a server in memory (unit tests) it gives the
TLS connection creator.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from attrs import field, frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@frozen
class ServerIdentity:
    """A server's certificate and key, PEM."""

    certificate_pem: bytes
    key_pem: bytes = field(repr=False)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """``stem.crt`` and ``stem.key`` in ``directory``; their paths."""
        certificate = directory / f"{stem}.crt"
        key = directory / f"{stem}.key"
        certificate.write_bytes(self.certificate_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return certificate, key

    def server_tls(self) -> IOpenSSLServerConnectionCreator:
        """TLS for a server with this identity, for `TLSMemoryBIOFactory`.

        Not ``PrivateCertificate.options()``: Twisted hands OpenSSL the
        pyOpenSSL ``X509`` and ``PKey`` wrappers, which pyOpenSSL has
        deprecated; the context here gets the cryptography objects.
        """
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate(x509.load_pem_x509_certificate(self.certificate_pem))
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        context.use_privatekey(key)
        context.check_privatekey()
        return _ServerTLS(context)


@implementer(IOpenSSLServerConnectionCreator)
@frozen
class _ServerTLS:
    """One server context, a connection from it per client; Twisted sets the
    accept state and the app data."""

    _context: SSL.Context

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        return SSL.Connection(self._context, None)


@frozen
class ServerFiles:
    """Where a server's key and certificate, and its CA's certificate, are.

    ``key.pem`` and ``cert.pem`` for Twisted's ``ssl:`` endpoint; ``ca.crt``,
    the name skopeo's ``--src-cert-dir`` and dockerd's ``certs.d/<host:port>/``
    look for, for clients that verify.
    """

    key: Path
    certificate: Path
    ca_certificate: Path


@frozen
class TestCA:
    """A root certificate and its key."""

    __test__ = False  # not a pytest test class, despite the name

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls, name: str = "mirrorproxy test CA") -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        not_before, not_after = _validity()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write_bundle(self, path: Path) -> Path:
        path.write_bytes(self.certificate_pem)
        return path

    def issue(self, names: list[str]) -> ServerIdentity:
        """A server certificate for DNS names and IP addresses (as strings)."""
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        not_before, not_after = _validity()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return ServerIdentity(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_server(self, directory: Path, names: tuple[str, ...] = ("localhost",)) -> ServerFiles:
        """A server certificate for ``names``, 127.0.0.1 and ::1 (where every
        test connects), written with its key and the CA's certificate into
        ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        identity = self.issue([*names, "127.0.0.1", "::1"])
        files = ServerFiles(directory / "key.pem", directory / "cert.pem", directory / "ca.crt")
        files.key.write_bytes(identity.key_pem)
        files.key.chmod(0o600)
        files.certificate.write_bytes(identity.certificate_pem)
        self.write_bundle(files.ca_certificate)
        return files
