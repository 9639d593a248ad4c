"""``mirrorproxy`` itself: what it says before any subcommand runs."""

from __future__ import annotations

from importlib.metadata import version

from .clirunner import invoke


def test_version_is_the_installed_packages() -> None:
    result = invoke("--version")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"mirrorproxy {version('mirrorproxy')}\n"
