"""The TOML configuration file: everything the command line says, plus secrets.

Keys are the command-line option names (``cache-dir``, ``tag-ttl``, ...);
upstream credentials live in an ``[upstream-credentials]`` table and
timeouts in ``[timeouts]``.  Unknown keys and values of the wrong type are
errors at start, named by their key.  A file that holds a secret must not be
readable by everyone: the mirror refuses to start rather than run with a
leaked password.
"""

from __future__ import annotations

import os
import stat
import tomllib
from typing import Any, Callable

from .config import ConfigError

# key -> (type check, what the operator should have written)
_Check = Callable[[Any], bool]


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(i, str) for i in v)


TOP_LEVEL: dict[str, tuple[_Check, str]] = {
    "listen": (_is_str_list, "a list of endpoint strings"),
    "upstream": (_is_str, "a URL"),
    "cache-dir": (_is_str, "a directory path"),
    "tag-ttl": (_is_number, "a number of seconds"),
    "upstream-proxy": (_is_str, "a proxy URL"),
    "upstream-ca": (_is_str, "a PEM file path"),
    "upstream-insecure": (_is_bool, "true or false"),
    "htpasswd": (_is_str, "an htpasswd file path"),
    "allow": (_is_str_list, "a list of CIDR networks"),
}
TABLES: dict[str, dict[str, tuple[_Check, str]]] = {
    "upstream-credentials": {
        "username": (_is_str, "a user name"),
        "password": (_is_str, "a password"),
    },
    "timeouts": {
        "connect": (_is_number, "a number of seconds"),
        "headers": (_is_number, "a number of seconds"),
        "body-silence": (_is_number, "a number of seconds"),
    },
}
SECRET_TABLES = frozenset({"upstream-credentials"})


def read_config(path: str) -> dict[str, Any]:
    """The file's settings, checked; ConfigError says what is wrong where."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for key, value in document.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            for inner, inner_value in value.items():
                _check(path, f"{key}.{inner}", TABLES[key].get(inner), inner_value)
        else:
            _check(path, key, TOP_LEVEL.get(key), value)
    if _holds_secret(document) and mode & stat.S_IROTH:
        raise ConfigError(
            f"config file {path} holds credentials and is readable by everyone; "
            f"chmod o-r {path}"
        )
    return document


def _check(path: str, key: str, rule: tuple[_Check, str] | None, value: Any) -> None:
    if rule is None:
        raise ConfigError(f"{path}: unknown setting {key!r}")
    check, expected = rule
    if not check(value):
        raise ConfigError(f"{path}: {key} must be {expected}, not {value!r}")


def _holds_secret(document: dict[str, Any]) -> bool:
    if any(table in document for table in SECRET_TABLES):
        return True
    proxy = document.get("upstream-proxy", "")
    # user:password@ in a proxy URL is a secret too.
    return "@" in proxy.partition("://")[2].partition("/")[0]
