"""Running the admin command in-process, as a user would type it."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from mirrorproxy.admin.cli import main


def invoke(*args: str) -> Result:
    """``mirrorproxy ARGS...``; exceptions other than exits fail the test."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def invoke_json(*args: str) -> Any:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
