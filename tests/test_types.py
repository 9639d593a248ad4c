"""The product's types check: mypy --strict (with mypy-zope for the
interfaces), as setup.cfg configures it, is part of the test run."""

from __future__ import annotations

import os
from pathlib import Path

from mypy import api


def test_mypy_finds_nothing() -> None:
    os.chdir(Path(__file__).parents[1])
    out, err, status = api.run(["--config-file", "setup.cfg", "--no-error-summary"])
    assert status == 0, out + err
