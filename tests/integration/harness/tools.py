"""Finding the external programs the integration tests need.

A developer without them gets a skip that says what to install; CI (where
``CI`` is set) gets a failure instead, so a missing package can never turn
the integration suite into a silent no-op.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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


def require_mount(what: str) -> None:
    """Skip/fail unless this process may mount a tmpfs: ``what`` needs a
    real filesystem of its own (a small one, to fill; a read-only one)."""
    require_root(what)
    mount = require_tool("mount", "mount")
    probe = tempfile.mkdtemp(prefix="mount-probe-")
    try:
        tried = subprocess.run(
            [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe],
            capture_output=True,
            text=True,
            check=False,
        )
        if tried.returncode != 0:
            why = (tried.stderr.strip().splitlines() or [f"exit status {tried.returncode}"])[0]
            _missing(f"{what} needs to mount a tmpfs: {why}")
        subprocess.run(["umount", probe], check=True)
    finally:
        os.rmdir(probe)
