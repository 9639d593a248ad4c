"""Finding the external programs the integration tests need.

A developer without them gets a skip that says what to install; CI (where
``CI`` is set) gets a failure instead, so a missing package can never turn
the integration suite into a silent no-op.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    """The absolute path of ``name`` on PATH, or skip/fail naming ``package``."""
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} not found on PATH (install the Debian package {package!r})")
    return path


def require_root(what: str) -> None:
    """Skip/fail unless we are root: dockerd cannot run otherwise."""
    if os.geteuid() != 0:
        _missing(f"{what} needs root")
