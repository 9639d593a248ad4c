"""The checks a config file's values get: what TOML type each key needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# key -> (type check, what the operator should have written)
Check = Callable[[Any], bool]


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_number(v: Any) -> bool:
    # TOML's booleans are not numbers, whatever Python thinks.
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(i, str) for i in v)
