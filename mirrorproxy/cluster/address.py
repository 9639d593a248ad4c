"""Where the coordinating Redis is: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``
(``rediss://`` for TLS), checked with an error an operator can act on."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from attrs import field, frozen

from ..common.errors import ConfigError

DEFAULT_PORT = 6379
SCHEMES = ("redis", "rediss")


class BadRedisURL(ConfigError):
    """A Redis URL that does not say where Redis is."""


@frozen
class RedisAddress:
    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    tls: bool = False
    username: str | None = None
    # Kept out of repr, so an address can be logged as it is.
    password: str | None = field(default=None, repr=False)

    def display(self) -> str:
        """The URL without its credentials, for logs and /readyz."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{host}:{self.port}/{self.db}"


def parse_redis_url(text: str) -> RedisAddress:
    """The address `text` names, or BadRedisURL saying what is wrong."""
    shown = _without_password(text)
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as e:
        raise BadRedisURL(f"bad Redis URL {shown!r}: {e}") from None
    if parts.scheme not in SCHEMES:
        raise BadRedisURL(
            f"bad Redis URL {shown!r}: the scheme must be redis:// or rediss://"
        )
    if not parts.hostname:
        raise BadRedisURL(f"bad Redis URL {shown!r}: no host")
    if port == 0:
        raise BadRedisURL(f"bad Redis URL {shown!r}: port 0 names no server")
    if parts.query or parts.fragment:
        raise BadRedisURL(f"bad Redis URL {shown!r}: options after ? or # are not supported")
    return RedisAddress(
        host=parts.hostname,
        port=DEFAULT_PORT if port is None else port,
        db=_database(parts.path, shown),
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _database(path: str, shown: str) -> int:
    number = path.strip("/")
    if not number:
        return 0
    if not number.isdigit() or not number.isascii():
        raise BadRedisURL(
            f"bad Redis URL {shown!r}: the path must be a database number, not {path!r}"
        )
    return int(number)


def _without_password(text: str) -> str:
    """`text` with the password in its userinfo replaced, for messages."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{path}"
