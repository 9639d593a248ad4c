"""What `pip install .` (the README's first command) installs: every module
of the package and the twistd plugin, nothing of the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_module_and_the_plugin(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ and egg-info behind.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "*-cache", "__pycache__", ".pytest_cache")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True, timeout=300, capture_output=True,
    )
    (wheel,) = tmp_path.glob("mirrorproxy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "mirrorproxy").rglob("*.py")}
    expected.add("twisted/plugins/mirrorproxy_plugin.py")
    assert expected - names == set()
    assert not any(n.startswith(("tests/", "benchmarks/", "twisted/plugins/__init__")) for n in names)
