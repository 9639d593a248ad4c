"""`twistd mirrorproxy`'s command line: a bad option is one line on stderr
and exit status 2, never twistd's usage dump or a traceback; --help still
shows the usage."""

from __future__ import annotations

import pytest
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions

from mirrorproxy.server.tap import Options


def twistd_exit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Parse ``twistd -n --pidfile= mirrorproxy ARGV`` as twistd does; its
    exit status, stdout and stderr."""
    with pytest.raises(SystemExit) as exited:
        ServerOptions().parseOptions(["-n", "--pidfile=", "mirrorproxy", *argv])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--bogus"], "option --bogus not recognized"),
        (["stray"], "Wrong number of arguments."),
        (["--drain-timeout", "x"], "drain-timeout must be a number of seconds, not 'x'"),
        (["--tag-ttl", "soon"], "tag-ttl must be a number of seconds, not 'soon'"),
        (["--listen", "garbage"], "listen: bad endpoint 'garbage': Unknown endpoint type: 'garbage'"),
        (
            ["--listen", "tcp:5000", "--listen", "tcp:http"],
            "listen: bad endpoint 'tcp:http': invalid literal for int() with base 10: 'http'",
        ),
        (
            ["--metrics-listen", "ssl:9443:privateKey=/nonexistent/key.pem"],
            "metrics-listen: bad endpoint 'ssl:9443:privateKey=/nonexistent/key.pem': "
            "[Errno 2] No such file or directory: '/nonexistent/key.pem'",
        ),
        (["--log-format", "xml"], "log-format must be text, json or journal, not 'xml'"),
        (["--log-level", "loud"], "log-level must be debug, info, warn, error or critical, not 'loud'"),
        (
            ["--allow", "10.0.0.0/33"],
            "--allow '10.0.0.0/33': '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network",
        ),
    ],
)
def test_a_bad_option_is_one_line_and_status_2(capsys, argv, line):
    assert twistd_exit(capsys, *argv) == (2, "", f"mirrorproxy: {line}\n")


def test_a_bad_value_in_the_config_file_is_one_line_too(capsys, tmp_path):
    config = tmp_path / "mirrorproxy.toml"
    config.write_text('listen = ["tcp:5000", "nonsense"]\n')

    assert twistd_exit(capsys, "--config", str(config)) == (
        2,
        "",
        "mirrorproxy: listen: bad endpoint 'nonsense': Unknown endpoint type: 'nonsense'\n",
    )


def test_json_logs_from_a_daemon_would_be_lost_so_that_is_an_error_too(capsys):
    with pytest.raises(SystemExit) as exited:
        ServerOptions().parseOptions(["--pidfile=", "mirrorproxy", "--log-format", "json"])

    assert (exited.value.code, *capsys.readouterr()) == (
        2,
        "",
        "mirrorproxy: log-format json writes to stdout: run twistd with --nodaemon (-n)\n",
    )


def test_help_shows_the_usage_and_exits_0(capsys):
    status, out, err = twistd_exit(capsys, "--help")

    assert (status, err) == (0, "")
    assert out.startswith("Usage: twistd [options] mirrorproxy [--config FILE] [--listen ENDPOINT]...")
    assert "--drain-timeout=" in out and "--listen=" in out and "--log-format=" in out


def test_numbers_on_the_command_line_arrive_as_numbers():
    options = Options()
    options.parseOptions(["--drain-timeout", "2.5", "--tag-ttl", "60"])

    assert (options["settings"].drain_timeout, options["settings"].tag_ttl) == (2.5, 60)


def test_on_its_own_a_bad_option_raises_a_usage_error():
    # A .tac file or a test parses the options itself, and decides.
    with pytest.raises(usage.UsageError, match="^drain-timeout must be a number of seconds, not 'x'$"):
        Options().parseOptions(["--drain-timeout", "x"])
