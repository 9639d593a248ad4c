"""A real ``twistd -n mirrorproxy`` that cannot start says why in one line,
with a non-zero exit status: no traceback, no usage dump (that is --help's)."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
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


def log_text(line: str) -> str:
    """A text log line without its timestamp."""
    match = re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (.*)", line)
    assert match, f"not a log line: {line!r}"
    return match[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port of 127.0.0.1 another program listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_one_line_and_leaves_no_pid_file(tmp_path: Path, busy_port: int) -> None:
    pidfile = tmp_path / "mirror.pid"
    endpoint = f"tcp:{busy_port}:interface=127.0.0.1"

    exited = run_twistd(
        tmp_path,
        "--listen",
        endpoint,
        "--upstream",
        "http://127.0.0.1:1",
        "--cache-dir",
        str(tmp_path / "cache"),
        twistd_options=(f"--pidfile={pidfile}",),
    )

    assert (exited.status, exited.stderr) == (1, "")
    lines = exited.stdout.splitlines()
    assert log_text(lines[-1]) == f"[mirrorproxy.drain#critical] cannot listen on {endpoint}: address already in use"
    # The start-up lines before it are info; nothing else went wrong.
    assert [line for line in lines[:-1] if "#info]" not in line] == []
    assert not pidfile.exists()


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
