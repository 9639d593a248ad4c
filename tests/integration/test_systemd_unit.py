"""contrib/systemd/mirrorproxy.service: systemd accepts it without a warning,
its sandbox scores as well as we claim, and the log format its ExecStart
names writes the journal one JSON object a line with the right priority."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import show_log_on_failure
from .harness.client import request as http_request
from .harness.mirror import twistd
from .harness.processes import Process, child_env, free_port
from .harness.tools import require_tool

pytestmark = pytest.mark.integration

UNIT = Path(__file__).parents[2] / "contrib" / "systemd" / "mirrorproxy.service"
INSTALLED_TWISTD = "/opt/mirrorproxy/bin/twistd"
# systemd-analyze security's exposure, times ten: 1.4 when this was written;
# anything above 2.0 means a hardening line went missing.
MAX_EXPOSURE = 20


def exec_start(unit_text: str) -> list[str]:
    (line,) = re.findall(r"^ExecStart=(.*)$", unit_text, re.MULTILINE)
    return shlex.split(line)


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    """The unit as it would be installed, except that ExecStart runs this
    test's twistd: systemd-analyze insists the program exists."""
    text = UNIT.read_text()
    assert exec_start(text)[0] == INSTALLED_TWISTD
    copy = tmp_path / "mirrorproxy.service"
    copy.write_text(text.replace(INSTALLED_TWISTD, twistd()))
    return copy


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("systemd-analyze", "systemd")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_systemd_analyze_verify_finds_nothing_to_say(unit_here: Path) -> None:
    done = systemd_analyze("verify", "--man=no", "--generators=no", str(unit_here))

    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_sandbox_exposure_stays_low(unit_here: Path) -> None:
    done = systemd_analyze(
        "security", "--offline=true", f"--threshold={MAX_EXPOSURE}", str(unit_here)
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Overall exposure level for mirrorproxy.service" in done.stdout


def test_exec_start_runs_twistd_in_the_foreground_with_the_journal_log_format() -> None:
    argv = exec_start(UNIT.read_text())

    program, subcommand = argv[: argv.index("mirrorproxy")], argv[argv.index("mirrorproxy") :]
    assert program == [INSTALLED_TWISTD, "--nodaemon", "--pidfile="]
    assert subcommand == ["mirrorproxy", "--log-format", "journal", "--config", "%d/mirrorproxy.toml"]
    assert "LoadCredential=mirrorproxy.toml:/etc/mirrorproxy/mirrorproxy.toml" in UNIT.read_text()


@pytest.fixture
def journal_mirror(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Process, int]]:
    """twistd with the unit's own options but its config file; stdout is what
    journald reads."""
    argv = exec_start(UNIT.read_text())
    twistd_options = argv[1 : argv.index("mirrorproxy")]
    mirrorproxy_options = argv[argv.index("mirrorproxy") + 1 : argv.index("--config")]
    port = free_port()
    stdout = tmp_path / "stdout"
    show_log_on_failure(request, "mirror stdout", stdout)
    process = Process.start(
        "mirror",
        [
            twistd(),
            *twistd_options,
            "mirrorproxy",
            *mirrorproxy_options,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--upstream",
            # Nothing listens there: the test needs the mirror's logs, not a pull.
            f"http://127.0.0.1:{free_port()}",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        tmp_path / "stderr",
        env=child_env(),
        cwd=tmp_path,
        stdout_path=stdout,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return http_request(f"{url}/v2/", timeout=2).status == 200
        except OSError:
            return False

    try:
        process.wait_until(answers, 30, f"200 from {url}/v2/")
        yield process, port
    finally:
        process.stop()


def journal_entries(path: Path) -> list[tuple[int, dict[str, object]]]:
    entries = []
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"<([0-7])>(\{.*\})", line)
        assert match, f"not a journal line: {line!r}"
        entries.append((int(match[1]), json.loads(match[2])))
    return entries


def test_the_journal_logger_writes_one_json_object_a_line(
    journal_mirror: tuple[Process, int], tmp_path: Path
) -> None:
    process, port = journal_mirror
    base = f"http://127.0.0.1:{port}"
    assert http_request(f"{base}/v2/library/alpine/manifests/latest").status == 502
    process.stop()

    entries = journal_entries(tmp_path / "stdout")
    assert (tmp_path / "stderr").read_text() == ""
    started = [e for p, e in entries if e["namespace"] == "mirrorproxy.server.service"]
    assert started and started[0]["upstream"].startswith("http://127.0.0.1:")
    # The access log's named fields arrive as JSON fields, not only as text.
    (access,) = [
        e
        for p, e in entries
        if e["namespace"] == "mirrorproxy.access"
        and e.get("path") == "/v2/library/alpine/manifests/latest"
    ]
    assert (access["status"], access["repository"], access["reference"]) == (
        502,
        "library/alpine",
        "latest",
    )
    # The upstream outage is a warning: journalctl -p warning shows it.
    warnings = [e for p, e in entries if p <= 4]
    assert any("UNAVAILABLE" in str(e["text"]) for e in warnings), warnings
