"""A real ``twistd -n mirrorproxy``: when it cannot start it says why in one
line, with a non-zero exit status (no traceback, no usage dump: that is
--help's); when it runs, its logs are in the format asked for, without
Twisted's factory noise or debug events unless asked."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from attrs import frozen

from .conftest import show_log_on_failure
from .harness.fetching import Received, fetch
from .harness.mirror import START_TIMEOUT, Mirror, twistd
from .harness.oci import MiB
from .harness.processes import Process, child_env, free_port
from .harness.publish import Publisher
from .harness.registry import UpstreamRegistry

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
    assert log_text(lines[-1]) == f"[mirrorproxy.server.drain#critical] cannot listen on {endpoint}: address already in use"
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


@pytest.fixture
def run_mirror(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Mirror]]:
    """``run_mirror(upstream_url, *options, twistd_options=...)``: a running
    mirror whose stdout (the log) and stderr go to their own files."""
    started: list[Mirror] = []

    def start(upstream_url: str, *options: str, twistd_options: tuple[str, ...] = ()) -> Mirror:
        run = tmp_path / f"run-{len(started)}"
        run.mkdir()
        show_log_on_failure(request, f"mirror #{len(started)} stdout", run / "stdout")
        show_log_on_failure(request, f"mirror #{len(started)} stderr", run / "stderr")
        port = free_port()
        argv = [
            twistd(), "-n", "--pidfile=", *twistd_options, "mirrorproxy",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--upstream", upstream_url,
            "--cache-dir", str(run / "cache"),
            *options,
        ]  # fmt: skip
        process = Process.start(
            "mirror", argv, run / "stderr", env=child_env(), cwd=run, stdout_path=run / "stdout"
        )
        mirror = Mirror(process, port, run / "cache")
        started.append(mirror)
        process.wait_until(mirror._answers, START_TIMEOUT, f"an answer from {mirror.url}/v2/")
        return mirror

    yield start
    for mirror in started:
        mirror.process.stop()


def stdout_of(mirror: Mirror) -> Path:
    return mirror.process.log_path.parent / "stdout"


def stopped(mirror: Mirror) -> tuple[list[str], str]:
    """Stop the mirror; its stdout lines and its stderr."""
    mirror.stop()
    return stdout_of(mirror).read_text().splitlines(), mirror.process.log_path.read_text()


@pytest.mark.parametrize("level_options", [(), ("--log-level", "debug")])
def test_text_logs_leave_out_factory_noise_and_debug_unless_asked(
    publisher: Publisher,
    upstream: UpstreamRegistry,
    unique: Callable[[str], str],
    run_mirror: Callable[..., Mirror],
    level_options: tuple[str, ...],
) -> None:
    # A cold blob: a token fetch (a debug event) and upstream connections
    # (a client factory started and stopped for each).
    blob = publisher.blob(f"org/{unique('logs')}", 1 * MiB)
    mirror = run_mirror(upstream.url, *level_options)

    assert fetch(mirror, blob.path) == Received(200, len(blob.data), blob.digest)
    # The client may have every byte a moment before the fill is checked.
    cached = f"[mirrorproxy.cache.fill#info] cached blob {blob.digest} ({len(blob.data)} bytes)"
    mirror.process.wait_until(lambda: cached in stdout_of(mirror).read_text(), 10, "the fill's end")
    lines, stderr = stopped(mirror)

    texts = [log_text(line) for line in lines]
    assert stderr == ""
    assert [t for t in texts if "Starting factory" in t or "Stopping factory" in t] == []
    debug = [t for t in texts if "#debug]" in t]
    if level_options:
        assert any(t.startswith("[mirrorproxy.upstream.auth#debug] new upstream token for ") for t in debug), texts
    else:
        assert debug == []


def test_json_logs_are_one_object_a_line_on_stdout(tmp_path: Path, run_mirror: Callable[..., Mirror]) -> None:
    # Nothing listens upstream: the test needs the mirror's logs, not a pull.
    mirror = run_mirror(f"http://127.0.0.1:{free_port()}", "--log-format", "json")
    status, _, _ = mirror.get("/v2/library/alpine/manifests/latest")
    assert status == 502
    lines, stderr = stopped(mirror)

    entries = [json.loads(line) for line in lines]
    assert stderr == ""
    assert all(set(e) >= {"time", "level", "namespace", "text"} for e in entries)
    [access] = [
        e
        for e in entries
        if e["namespace"] == "mirrorproxy.access" and e["path"] == "/v2/library/alpine/manifests/latest"
    ]
    assert (access["status"], access["repository"], access["reference"]) == (502, "library/alpine", "latest")
    assert [e for e in entries if e["level"] not in ("info", "warn")] == []
    assert [e["text"] for e in entries if "factory" in e["text"]] == []


def test_twistds_logger_option_still_wins(run_mirror: Callable[..., Mirror]) -> None:
    # What units written before --log-format say.
    mirror = run_mirror(
        f"http://127.0.0.1:{free_port()}",
        "--log-format",
        "json",
        twistd_options=("--logger=mirrorproxy.journal.observer",),
    )
    lines, stderr = stopped(mirror)

    assert stderr == ""
    assert lines and all(re.fullmatch(r"<[0-7]>\{.*\}", line) for line in lines), lines
    assert any(json.loads(line[3:])["namespace"] == "mirrorproxy.server.service" for line in lines)
