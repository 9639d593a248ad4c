"""A real ``twistd -n mirrorproxy`` that cannot start says why in one line,
with a non-zero exit status: no traceback, no usage dump (that is --help's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from attrs import frozen

from .harness.mirror import twistd
from .harness.processes import child_env

pytestmark = pytest.mark.integration

# Each start here fails (or prints its usage) before the reactor runs.
TIMEOUT = 30


@frozen
class Exited:
    status: int
    stdout: str
    stderr: str


def run_twistd(tmp_path: Path, *argv: str, twistd_options: tuple[str, ...] = ("--pidfile=",)) -> Exited:
    done = subprocess.run(
        [twistd(), "-n", *twistd_options, "mirrorproxy", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=child_env(),
        cwd=tmp_path,
        check=False,
    )
    return Exited(done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--listen", "garbage"], "listen: bad endpoint 'garbage': Unknown endpoint type: 'garbage'"),
        (["--drain-timeout", "x"], "drain-timeout must be a number of seconds, not 'x'"),
        (["--bogus"], "option --bogus not recognized"),
    ],
)
def test_a_bad_option_is_one_line_on_stderr_and_status_2(tmp_path: Path, argv: list[str], line: str) -> None:
    exited = run_twistd(tmp_path, "--cache-dir", str(tmp_path / "cache"), *argv)

    assert exited == Exited(2, "", f"mirrorproxy: {line}\n")
    assert not (tmp_path / "cache").exists()


def test_help_still_shows_the_usage(tmp_path: Path) -> None:
    exited = run_twistd(tmp_path, "--help")

    assert (exited.status, exited.stderr) == (0, "")
    assert exited.stdout.startswith("Usage: twistd [options] mirrorproxy [--config FILE]")
    assert "--drain-timeout=" in exited.stdout
