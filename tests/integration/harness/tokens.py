"""A stand-in for Docker Hub's token service (auth.docker.io/token).

It owns the signing key and its self-signed certificate (which the upstream
registry trusts as ``auth.token.rootcertbundle``), the access policy
(anonymous: pull; the configured pusher: pull and push) and a record of every
token request, so that tests can assert how often a client asked.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from attrs import define, field, frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ISSUER = "mirrorproxy-test-issuer"
SERVICE = "registry.test"
PUSHER = ("pusher", "pushpass")
TOKEN_LIFETIME = 300


@frozen
class TokenRequest:
    """One request the issuer answered: who asked, and for which scopes."""

    username: str | None
    service: str | None
    scopes: tuple[str, ...]
    status: int


@frozen
class SigningIdentity:
    """An ES256 key and the self-signed certificate that vouches for it."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls) -> SigningIdentity:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            # The registry verifies the x5c chain against its root bundle, in
            # which this certificate is both root and leaf.
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def x5c(self) -> list[str]:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return [base64.b64encode(der).decode("ascii")]


def granted_actions(username: str | None, requested: Iterable[str]) -> list[str]:
    """The policy: anonymous may pull; the pusher may pull and push."""
    allowed = {"pull", "push"} if username == PUSHER[0] else {"pull"}
    return sorted(set(requested) & allowed)


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:NAME:pull,push`` -> (type, name, actions).

    The name is everything between the first and the last colon, as a
    registry host with a port may appear in it.
    """
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and name):
        return None
    return kind, name, [a for a in actions.split(",") if a]


@define(eq=False)
class TokenIssuer:
    """The token service as a thread in the test process, on 127.0.0.1."""

    identity: SigningIdentity = field(factory=SigningIdentity.generate)
    _requests: list[TokenRequest] = field(factory=list, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    @property
    def port(self) -> int:
        assert self._server is not None, "issuer not started"
        return self._server.server_address[1]

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def write_root_bundle(self, path: Path) -> Path:
        path.write_bytes(self.identity.certificate_pem())
        return path

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-issuer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def requests(self) -> list[TokenRequest]:
        """Every token request answered so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, username: str | None = None, scope: str | None = None) -> int:
        """How many token requests there were, optionally from one user or
        naming one scope (for example ``repository:library/x:pull``)."""
        return sum(
            1
            for r in self.requests()
            if (username is None or r.username == username) and (scope is None or scope in r.scopes)
        )

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def mint(self, username: str | None, service: str, scopes: Iterable[str]) -> str:
        """A signed token granting ``username`` what the policy allows."""
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            if kind == "repository":
                access.append(
                    {"type": kind, "name": name, "actions": granted_actions(username, actions)}
                )
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": username or "",
            "aud": service,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return jwt.encode(
            claims,
            self.identity.key,
            algorithm="ES256",
            headers={"x5c": self.identity.x5c()},
        )


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    username, _, password = decoded.partition(":")
    return username, password


def _handler_for(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            service = query.get("service", [None])[0]
            # Docker clients send one scope parameter per scope; some join
            # several with spaces in one parameter.
            scopes = tuple(s for value in query.get("scope", []) for s in value.split())
            credentials = _basic_credentials(self.headers.get("Authorization"))
            username = credentials[0] if credentials else None
            body: dict[str, object]
            if url.path != "/token":
                status, body = HTTPStatus.NOT_FOUND, {"details": "not found"}
            elif credentials is not None and credentials != PUSHER:
                status = HTTPStatus.UNAUTHORIZED
                body = {"details": "incorrect username or password"}
            else:
                token = issuer.mint(username, service or SERVICE, scopes)
                status = HTTPStatus.OK
                body = {
                    "token": token,
                    "access_token": token,
                    "expires_in": TOKEN_LIFETIME,
                    "issued_at": datetime.datetime.now(datetime.UTC).isoformat(),
                }
            issuer._record(TokenRequest(username, service, scopes, int(status)))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the record in ``issuer.requests()`` is the log."""

    return Handler
